"""`bambnet deblur`: restores a user's DP captures, one left/right pair or a folder of pairs.

Per pair NAME (file stem without `_L`, or folder path with `/` as `_`): NAME_restored.png (the
input's bit depth, channels and raw levels; .npy for float input), NAME_coc.npy (signed COC in px,
(H, W, K): K = 3 from the COC net, 1 from the search), NAME_coc.png (as `bambnet coc` draws it)
and NAME_masks.png (branch masks over the input, a legend band below). Each pair is written
atomically, all or nothing; a folder run skips bad pairs and fails at the end, naming them.
"""

import concurrent.futures
import json
import pathlib
import re

import cv2
import numpy as np
import tqdm

from bambnet_jax.commands import coc as coc_command
from bambnet_jax.commands import inference
from bambnet_jax.io import files
from bambnet_jax.io import images
from bambnet_jax.io import weights as weights_io

COC_CHOICES = ("auto",) + inference.COC_SOURCES
# Okabe-Ito colours (distinguishable with colour-blindness), lightest branch first.
BRANCH_COLOURS = np.array([(0, 158, 115), (230, 159, 0), (86, 180, 233), (204, 121, 167),
                           (240, 228, 66), (0, 114, 178), (213, 94, 0), (0, 0, 0)], np.uint16)
TINT = 115  # of 256: the branch colour's share in the overlay (~45%)
_FONT = cv2.FONT_HERSHEY_SIMPLEX  # the legend's
NO_WEIGHTS = ("no deblurring network given: pass --weights with a training workdir (its "
              "deblur/weights is used) or a weights directory from `bambnet convert-torch --net deblur`; "
              "for a COC map alone, use `bambnet coc`")


class DeblurFailures(ValueError):
  """Some inputs of a folder run were bad; the others' outputs were written."""


def load_deblurrer(weights, coc_weights=None, coc="auto", thresholds=None, **options):
  """A `Deblurrer` from `--weights`: deblurring weights, or a training workdir (its nets and searched
  thresholds; `coc_weights`, `thresholds` override). coc: "auto" (the COC net if known, else the
  search), "network", "search" or "none". options: see `inference.Deblurrer`."""
  if weights is None:
    raise ValueError(NO_WEIGHTS)
  weights = deblur = pathlib.Path(weights)
  progress, found = weights / "progress.json", None
  if (weights / "deblur").is_dir() or progress.is_file():  # a training workdir
    deblur = weights / "deblur" / "weights"
    if not deblur.is_dir():
      raise weights_io.WeightsError(f"{weights}: a training workdir without deblur/weights "
                                     "(has the deblur stage finished?)")
    if progress.is_file():
      try:
        found = json.loads(progress.read_text()).get("finished", {}).get("search", {}).get("thresholds")
      except (ValueError, AttributeError) as e:
        raise weights_io.WeightsError(f"{progress}: unreadable progress record ({e})") from e
    if coc_weights is None and (weights / "coc" / "weights").is_dir():
      coc_weights = weights / "coc" / "weights"
  if thresholds is None and found:
    thresholds = found[:-1]  # the last one is the upper bound r_(M+1)
  if coc not in COC_CHOICES:
    raise ValueError(f"unknown COC source {coc!r}; expected one of {COC_CHOICES}")
  deblur_params, _, deblur_config = weights_io.load_weights(deblur, expected_net="deblur")
  coc_params = coc_config = None
  if coc in ("auto", "network") and coc_weights is not None:
    coc_params, _, coc_config = weights_io.load_weights(coc_weights, expected_net="coc")
  return inference.Deblurrer(deblur_params, deblur_config, coc_params, coc_config,
                             coc_source=None if coc == "auto" else coc, thresholds=thresholds, **options)


def safe_name(text):
  """A file-name stem from a pair name: path separators and odd characters become `_`."""
  return re.sub(r"[^A-Za-z0-9._-]+", "_", text.replace("/", "_")).strip("._") or "image"


def pair_name(left_path):
  """The output name of a pair given as files: `x_L.png` -> x, `.../capture/l.png` -> capture."""
  stem = pathlib.Path(left_path).stem
  if stem.lower() in ("l", "left"):
    return safe_name(pathlib.Path(left_path).absolute().parent.name)
  return safe_name(stem[:-2] if stem[-2:] in ("_L", "_l") else stem)


def unique_names(names):
  """Appends -2, -3, ... to repeated names, so two pairs never write the same files."""
  seen, unique = {}, []
  for name in names:
    seen[name] = count = seen.get(name, 0) + 1
    unique.append(name if count == 1 else f"{name}-{count}")
  return unique


def _text_width(text, scale, thickness):
  # getTextSize leaves out the stroke's own width, which anti-aliased glyphs spill over by.
  return cv2.getTextSize(text, _FONT, scale, thickness)[0][0] + thickness


def _wrap(text, width, scale, thickness):
  """`text` broken at spaces into lines whose drawn width (`_FONT`, `scale`) fits `width` px."""
  lines = []
  for word in text.split():
    joined = f"{lines[-1]} {word}" if lines else word
    if lines and _text_width(joined, scale, thickness) <= width:
      lines[-1] = joined
    else:
      lines.append(word)
  return lines


def legend_band(width, thresholds, shares):
  """(height, width, 3) uint8: per branch a colour swatch, its |COC| range and share. Labels wrap at
  spaces to the image's width, and on very narrow images shrink until their longest word fits."""
  labels = []
  for i, r in enumerate(thresholds):
    span = f"{r:g} <= |COC| < {thresholds[i + 1]:g}" if i + 1 < len(thresholds) else f"|COC| >= {r:g}"
    labels.append((BRANCH_COLOURS[i % len(BRANCH_COLOURS)], f"branch {i + 1}: {span} px, {100 * shares[i]:.0f}%"))
  if thresholds[0] > 0:
    labels.append((None, f"untinted: |COC| < {thresholds[0]:g} px, {100 * shares[-1]:.0f}%"))
  row = int(np.clip(width // 40, 12, 96))
  swatch = min(row - 4, max(3, width // 8))  # narrow images leave most of their width to the text
  left = swatch + 4  # where the text starts
  room = max(1, width - left - 2)
  scale = 0.6 * row / 22.0  # Hershey simplex capitals are ~22 px high at scale 1
  thickness = max(1, round(scale * 1.5))
  longest = max((w for _, text in labels for w in text.split()), key=lambda w: _text_width(w, scale, thickness))
  while scale > 0.05 and _text_width(longest, scale, thickness) > room:
    scale *= 0.95
    thickness = max(1, round(scale * 1.5))
  (_, ascent), descent = cv2.getTextSize("|Hg", _FONT, scale, thickness)
  line = max(ascent + descent + thickness + 2, swatch + 4)  # '|' and 'p' reach below the baseline
  wrapped = [(colour, _wrap(text, room, scale, thickness)) for colour, text in labels]
  band = np.full((line * sum(len(lines) for _, lines in wrapped), width, 3), 32, np.uint8)
  top = 0
  for colour, lines in wrapped:
    if colour is not None:
      band[top + (line - swatch) // 2:top + (line + swatch) // 2, 2:2 + swatch] = colour
    for text in lines:
      cv2.putText(band, text, (left, top + (line + ascent - descent) // 2), _FONT, scale, (235, 235, 235), thickness,
                  cv2.LINE_AA)
      top += line
  return band


def pixel_shares(branches, num_branches):
  """The share of pixels per branch, then of untinted ones, of a `inference.branch_index` map."""
  counts = np.bincount(branches.ravel().astype(np.int64) + 1, minlength=num_branches + 1)
  return np.append(counts[1:], counts[0]) / branches.size


def masks_overlay(base, branches, thresholds, legend=True):
  """The branch of each pixel tinted over `base` ((H, W, C) float in [0, 1]), TINT / 256 of its
  colour (pixels of no branch untinted), with a legend band below if `legend`."""
  base8 = images.from_float(base, 8).astype(np.uint16)
  base8 = np.repeat(base8, 3 // base8.shape[-1], axis=-1)  # grey input: three equal channels
  palette = BRANCH_COLOURS[np.arange(len(thresholds)) % len(BRANCH_COLOURS)]
  blended = (base8 * (256 - TINT) + palette[np.maximum(branches, 0)] * TINT + 128) >> 8
  overlay = np.where((branches >= 0)[..., None], blended, base8).astype(np.uint8)
  if not legend:
    return overlay
  band = legend_band(branches.shape[1], thresholds, pixel_shares(branches, len(thresholds)))
  return np.concatenate([overlay, band], axis=0)


def _encoded_outputs(output_dir, name, views, result, thresholds):
  """{path: bytes or array} of one pair (`images.DPViews`), all encoded before anything is written."""
  output_dir = pathlib.Path(output_dir)
  restored = views.encode(result.restored)  # the input files' encoding
  if images.bit_depth_of(restored) is None:  # float input: float output
    outputs = {output_dir / f"{name}_restored.npy": restored}
  else:
    outputs = {output_dir / f"{name}_restored.png": images.encode_png(restored)}
  if result.coc is not None:
    shown = result.coc.mean(axis=-1)
    outputs[output_dir / f"{name}_coc.npy"] = result.coc
    outputs[output_dir / f"{name}_coc.png"] = images.encode_png(
        coc_command.colour_map(shown, coc_command.colour_range(shown)))
    combined = (images.to_float(views.left) + images.to_float(views.right)) / 2.0
    outputs[output_dir / f"{name}_masks.png"] = images.encode_png(masks_overlay(combined, result.branches, thresholds))
  return outputs


def _write_all(outputs):
  """Writes every output atomically; on a failure removes those written, then re-raises."""
  written = []
  try:
    for path, content in outputs.items():
      if isinstance(content, bytes):
        files.atomic_write_bytes(path, content)
      else:
        images.write_npy(path, np.asarray(content, np.float32))
      written.append(path)
  except BaseException:
    for path in written:
      path.unlink(missing_ok=True)
    raise
  return list(outputs)


def _read_pair(reader, pair):
  views = reader.read(pair.left, pair.right)
  if views.left.shape[-1] not in (1, 3):
    raise images.ImageError(pair.left, f"{views.left.shape[-1]} channels; need RGB or single-channel")
  return views


def run_deblur(output_dir, left=None, right=None, input_dir=None, weights=None, coc_weights=None,
               coc="auto", thresholds=None, dtype="float32", tile=None, overlap=None, batch_size=1,
               show_progress=True, black_level=None, white_level=None, flat_field=None):
  """Restores one pair (`left`, `right`) or every pair under `input_dir` into `output_dir`; returns one
  dict per restored pair: name, input files, written paths, COC source, thresholds. tile, overlap: see
  `inference.Deblurrer` (overlap None: DEFAULT_OVERLAP); black_level, white_level, flat_field (None or
  two files): see `images.DPReader`. Raises ValueError/OSError for a bad single pair or bad options
  before anything is written; DeblurFailures after a folder run in which some inputs were bad."""
  if (left is None) != (right is None) or (left is None) == (input_dir is None):
    raise ValueError("give either --left and --right (one pair) or --input-dir (a folder of pairs)")
  overlap = inference.DEFAULT_OVERLAP if overlap is None else overlap
  reader = images.DPReader(black_level, white_level, *(flat_field or (None, None)), root=input_dir)
  deblurrer = load_deblurrer(weights, coc_weights, coc, thresholds, compute_dtype=dtype,
                             tile=tile, overlap=overlap, batch_size=batch_size,
                             progress=lambda **kw: tqdm.tqdm(leave=False, unit="tile", disable=not show_progress
                                                             or kw["total"] < 2, **kw))
  if input_dir is None:
    pairs, problems = [images.DPPairFiles(pair_name(left), pathlib.Path(left), pathlib.Path(right))], []
    names = [pairs[0].name]
  else:
    pairs, problems = images.find_dp_pairs(input_dir, suffixes=images.IMAGE_SUFFIXES + (".npy",))
    if not pairs and not problems:
      raise images.ImageError(input_dir, "no DP pairs found (expected NAME_L.png with NAME_R.png, "
                                         "or folders holding l.png and r.png)")
    base = safe_name(pathlib.Path(input_dir).absolute().name)
    names = unique_names([base if p.name == "." else safe_name(p.name) for p in pairs])
  failures = [(str(path), problem) for path, problem in problems]
  done = []
  # Reads the next pair while the current one is restored.
  with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
    reads = [pool.submit(_read_pair, reader, pairs[0])] if pairs else []
    for index in tqdm.tqdm(range(len(pairs)), desc="deblur", unit="pair", disable=not show_progress or len(pairs) < 2):
      pair, name = pairs[index], names[index]
      if index + 1 < len(pairs):
        reads.append(pool.submit(_read_pair, reader, pairs[index + 1]))
      try:
        views = reads[index].result()
        reads[index] = None  # frees the pixels once restored
        result = deblurrer(views.left, views.right)
        written = _write_all(_encoded_outputs(output_dir, name, views, result, deblurrer.thresholds))
      except (ValueError, OSError) as e:
        if input_dir is None:
          raise
        failures.append((getattr(e, "path", f"{pair.left} / {pair.right}"), getattr(e, "problem", str(e))))
        continue
      done.append({"name": name, "left": str(pair.left), "right": str(pair.right),
                   "outputs": [str(p) for p in written], "coc_source": result.coc_source,
                   "thresholds": list(deblurrer.thresholds)})
  if failures:
    lines = "\n".join(f"  {path}: {problem}" for path, problem in failures)
    raise DeblurFailures(f"{len(failures)} bad input(s); {len(done)} pair(s) restored into {output_dir}:\n{lines}")
  return done
