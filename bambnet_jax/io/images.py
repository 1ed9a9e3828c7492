"""The one place that decides bit depth, channel order and DP pairing for every entry point.

Images are held as H x W x C arrays in RGB order (C = 3) or single-channel (C = 1), either as
their integer pixels (uint8 / uint16) or as float32 in [0, 1] (integer / (2**bits - 1)).
OpenCV does the decoding because it keeps 16-bit PNGs 16-bit; it returns BGR, which is flipped
here and nowhere else.
"""

import dataclasses
import os
import pathlib

import cv2
import numpy as np

from bambnet_jax.io import files

_SIGNATURES = {
    b"\x89PNG\r\n\x1a\n": "png",
    b"\xff\xd8\xff": "jpeg",
    b"II*\x00": "tiff",
    b"MM\x00*": "tiff",
    b"BM": "bmp",
}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


class ImageError(ValueError):
  """An input image that cannot be used; the message names the file and the problem."""

  def __init__(self, path, problem):
    super().__init__(f"{path}: {problem}")
    self.path = str(path)
    self.problem = problem


def bit_depth_of(pixels):
  """8 or 16 for integer images, None for float arrays."""
  if pixels.dtype == np.uint8:
    return 8
  if pixels.dtype == np.uint16:
    return 16
  return None


def _check_encoded(path, data):
  if not data:
    raise ImageError(path, "empty file")
  kind = next((k for sig, k in _SIGNATURES.items() if data.startswith(sig)), None)
  if kind is None:
    raise ImageError(path, "not an image (unrecognised file signature)")
  # libpng decodes a PNG cut short into a partly black image without complaint; the IEND chunk
  # at the end is the cheap proof that the file is whole.
  if kind == "png" and (data[-12:-8] != b"\x00" * 4 or data[-8:-4] != b"IEND"):
    raise ImageError(path, "truncated PNG (no IEND chunk at the end)")
  if kind == "jpeg" and not data.rstrip(b"\x00").endswith(b"\xff\xd9"):
    raise ImageError(path, "truncated JPEG (no end-of-image marker)")


def decode_image(data, path="<bytes>"):
  """Decodes encoded image bytes to an H x W x C integer array in RGB order."""
  _check_encoded(path, data)
  pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
  if pixels is None:
    raise ImageError(path, "corrupt or unsupported image data (decoder failed)")
  if pixels.dtype not in (np.uint8, np.uint16):
    raise ImageError(path, f"unsupported pixel type {pixels.dtype} (need 8- or 16-bit)")
  if pixels.ndim == 2:
    return pixels[:, :, None]
  if pixels.shape[2] == 4:  # drop alpha
    pixels = pixels[:, :, :3]
  if pixels.shape[2] != 3:
    raise ImageError(path, f"unsupported number of channels {pixels.shape[2]}")
  return np.ascontiguousarray(pixels[:, :, ::-1])


def read_image(path):
  """Reads an image file (8/16-bit PNG, JPEG, TIFF, BMP) or a float `.npy` array.

  Returns an H x W x C array: uint8/uint16 pixels for image files, float32 for `.npy`
  (which must be finite and 2-D or 3-D with 1 or 3 channels).
  """
  path = pathlib.Path(path)
  if not path.is_file():
    raise ImageError(path, "file not found" if not path.exists() else "not a regular file")
  if path.suffix.lower() == ".npy":
    return _read_float_array(path)
  return decode_image(path.read_bytes(), path)


def _read_float_array(path):
  try:
    array = np.load(path, allow_pickle=False)
  except Exception as e:  # numpy raises several types for corrupt files
    raise ImageError(path, f"unreadable .npy array ({e})") from e
  if array.ndim == 2:
    array = array[:, :, None]
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
  if depth is None:
    return np.asarray(pixels, np.float32)
  return pixels.astype(np.float32) / np.float32(2**depth - 1)


def from_float(image, bit_depth):
  """Float image in [0, 1] to rounded, clipped uint8/uint16 pixels."""
  if bit_depth not in (8, 16):
    raise ValueError(f"bit_depth must be 8 or 16, got {bit_depth}")
  peak = 2**bit_depth - 1
  scaled = np.rint(np.clip(np.asarray(image, np.float64), 0.0, 1.0) * peak)
  return scaled.astype(np.uint8 if bit_depth == 8 else np.uint16)


def encode_png(pixels):
  """Encodes an H x W x C (RGB or single-channel) uint8/uint16 array as PNG bytes."""
  pixels = np.asarray(pixels)
  if bit_depth_of(pixels) is None:
    raise ValueError(f"PNG needs uint8 or uint16 pixels, got {pixels.dtype}")
  if pixels.ndim == 3 and pixels.shape[2] == 3:
    pixels = pixels[:, :, ::-1]
  elif pixels.ndim == 3 and pixels.shape[2] == 1:
    pixels = pixels[:, :, 0]
  ok, encoded = cv2.imencode(".png", np.ascontiguousarray(pixels))
  if not ok:
    raise ValueError("PNG encoding failed")
  return encoded.tobytes()


def write_png(path, pixels):
  """Writes integer pixels as a PNG atomically (the bit depth is the array's)."""
  files.atomic_write_bytes(path, encode_png(pixels))


def write_npy(path, array):
  """Writes a NumPy array atomically."""
  with files.atomic_path(path) as tmp:
    with open(tmp, "wb") as f:
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
  """Finds DP pairs under `directory`.

  Two layouts are recognised: DPDD names in one folder (`NAME_L.png` with `NAME_R.png`, optional
  sharp target `NAME_S.png`; any of `suffixes`), and one folder per capture holding `l.png` and
  `r.png` (optional `sharp.png`). Returns (pairs, problems): problems lists each unpaired file with
  the reason, so a folder run can process the good pairs and report the rest.
  """
  directory = pathlib.Path(directory)
  if not directory.is_dir():
    raise ImageError(directory, "input directory not found")
  pairs, problems = [], []
  for folder, _, names in sorted(os.walk(directory)):
    folder = pathlib.Path(folder)
    lower = {n.lower(): n for n in names}
    if "l.png" in lower or "r.png" in lower:
      rel = folder.relative_to(directory).as_posix()
      name = "." if rel == "." else rel
      if "l.png" in lower and "r.png" in lower:
        sharp = folder / lower["sharp.png"] if "sharp.png" in lower else None
        pairs.append(DPPairFiles(name, folder / lower["l.png"], folder / lower["r.png"], sharp))
      else:
        missing = "r.png" if "l.png" in lower else "l.png"
        problems.append((folder / lower.get("l.png", lower.get("r.png", "")), f"missing partner view {missing}"))
    stems = {}
    for n in names:
      stem, ext = os.path.splitext(n)
      if ext.lower() in suffixes and len(stem) > 2 and stem[-2] == "_" and stem[-1] in "LRSlrs":
        stems.setdefault(stem[:-2], {})[stem[-1].upper()] = folder / n
    for stem, views in sorted(stems.items()):
      name = (folder.relative_to(directory) / stem).as_posix()
      if "L" in views and "R" in views:
        pairs.append(DPPairFiles(name, views["L"], views["R"], views.get("S")))
      elif "L" in views or "R" in views:
        have = "L" if "L" in views else "R"
        want = "R" if have == "L" else "L"
        problems.append((views[have], f"missing partner view {stem}_{want}.*"))
  return pairs, problems
