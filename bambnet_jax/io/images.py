"""The one place that decides bit depth, channel order and DP pairing for every entry point.

Images are H x W x C arrays, RGB or single-channel, as uint8/uint16 pixels or float32 in [0, 1]
(integer / (2**bits - 1)). OpenCV decodes (16-bit PNGs stay 16-bit) in BGR, flipped here only.
Raw DP views (phones: 10-14 bits above a black level) map to [0, 1] through their `RawLevels`, and
a flat-field pair removes each view's vignetting; `DPReader` applies both for the user commands.
"""

import dataclasses
import json
import os
import pathlib

import cv2
import numpy as np

from bambnet_jax.io import files

_SIGNATURES = {b"\x89PNG\r\n\x1a\n": "png", b"\xff\xd8\xff": "jpeg", b"II*\x00": "tiff", b"MM\x00*": "tiff",
               b"BM": "bmp"}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


class ImageError(ValueError):
  """An input image that cannot be used; the message names the file and the problem."""

  def __init__(self, path, problem):
    super().__init__(f"{path}: {problem}")
    self.path = str(path)


def bit_depth_of(pixels):
  """8 or 16 for integer images, None for float arrays."""
  return {np.dtype(np.uint8): 8, np.dtype(np.uint16): 16}.get(pixels.dtype)


def decode_image(data, path="<bytes>"):
  """Decodes encoded image bytes to an H x W x C integer array in RGB order."""
  if not data:
    raise ImageError(path, "empty file")
  kind = next((k for sig, k in _SIGNATURES.items() if data.startswith(sig)), None)
  if kind is None:
    raise ImageError(path, "not an image (unrecognised file signature)")
  # libpng decodes a PNG cut short into a partly black image without complaint: check its IEND chunk.
  if kind == "png" and (data[-12:-8] != b"\x00" * 4 or data[-8:-4] != b"IEND"):
    raise ImageError(path, "truncated PNG (no IEND chunk at the end)")
  if kind == "jpeg" and not data.rstrip(b"\x00").endswith(b"\xff\xd9"):
    raise ImageError(path, "truncated JPEG (no end-of-image marker)")
  pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
  if pixels is None:
    raise ImageError(path, "corrupt or unsupported image data (decoder failed)")
  if pixels.dtype not in (np.uint8, np.uint16):
    raise ImageError(path, f"unsupported pixel type {pixels.dtype} (need 8- or 16-bit)")
  if pixels.ndim == 2:
    return pixels[:, :, None]
  pixels = pixels[:, :, :3] if pixels.shape[2] == 4 else pixels  # drop alpha
  if pixels.shape[2] != 3:
    raise ImageError(path, f"unsupported number of channels {pixels.shape[2]}")
  return np.ascontiguousarray(pixels[:, :, ::-1])


def read_image(path):
  """An image file (8/16-bit PNG, JPEG, TIFF, BMP) as integer pixels, or a float `.npy` array as float32."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise ImageError(path, "file not found" if not path.exists() else "not a regular file")
  if path.suffix.lower() != ".npy":
    return decode_image(path.read_bytes(), path)
  try:
    array = np.load(path, allow_pickle=False)
  except Exception as e:  # numpy raises several types for corrupt files
    raise ImageError(path, f"unreadable .npy array ({e})") from e
  array = array[:, :, None] if array.ndim == 2 else array
  if array.ndim != 3 or array.shape[2] not in (1, 3):
    raise ImageError(path, f"array of shape {array.shape} is not H x W, H x W x 1 or H x W x 3")
  if not np.issubdtype(array.dtype, np.floating):
    raise ImageError(path, f".npy arrays must be float in [0, 1], got {array.dtype}")
  if not np.all(np.isfinite(array)):
    raise ImageError(path, "contains NaN or Inf values")
  return array.astype(np.float32)


def to_float(pixels):
  """Integer pixels to float32 in [0, 1]; float input is passed through as float32."""
  depth = bit_depth_of(pixels)
  return np.asarray(pixels, np.float32) if depth is None else pixels.astype(np.float32) / np.float32(2**depth - 1)


def to_rgb(pixels):
  """H x W x 1 pixels with the channel repeated to RGB; RGB passed through."""
  return np.repeat(pixels, 3, axis=2) if pixels.shape[2] == 1 else pixels


def image_paths(folder, what="images"):
  """The image files directly in `folder`, sorted; an ImageError naming the folder if it is missing
  or holds none (`what`: how the message names them)."""
  folder = pathlib.Path(folder).expanduser()
  if not folder.is_dir():
    raise ImageError(folder, f"folder of {what} not found")
  paths = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
  if not paths:
    raise ImageError(folder, f"no {what} (png, jpg, tif, bmp) in the folder")
  return paths


def from_float(image, bit_depth):
  """Float image in [0, 1] to rounded, clipped uint8/uint16 pixels."""
  if bit_depth not in (8, 16):
    raise ValueError(f"bit_depth must be 8 or 16, got {bit_depth}")
  scaled = np.rint(np.clip(np.asarray(image, np.float64), 0.0, 1.0) * (2**bit_depth - 1))
  return scaled.astype(np.uint8 if bit_depth == 8 else np.uint16)


def encode_png(pixels):
  """Encodes an H x W x C (RGB or single-channel) uint8/uint16 array as PNG bytes."""
  pixels = np.asarray(pixels)
  if bit_depth_of(pixels) is None:
    raise ValueError(f"PNG needs uint8 or uint16 pixels, got {pixels.dtype}")
  if pixels.ndim == 3 and pixels.shape[2] in (1, 3):
    pixels = pixels[:, :, ::-1] if pixels.shape[2] == 3 else pixels[:, :, 0]
  ok, encoded = cv2.imencode(".png", np.ascontiguousarray(pixels))
  if not ok:
    raise ValueError("PNG encoding failed")
  return encoded.tobytes()


def write_png(path, pixels):
  """Writes integer pixels as a PNG atomically (the bit depth is the array's)."""
  files.atomic_write_bytes(path, encode_png(pixels))


def write_npy(path, array):
  """Writes a NumPy array atomically."""
  with files.atomic_path(path) as tmp, open(tmp, "wb") as f:
    np.save(f, np.asarray(array))


def read_dp_pair(left_path, right_path):
  """Reads a left/right DP pair that must agree in size, channels and bit depth."""
  left, right = read_image(left_path), read_image(right_path)
  if left.shape != right.shape:
    raise ImageError(right_path, f"size {right.shape} differs from the left view {left_path} {left.shape}")
  if left.dtype != right.dtype:
    raise ImageError(right_path, f"bit depth ({right.dtype}) differs from the left view {left_path} ({left.dtype})")
  return left, right


@dataclasses.dataclass(frozen=True)
class DPPairFiles:
  """The files of one DP capture: left and right views and an optional sharp target."""
  name: str
  left: pathlib.Path
  right: pathlib.Path
  sharp: pathlib.Path | None = None


def find_dp_pairs(directory, suffixes=IMAGE_SUFFIXES):
  """(pairs, problems: (unpaired file, reason)) under `directory`, in two layouts: DPDD names
  (`NAME_L.png`, `NAME_R.png`, optional `NAME_S.png`; any of `suffixes`), and a folder per capture
  holding `l.png`, `r.png` (and optional `sharp.png`)."""
  directory = pathlib.Path(directory)
  if not directory.is_dir():
    raise ImageError(directory, "input directory not found")
  pairs, problems = [], []
  for folder, _, names in sorted(os.walk(directory)):
    folder = pathlib.Path(folder)
    views = {n.lower(): folder / n for n in names}
    _add_pair(pairs, problems, folder.relative_to(directory).as_posix(), views, ("l.png", "r.png", "sharp.png"), str)
    stems = {}
    for n in names:
      stem, ext = os.path.splitext(n)
      if ext.lower() in suffixes and len(stem) > 2 and stem[-2] == "_" and stem[-1] in "LRSlrs":
        stems.setdefault(stem[:-2], {})[stem[-1].upper()] = folder / n
    for stem, views in sorted(stems.items()):
      _add_pair(pairs, problems, (folder.relative_to(directory) / stem).as_posix(), views, ("L", "R", "S"),
                lambda want: f"{stem}_{want}.*")  # pylint: disable=cell-var-from-loop
  return pairs, problems


def _add_pair(pairs, problems, name, views, keys, partner_name):
  """Adds the pair in `views` ({key: path}) under keys (left, right, sharp), or a lone view's problem."""
  left, right, sharp = keys
  if left in views and right in views:
    pairs.append(DPPairFiles(name, views[left], views[right], views.get(sharp)))
  for have, want in ((left, right), (right, left)):
    if have in views and want not in views:
      problems.append((views[have], f"missing partner view {partner_name(want)}"))


SIDECAR_NAME = "dp_raw.json"  # {"black_level": 1024, "white_level": 16383} beside a raw pair
SIDECAR_KEYS = ("black_level", "white_level")
# Flat-field smoothing, a Gaussian of this share of the longer side: wider averages more noise, but
# its reflected borders flatten the steep corners of vignetting more (~1% at 2%).
FLAT_SIGMA = 0.02
FLAT_GRID_SIGMA = 4.0  # px: a wide Gaussian runs on a grid coarsened until sigma spans this many cells
FLAT_MAX_SATURATED = 0.01  # share of a flat field's pixels allowed at the white level
FLAT_MIN_MEAN = 0.02  # a flat field darker than this (of the level range) is mostly noise
FLAT_MIN_RESPONSE = 0.1  # a smoothed flat field below this share of its mean is not a uniform surface


@dataclasses.dataclass(frozen=True)
class RawLevels:
  """Black and white levels of raw sensor values: v -> (v - black) / (white - black) in [0, 1]."""
  black: float
  white: float

  def __post_init__(self):
    for name, value in (("black", self.black), ("white", self.white)):
      if type(value) not in (int, float) and not isinstance(value, np.number) or not np.isfinite(value):
        raise ValueError(f"the {name} level must be a finite number, got {value!r}")
    if self.black < 0:
      raise ValueError(f"the black level must be >= 0, got {self.black:g}")
    if self.white <= self.black:
      raise ValueError(f"the white level ({self.white:g}) must be above the black level ({self.black:g})")

  @classmethod
  def full_range(cls, pixels):
    """The levels `to_float` implies: 0 to 2**bits - 1 for integer pixels, 0 to 1 for float."""
    depth = bit_depth_of(pixels)
    return cls(0, 1) if depth is None else cls(0, 2**depth - 1)

  def to_unit(self, pixels):
    return raw_to_unit(pixels, self.black, self.white)

  def from_unit(self, image, dtype):
    """Float [0, 1] back to rounded `dtype` values between the levels (float dtypes: float32)."""
    if not np.issubdtype(dtype, np.integer):
      return np.asarray(image, np.float32)
    unit = np.clip(np.asarray(image, np.float64), 0.0, 1.0)
    return np.rint(self.black + unit * (self.white - self.black)).astype(dtype)


def raw_to_unit(view, black, white):
  """Raw values to float32 in [0, 1]: (v - black) / (white - black), clipped."""
  unit = (np.asarray(view, np.float32) - np.float32(black)) / np.float32(white - black)
  return np.clip(unit, 0.0, 1.0, out=unit)


def raw_levels(folder, black=None, white=None, root=None):
  """The raw levels of the pair in `folder`: the flags `black`/`white` over the SIDECAR_NAME file's
  in `folder`, else in its parents up to `root` (None: `folder` only). None when neither gives any;
  ImageError, naming the sidecar (or the flags), for a level alone or an invalid pair."""
  folder = pathlib.Path(folder).absolute()
  root = None if root is None else pathlib.Path(root).absolute()
  while not (folder / SIDECAR_NAME).is_file() and root is not None and root in folder.parents:
    folder = folder.parent
  sidecar, record = folder / SIDECAR_NAME, {}
  if sidecar.is_file():
    try:
      record = json.loads(sidecar.read_text())
    except (OSError, ValueError) as e:
      raise ImageError(sidecar, f"unreadable raw-levels file ({e})") from e
    if not isinstance(record, dict):
      raise ImageError(sidecar, 'expected a JSON object such as {"black_level": 1024, "white_level": 16383}')
    unknown = sorted(set(record) - set(SIDECAR_KEYS))
    if unknown:  # a misspelt key would otherwise be ignored silently
      raise ImageError(sidecar, f"unknown key(s) {unknown}; expected {list(SIDECAR_KEYS)}")
  levels = dict(zip(SIDECAR_KEYS, (black, white)))
  from_file = [k for k in SIDECAR_KEYS if levels[k] is None and k in record]
  levels.update({k: record[k] for k in from_file})
  if all(v is None for v in levels.values()):
    return None
  source = sidecar if from_file else "--black-level/--white-level"
  missing = [k for k in SIDECAR_KEYS if levels[k] is None]
  if missing:
    raise ImageError(source, f"{missing[0]} missing: raw views need both a black and a white level "
                             f"(--black-level, --white-level, or {SIDECAR_NAME} beside the views)")
  try:
    return RawLevels(levels["black_level"], levels["white_level"])
  except ValueError as e:
    raise ImageError(source, str(e)) from e


def _smooth(image, sigma):
  """A Gaussian blur (reflected borders) of an (H, W, C) float32 image, on a coarser grid when wide."""
  height, width, channels = image.shape
  step = max(1, int(sigma / FLAT_GRID_SIGMA))
  coarse = (max(1, round(width / step)), max(1, round(height / step)))
  small = cv2.resize(image, coarse, interpolation=cv2.INTER_AREA) if step > 1 else image
  small = cv2.GaussianBlur(small, (0, 0), sigma * small.shape[1] / width, borderType=cv2.BORDER_REFLECT)
  small = cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR) if step > 1 else small
  return small.reshape(height, width, channels)


def flat_field_response(flat, black, white, sigma=None):
  """The smoothed response ([0, 1] units, (H, W, C)) of a raw capture of a uniform bright surface.

  sigma: px (default FLAT_SIGMA of the longer side). ValueError for an over-exposed, dark or uneven one.
  """
  flat = np.asarray(flat).reshape(*np.shape(flat)[:2], -1)
  saturated = float(np.mean(flat >= white))
  if saturated > FLAT_MAX_SATURATED:
    raise ValueError(f"over-exposed flat field: {100 * saturated:.0f}% of its pixels at the white level {white:g}")
  unit = raw_to_unit(flat, black, white)
  if unit.mean() < FLAT_MIN_MEAN:
    raise ValueError(f"flat field too dark: its mean is {100 * unit.mean():.1f}% of the level range "
                     f"(need a bright uniform surface above the black level {black:g})")
  sigma = FLAT_SIGMA * max(flat.shape[:2]) if sigma is None else sigma
  response = _smooth(np.ascontiguousarray(unit), sigma)
  if response.min() < FLAT_MIN_RESPONSE * response.mean():
    raise ValueError(f"flat field not uniform: it falls to {100 * response.min() / response.mean():.0f}% "
                     "of its mean (need a uniform bright surface filling the frame)")
  return response


def flat_field_gains(flat_left, flat_right, black, white, sigma=None):
  """Per-view gains (float32, (H, W, C)) removing each view's vignetting: corrected = view * gain."""
  return _gains(*(flat_field_response(f, black, white, sigma) for f in (flat_left, flat_right)))


def _gains(response_left, response_right):
  # Over the mean of both flat fields: a brightness difference between the views goes too.
  mean = np.float32((response_left.mean() + response_right.mean()) / 2)
  return mean / response_left, mean / response_right


@dataclasses.dataclass(frozen=True)
class DPViews:
  """A DP pair as a command uses it: the views (as read, or float32 in [0, 1] once `levels` or a flat
  field are applied), and the files' pixel type, for outputs."""
  left: np.ndarray
  right: np.ndarray
  levels: RawLevels | None
  dtype: np.dtype

  def encode(self, image):
    """A float [0, 1] image in the files' encoding: their levels and pixel type (float: float32)."""
    return (self.levels or RawLevels.full_range(np.empty(0, self.dtype))).from_unit(image, self.dtype)


class DPReader:
  """Reads DP pairs for the user commands, applying raw levels and the views' flat fields when given.
  black_level, white_level: None takes them from the SIDECAR_NAME file beside each pair (found up to
  `root`); with neither, pairs are read as ordinary images."""

  def __init__(self, black_level=None, white_level=None, flat_left=None, flat_right=None, root=None):
    if (flat_left is None) != (flat_right is None):
      raise ValueError("give both --flat-field-left and --flat-field-right (one flat field per view)")
    self.black_level, self.white_level, self.root = black_level, white_level, root
    self.flats = None if flat_left is None else (pathlib.Path(flat_left), pathlib.Path(flat_right))
    self._gains = {}  # per (levels, shape, pixel type): a folder run computes them once

  def read(self, left_path, right_path):
    """The pair's `DPViews`; ImageError (naming the file) for a bad view, sidecar or flat field."""
    left, right = read_dp_pair(left_path, right_path)
    levels = raw_levels(pathlib.Path(left_path).parent, self.black_level, self.white_level, self.root)
    if levels is None and self.flats is None:
      return DPViews(left, right, None, left.dtype)
    if levels is not None:
      for path, view in ((left_path, left), (right_path, right)):
        _check_raw(path, view, levels)
    applied, dtype = levels or RawLevels.full_range(left), left.dtype
    left, right = applied.to_unit(left), applied.to_unit(right)
    if self.flats is not None:
      gains = self._flat_gains(applied, left.shape, dtype, raw=levels is not None)
      left, right = (np.clip(v * g, 0.0, 1.0, out=v) for v, g in zip((left, right), gains))
    return DPViews(left, right, applied, dtype)

  def _flat_gains(self, levels, shape, dtype, raw):
    key = (levels, shape, dtype)
    if key not in self._gains:
      responses = []
      for path in self.flats:
        flat = read_image(path)
        if flat.shape[:2] != shape[:2] or flat.shape[2] not in (1, shape[2]):
          raise ImageError(path, f"flat field of shape {flat.shape} does not fit views of shape {shape}")
        if flat.dtype != dtype:
          raise ImageError(path, f"flat field pixels are {flat.dtype}, the views' {dtype}")
        if raw:
          _check_raw(path, flat, levels)
        try:
          responses.append(flat_field_response(flat, levels.black, levels.white))
        except ValueError as e:
          raise ImageError(path, str(e)) from e
      self._gains[key] = _gains(*responses)
    return self._gains[key]


def _check_raw(path, pixels, levels):
  """Raw levels fit integer pixels of the file's bit depth, and the file is not all black."""
  depth = bit_depth_of(pixels)
  if depth is None:
    raise ImageError(path, "raw levels apply to integer pixels (8- or 16-bit images), not float arrays")
  if levels.white > 2**depth - 1:
    raise ImageError(path, f"white level {levels.white:g} above the largest {depth}-bit value {2**depth - 1}")
  if pixels.max() <= levels.black:
    raise ImageError(path, f"every pixel is at or below the black level {levels.black:g}")
