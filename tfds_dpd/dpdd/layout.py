"""The DPDD folder layout (`VIEW_FOLDERS`) and its sorted-order pairing (SPEC section 6), without TFDS.

Sources and targets carry different capture numbers, so the four folders are paired by sorted file
order; a combined source and its views share a name (NAME.png, NAME_L.png, NAME_R.png), which
catches a file missing from one folder while another has an extra one.
"""

import dataclasses
import pathlib

import numpy as np

from bambnet_jax.io import images

SPLIT_PREFIXES = {"train": "train", "validation": "val", "test": "test"}
VIEW_FOLDERS = {  # combined (blurred) image, all-in-focus target, NAME_L.png and NAME_R.png views
    "combined": "{prefix}_c/source",
    "sharp": "{prefix}_c/target",
    "left": "{prefix}_l/source",
    "right": "{prefix}_r/source",
}
LABEL_FILES = {"indoor": "indoor_labels.npy", "outdoor": "outdoor_labels.npy"}


class DpddLayoutError(ValueError):
  """The DPDD tree is incomplete or inconsistent; the message names the folder or file."""


@dataclasses.dataclass(frozen=True)
class DpddScene:
  """The four files of one DPDD scene; `index` is its 1-based position in sorted order."""
  index: int
  name: str
  combined: pathlib.Path
  sharp: pathlib.Path
  left: pathlib.Path
  right: pathlib.Path

  def paths(self):
    return {"left": self.left, "right": self.right, "combined": self.combined, "sharp": self.sharp}


def find_root(directory):
  """The DPDD root: `directory` itself or the one sub-folder holding the split folders."""
  directory = pathlib.Path(directory)
  if not directory.is_dir():
    raise DpddLayoutError(f"{directory}: DPDD directory not found")
  is_root = lambda d: any((d / f"{p}_c").is_dir() for p in SPLIT_PREFIXES.values())
  if is_root(directory):
    return directory
  candidates = sorted(d for d in directory.iterdir() if d.is_dir() and is_root(d))
  if len(candidates) == 1:
    return candidates[0]
  if not candidates:
    raise DpddLayoutError(
        f"{directory}: no DPDD tree found (expected train_c/, val_c/, test_c/, train_l/, ... here "
        "or in one sub-folder such as dd_dp_dataset_png/)")
  raise DpddLayoutError(f"{directory}: several DPDD trees found: {[c.name for c in candidates]}")


def _view_stem(path, suffix):
  if not path.stem.upper().endswith(suffix):
    view = "left" if suffix == "_L" else "right"
    raise DpddLayoutError(f"{path}: a DPDD {view} view must be named *{suffix}.png")
  return path.stem[:-len(suffix)]


def pair_split(root, split):
  """The scenes of one split ('train', 'validation' or 'test'), paired by sorted file order."""
  root = pathlib.Path(root)
  prefix = SPLIT_PREFIXES[split]
  folders = {view: root / pattern.format(prefix=prefix) for view, pattern in VIEW_FOLDERS.items()}
  missing = [str(f) for f in folders.values() if not f.is_dir()]
  if missing:
    raise DpddLayoutError(f"DPDD {split} split is incomplete, missing folder(s): {', '.join(missing)}")
  files = {view: sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
                        and p.suffix.lower() in images.IMAGE_SUFFIXES)
           for view, folder in folders.items()}
  counts = {str(folders[view]): len(found) for view, found in files.items()}
  if len(set(counts.values())) != 1:
    listing = ", ".join(f"{folder}: {n}" for folder, n in counts.items())
    raise DpddLayoutError(f"DPDD {split} split: the four folders hold different numbers of images ({listing})")
  if not files["combined"]:
    raise DpddLayoutError(f"DPDD {split} split: no images in {folders['combined']}")
  scenes = []
  for index, (combined, sharp, left, right) in enumerate(
      zip(files["combined"], files["sharp"], files["left"], files["right"]), start=1):
    if not combined.stem == _view_stem(left, "_L") == _view_stem(right, "_R"):
      raise DpddLayoutError(
          f"{combined}, {left} and {right}: the images at sorted position {index} belong to different "
          "captures (a file is missing from one of the folders)")
    scenes.append(DpddScene(index, combined.stem, combined, sharp, left, right))
  return scenes


def _read_label_indices(path, num_scenes):
  try:
    indices = np.asarray(np.load(path, allow_pickle=False)).reshape(-1)
  except Exception as e:  # numpy raises several types for corrupt files
    raise DpddLayoutError(f"{path}: unreadable label file ({e})") from e
  if indices.size and not np.all(np.equal(np.mod(indices, 1), 0)):
    raise DpddLayoutError(f"{path}: labels must be whole-number scene indices, got {indices.dtype}")
  indices = indices.astype(np.int64)
  bad = indices[(indices < 1) | (indices > num_scenes)]
  if bad.size:
    raise DpddLayoutError(f"{path}: indices {bad[:5].tolist()} outside 1..{num_scenes} (1-based test scene indices)")
  return set(indices.tolist())


def read_test_scene_types(directories, num_scenes):
  """1-based scene index -> 'indoor' / 'outdoor' from the label files in `directories`, or None."""
  found = {}
  for kind, file_name in LABEL_FILES.items():
    paths = [pathlib.Path(d) / file_name for d in directories if (pathlib.Path(d) / file_name).is_file()]
    if paths:
      found[kind] = paths[0]
  if not found:
    return None
  if len(found) == 1:
    (path,) = found.values()
    other = next(name for kind, name in LABEL_FILES.items() if kind not in found)
    raise DpddLayoutError(f"{path}: found without its partner {other}; supply both label files or neither")
  indoor = _read_label_indices(found["indoor"], num_scenes)
  outdoor = _read_label_indices(found["outdoor"], num_scenes)
  if indoor & outdoor:
    raise DpddLayoutError(
        f"{found['indoor']} and {found['outdoor']}: scenes {sorted(indoor & outdoor)[:5]} "
        "are labelled both ways")
  return {**{i: "indoor" for i in indoor}, **{i: "outdoor" for i in outdoor}}
