"""A DPDD-style tree rendered from real photographs, for `configs/dpdd.py` without the DPDD download.

    python experiments/render_dpdd_tree.py --out /data/dpdd_rendered                  # bundled photos
    python experiments/render_dpdd_tree.py --out /data/dpdd_rendered --photos ~/Pictures/sharp
    bambnet train --config configs/dpdd.py --workdir workdirs/rendered \\
        data.manual_dir=/data/dpdd_rendered data.data_dir=/data/tfds_rendered

Each scene is `synthetic.render_sample` with a photo as texture, through a PSF family unlike SPEC
section 3's: a disk with a bright rim, blurred in linear light and re-encoded as sRGB, with
complementary L/R vignetting and Poisson-Gaussian noise. The files are 16-bit PNGs in DPDD's
folders and names (`tfds_dpd/dpdd/layout.py`), so the dpdd builder prepares them as the download.

Photos are split, not scenes: the test scenes come from photos no training or validation scene
shows (the validation scenes, the threshold search's meta set, share the training photos, as a
held-out crop does). The split is drawn per kind, colour and grey, so both kinds are in each side.
Sources, without a network: `--photos DIR` (the user's own), else the natural photographs shipped
inside the scikit-image wheel (`requirements-dev.txt`; the ones pooch would fetch are not used) and
scikit-learn's two sample JPEGs where it is installed. They are read from the installed packages'
folders, not through `skimage.data` (which would try to download a missing file).

Defaults, and why:
- 512x512: the smallest frame `dpdd/patches` can cut (its 512 px patches), and the bundled photos
  are 300-640 px: a larger frame would upscale them and soften the sharp target. Photos larger than
  twice the frame are first shrunk (INTER_AREA), so a crop shows a scene, not a few leaves of one.
- 1,000 / 100 / 100 scenes: ~0.3 s each on one core, ~25 s on 16 cores, ~6 GB of PNGs (noisy
  16-bit pixels barely compress); preparing both dpdd configs reads them at ~11 scenes/s on one
  core. A six-minute GPU run's deblurring stage (6,500 steps at batch 2) sees each frame ~13
  times; each frame is a new crop, scale, turn, depth layout and noise draw of its photo, so the
  variety is bounded by the photos, not by the scene count. 100 test frames score in seconds on a GPU.
- |COC| <= 12 px: most of DPDD's blur is small (BaMBNet's thresholds are 1.9, 4.2 and 6.2 px).
- rim strength 1; per scene uniform in [0, max]: vignetting 0.3 (a DP view of a Canon loses
  ~15-30% towards one edge), read noise std 0.002 and shot gain 5e-4 (linear light, 1 = white;
  a half-pixel view at ISO ~1600 of a full-frame sensor: ~3 DN in 8-bit sRGB at mid-grey).
- A photo enters a training or validation scene in one of its 8 flips / quarter turns, a test scene
  upright (mirrored or not), at a random scale between the frame just fitting and 1: edge directions
  and texture scales the few photos lack, and test scenes that still look like photographs.
"""

import argparse
import concurrent.futures
import dataclasses
import functools
import importlib.util
import json
import multiprocessing
import os
import pathlib
import re
import shutil
import time

import cv2
import numpy as np

from bambnet_jax.data import patches as patches_lib
from bambnet_jax.data import records
from bambnet_jax.data import synthetic
from bambnet_jax.io import files
from bambnet_jax.io import images
from tfds_dpd.dpdd import layout

# Natural photographs in the scikit-image 0.26 wheel. Left out: drawings and charts (chessboard,
# color, logo, horse, phantom, page, text), clock_motion (motion-blurred), motorcycle_right (the
# left's stereo partner: one scene that could land on both sides of the split), and microscopy /
# astronomy frames that are mostly flat black (cell, ihc, microaneurysms, retina, hubble).
SKIMAGE_PHOTOS = ("astronaut.png", "brick.png", "camera.png", "chelsea.png", "coffee.png", "coins.png",
                  "grass.png", "gravel.png", "moon.png", "motorcycle_left.png", "rocket.jpg")
SKLEARN_PHOTOS = ("china.jpg", "flower.jpg")  # what `sklearn.datasets.load_sample_images` reads
MANIFEST = "render.json"
SPLITS = ("train", "validation", "test")


@dataclasses.dataclass(frozen=True)
class Photo:
  name: str  # source/stem, e.g. "skimage/coffee"
  path: str
  grey: bool
  shape: tuple


def _package_folder(package, *parts):
  """A folder inside an installed package, found without importing it; None if not installed."""
  spec = importlib.util.find_spec(package)
  if spec is None or not spec.submodule_search_locations:
    return None
  return pathlib.Path(list(spec.submodule_search_locations)[0], *parts)


def _describe(name, path):
  pixels = images.read_image(path)
  grey = pixels.shape[2] == 1 or bool(np.all(pixels == pixels[:, :, :1]))
  return Photo(name, str(path), grey, tuple(pixels.shape[:2]))


def bundled_photos():
  """The bundled natural photos that are really on disk (a trimmed install may lack some)."""
  found = []
  for package, folder, names in (("skimage", ("data",), SKIMAGE_PHOTOS),
                                 ("sklearn", ("datasets", "images"), SKLEARN_PHOTOS)):
    root = _package_folder(package, *folder)
    for file_name in names if root else ():
      if (root / file_name).is_file():
        found.append(_describe(f"{package}/{pathlib.Path(file_name).stem}", root / file_name))
  return found


def folder_photos(folder):
  """Every image directly in `folder` (sorted), as `photos/<stem>`."""
  return [_describe(f"photos/{p.stem}", p) for p in images.image_paths(folder, "photos")]


def split_photos(photos, test_fraction, seed):
  """(train_photos, test_photos): per kind (colour, grey) round(fraction * n) photos held out,
  at least one of a kind with two or more, and never all of a kind."""
  if len(photos) < 2:
    raise ValueError(f"need at least 2 photos to keep the test photos out of training, got {len(photos)}")
  rng = np.random.default_rng([seed, 7])
  train, test = [], []
  for grey in (False, True):
    kind = sorted((p for p in photos if p.grey == grey), key=lambda p: p.name)
    held = min(max(int(round(test_fraction * len(kind))), 1 if len(kind) >= 2 else 0), max(len(kind) - 1, 0))
    order = rng.permutation(len(kind))
    test += [kind[i] for i in sorted(order[:held])]
    train += [kind[i] for i in sorted(order[held:])]
  if not test:  # one photo of each kind: hold out one of them
    test.append(train.pop(rng.integers(len(train))))
  return train, test


def scene_jobs(split_photos_by_split, counts, seed):
  """One job per scene: (split, index, name, render seed, photo); photos taken in turn."""
  jobs = []
  for split in SPLITS:
    photos = split_photos_by_split[split]
    order = np.random.default_rng([seed, SPLITS.index(split), 11]).permutation(len(photos))
    for index in range(counts[split]):
      photo = photos[order[index % len(photos)]]
      name = f"{index:05d}_{re.sub(r'[^A-Za-z0-9]+', '-', photo.name)}"
      jobs.append((split, index, name, records.scene_seed(seed, split, index), photo))
  return jobs


@functools.lru_cache(maxsize=4)  # jobs arrive grouped by photo: one decode per photo and worker
def _load_photo(path, max_short_side):
  pixels = images.to_rgb(images.read_image(path))
  scale = max_short_side / min(pixels.shape[:2])
  if scale < 1:
    size = (round(pixels.shape[1] * scale), round(pixels.shape[0] * scale))
    pixels = cv2.resize(pixels, size, interpolation=cv2.INTER_AREA)
  return images.to_float(pixels)


def _augment(rng, photo, height, width, upright):
  """The photo mirrored or not, turned (unless `upright`) by a random quarter, at a random scale in
  [just covering the frame, 1]."""
  turns = rng.integers(4)  # drawn either way: one random stream layout for every split
  photo = photo if upright else np.rot90(photo, turns)
  photo = photo[:, ::-1] if rng.random() < 0.5 else photo
  smallest = max(height / photo.shape[0], width / photo.shape[1])
  if smallest < 1:
    scale = float(np.exp(rng.uniform(np.log(smallest), 0.0)))
    size = (max(round(photo.shape[1] * scale), width), max(round(photo.shape[0] * scale), height))
    photo = cv2.resize(np.ascontiguousarray(photo), size, interpolation=cv2.INTER_AREA)
  return np.ascontiguousarray(photo)


def scene_paths(root, split, name):
  """{view: path} of one scene in DPDD's folders and names (NAME.png, NAME_L.png, NAME_R.png)."""
  prefix = layout.SPLIT_PREFIXES[split]
  file_names = {"combined": f"{name}.png", "sharp": f"{name}.png", "left": f"{name}_L.png",
                "right": f"{name}_R.png"}
  return {view: pathlib.Path(root) / pattern.format(prefix=prefix) / file_names[view]
          for view, pattern in layout.VIEW_FOLDERS.items()}


def render_job(job, root, scene_config):
  """Renders one scene and writes its four 16-bit PNGs, each atomically; returns the job's name."""
  split, _, name, seed, photo = job
  frame = max(scene_config.height, scene_config.width)
  # Test scenes stay upright, as photographs are; training sees every direction of edge.
  texture = _augment(np.random.default_rng([seed, 1]), _load_photo(photo.path, 2 * frame),
                     scene_config.height, scene_config.width, upright=split == "test")
  sample = synthetic.render_sample(seed, scene_config, sharp_image=texture)
  for view, path in scene_paths(root, split, name).items():
    images.write_png(path, images.from_float(sample[view], 16))  # RGB in, BGR on disk
  return name


def _init_worker():
  cv2.setNumThreads(1)  # one process per core already


def render_all(jobs, root, scene_config, workers):
  """Renders every job, in `workers` spawned processes (0: here); prints progress."""
  jobs = sorted(jobs, key=lambda job: (job[4].name, job[0], job[1]))  # grouped by photo: see _load_photo
  render = functools.partial(render_job, root=root, scene_config=scene_config)
  start, done = time.monotonic(), 0
  if workers <= 0:
    results = map(render, jobs)
    pool = None
  else:
    # Spawned, not forked: the parent may hold threads (OpenCV's, a GPU runtime's) a fork would copy.
    pool = concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                                  initializer=_init_worker)
    results = pool.map(render, jobs, chunksize=max(1, min(16, len(jobs) // (4 * workers))))
  try:
    for _ in results:
      done += 1
      if done % 100 == 0 or done == len(jobs):
        print(f"  {done}/{len(jobs)} scenes, {time.monotonic() - start:.0f} s", flush=True)
  finally:
    if pool is not None:
      pool.shutdown(cancel_futures=True)
  return time.monotonic() - start


def _clear_previous(root, overwrite):
  """Removes a previous render's split folders; refuses to touch a tree this script did not write."""
  folders = [root / f"{prefix}_{side}" for prefix in layout.SPLIT_PREFIXES.values() for side in "clr"]
  if not any(f.exists() for f in folders):
    return
  if not (root / MANIFEST).is_file():
    raise SystemExit(f"{root} holds DPDD split folders but no {MANIFEST}: not a tree rendered here; "
                     "choose another --out")
  if not overwrite:
    raise SystemExit(f"{root} already holds a rendered tree: pass --overwrite to replace it")
  for folder in folders:
    shutil.rmtree(folder, ignore_errors=True)


def parse_size(text):
  match = re.fullmatch(r"(\d+)x(\d+)", text)
  if not match:
    raise argparse.ArgumentTypeError(f"size must be HxW, e.g. 512x512, got {text!r}")
  height, width = int(match[1]), int(match[2])
  if height > width:
    # The builder turns portrait images to landscape, which would make the DP disparity vertical.
    raise argparse.ArgumentTypeError(f"size must be landscape or square (H <= W), got {text}")
  return height, width


def parser():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--out", required=True, help="root of the DPDD-style tree (data.manual_dir)")
  p.add_argument("--photos", help="folder of sharp photos (default: the bundled sample photos)")
  p.add_argument("--with-bundled", action="store_true", help="with --photos: add the bundled photos")
  p.add_argument("--train", type=int, default=1000, help="training scenes")
  p.add_argument("--validation", type=int, default=100, help="validation scenes (the search's meta set)")
  p.add_argument("--test", type=int, default=100, help="test scenes, from the held-out photos")
  p.add_argument("--test-fraction", type=float, default=0.25, help="share of the photos held out for test")
  p.add_argument("--size", type=parse_size, default=(512, 512), help="HxW of every scene")
  p.add_argument("--max-coc", type=float, default=12.0, help="bound on |signed COC|, px")
  p.add_argument("--rim-strength", type=float, default=1.0, help="PSF rim height relative to the disk")
  p.add_argument("--vignetting", type=float, default=0.3, help="max complementary L/R fall-off")
  p.add_argument("--read-noise", type=float, default=0.002, help="max read-noise std (linear)")
  p.add_argument("--shot-noise", type=float, default=5e-4, help="max shot-noise gain (linear)")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="render processes (0: this one)")
  p.add_argument("--overwrite", action="store_true", help="replace a tree rendered here before")
  return p


def main(argv=None):
  args = parser().parse_args(argv)
  counts = {"train": args.train, "validation": args.validation, "test": args.test}
  if min(counts.values()) < 1:
    raise SystemExit(f"every split needs at least one scene, got {counts}")
  root = pathlib.Path(args.out).expanduser().resolve()
  try:
    photos = folder_photos(args.photos) if args.photos else []
    if not args.photos or args.with_bundled:
      photos += bundled_photos()
    if not photos:
      raise ValueError("no photos: scikit-image is not installed here (pip install -r requirements-dev.txt) "
                       "and no --photos folder was given")
    train_photos, test_photos = split_photos(photos, args.test_fraction, args.seed)
  except ValueError as e:  # ImageError included: the message names the file
    raise SystemExit(f"error: {e}") from e
  height, width = args.size
  scene_config = synthetic.SceneConfig(
      height=height, width=width, max_coc=args.max_coc, psf="rim", rim_strength=args.rim_strength,
      vignetting=args.vignetting, read_noise=args.read_noise, shot_noise=args.shot_noise, gamma=True)
  _clear_previous(root, args.overwrite)
  jobs = scene_jobs({"train": train_photos, "validation": train_photos, "test": test_photos}, counts, args.seed)
  scenes = {split: [] for split in SPLITS}
  for split, _, name, _, photo in jobs:
    scenes[split].append({"name": name, "photo": photo.name})
  manifest = {
      "complete": False,
      "arguments": {k: v for k, v in vars(args).items() if k not in ("out", "workers", "overwrite")},
      "scene_config": dataclasses.asdict(scene_config),
      "photos": {"train": [dataclasses.asdict(p) for p in train_photos],
                 "test": [dataclasses.asdict(p) for p in test_photos]},
      "scenes": scenes,
  }
  write_manifest = lambda: files.atomic_write_bytes(root / MANIFEST, (json.dumps(manifest, indent=1) + "\n").encode())
  write_manifest()  # first: an interrupted render is still recognised as ours by --overwrite
  workers = min(args.workers, len(jobs))
  print(f"Rendering {len(jobs)} scenes of {height}x{width} into {root} ({workers or 'no'} worker processes)",
        flush=True)
  seconds = render_all(jobs, root, scene_config, workers)
  manifest["complete"] = True
  write_manifest()

  describe = lambda ps: ", ".join(f"{p.name} ({p.shape[0]}x{p.shape[1]}{', grey' if p.grey else ''})" for p in ps)
  print(f"Done in {seconds:.0f} s: {counts['train']} train / {counts['validation']} validation / "
        f"{counts['test']} test scenes; photo split in {root / MANIFEST}")
  print(f"  train + validation photos ({len(train_photos)}): {describe(train_photos)}")
  print(f"  test photos ({len(test_photos)}): {describe(test_photos)}")
  if min(height, width) < patches_lib.PATCH_SIZE:
    print(f"  warning: frames under {patches_lib.PATCH_SIZE} px fit dpdd/full only; dpdd/patches "
          "(configs/dpdd.py's training set) needs 512x512 or larger")
  print("Train on it (a fresh data_dir per tree: TFDS would reuse a dpdd prepared from another):\n"
        f"  bambnet train --config configs/dpdd.py --workdir WORKDIR data.manual_dir={root} "
        "data.data_dir=TFDS_DIR")
  return manifest


if __name__ == "__main__":
  main()
