"""Synthetic dual-pixel scenes with a ground-truth signed COC map (SPEC section 9).

Depth layers far to near: a background and occluding blobs and polygons, each a fronto-parallel or
slanted plane (signed COC affine across the image) in its own COC band, so nearer means larger COC
at every pixel (SPEC section 3). Textures are dead leaves (`textures`) or a user's sharp photo. With
psf="disk" and no camera effects the reblur loss is exactly minimised at the returned COC.

    sample = render_sample(seed=7, config=SceneConfig(height=512, width=512, max_coc=16))
"""

import dataclasses

import cv2
import numpy as np

from bambnet_jax.data import dp_render
from bambnet_jax.data import textures
from bambnet_jax.io import images
from bambnet_jax.losses import dp_kernels


@dataclasses.dataclass(frozen=True)
class SceneConfig:
  """How a synthetic DP sample is drawn. Per-sample strengths are uniform in [0, the maximum]."""
  height: int = 512
  width: int = 512
  # Bound on |signed COC| in px (<= 24, the kernel family's largest radius). 12 by default: most
  # of DPDD's blur is small (BaMBNet's thresholds are 1.9, 4.2 and 6.2 px).
  max_coc: float = 12.0
  num_layers: int = 4  # the background and num_layers - 1 occluding objects
  slanted: bool = True  # planes tilted in depth; False: every layer at one COC
  max_slant: float = 8.0  # largest COC change across one plane over the frame, px
  psf: str = "disk"  # "disk": the SPEC's kernels (loss exact at the true COC); "rim": bright rim
  rim_strength: float = 1.0  # rim height relative to the disk for psf="rim"
  vignetting: float = 0.0  # max complementary L/R horizontal fall-off (0.2: 20 %, as in cameras)
  read_noise: float = 0.0  # max std of the Gaussian noise part (linear intensities in [0, 1])
  shot_noise: float = 0.0  # max Poisson gain: variance per unit of linear intensity
  gamma: bool = False  # textures are sRGB: blur in linear light, re-encode the views as sRGB
  # Each layer's texture contrast about its mean is scaled by U(min_contrast, 1). Dead leaves are
  # 2-5x more contrasty than real scenes, and a net that never saw weak texture at every depth
  # reads it as the background's (far, negative) COC.
  min_contrast: float = 1.0

  def __post_init__(self):
    if not 0 < self.max_coc <= dp_kernels.MAX_RADIUS:
      raise ValueError(f"max_coc must be in (0, {dp_kernels.MAX_RADIUS}], got {self.max_coc}")
    if self.num_layers < 1:
      raise ValueError(f"num_layers must be >= 1, got {self.num_layers}")
    if self.height < 16 or self.width < 16:
      raise ValueError(f"image must be at least 16x16, got {self.height}x{self.width}")
    if self.psf not in ("disk", "rim"):
      raise ValueError(f"psf must be 'disk' or 'rim', got {self.psf!r}")
    if min(self.max_slant, self.vignetting, self.read_noise, self.shot_noise) < 0:
      raise ValueError("max_slant, vignetting, read_noise and shot_noise must be >= 0")
    if not 0 <= self.min_contrast <= 1:
      raise ValueError(f"min_contrast must be in [0, 1], got {self.min_contrast}")


@dataclasses.dataclass(frozen=True)
class Layer:
  """One plane: b(x, y) = coc + slope_x * x + slope_y * y on canvas pixel coordinates."""
  coc: float
  slope_x: float
  slope_y: float
  mask: np.ndarray | None  # canvas-sized coverage in [0, 1] (anti-aliased); None: everywhere

  def coc_map(self, rows, cols):
    return (self.coc + self.slope_x * cols[None, :] + self.slope_y * rows[:, None]).astype(np.float32)


def _object_mask(rng, canvas_shape, frame):
  """Coverage of an object: one to three anti-aliased ellipses or star-shaped polygons."""
  top, left, height, width = frame
  mask = np.zeros(canvas_shape, np.float32)
  shift = 4  # cv2 draws with sub-pixel vertices in 1/16 px
  for _ in range(rng.integers(1, 4)):
    size = rng.uniform(0.08, 0.3) * min(height, width)
    centre = np.array([left + rng.uniform(0, width), top + rng.uniform(0, height)])
    if rng.random() < 0.5:
      axes = (int(size * 16), int(size * rng.uniform(0.4, 1.0) * 16))
      cv2.ellipse(mask, tuple(int(v * 16) for v in centre), axes, rng.uniform(0, 180), 0, 360,
                  1.0, -1, cv2.LINE_AA, shift)
    else:
      count = rng.integers(5, 12)
      angles = np.sort(rng.uniform(0, 2 * np.pi, count))
      radii = size * rng.uniform(0.5, 1.3, count)
      points = centre + np.stack([radii * np.cos(angles), radii * np.sin(angles)], 1)
      cv2.fillPoly(mask, [np.rint(points * 16).astype(np.int32)], 1.0, cv2.LINE_AA, shift)
  return np.clip(mask, 0.0, 1.0)


def sample_layers(rng, config, canvas_shape, frame):
  """Layers far to near: sorted COC centres, each plane kept inside its own COC band."""
  centres = np.sort(rng.uniform(-config.max_coc, config.max_coc, config.num_layers))
  bounds = np.concatenate([[-config.max_coc], (centres[1:] + centres[:-1]) / 2, [config.max_coc]])
  half_h, half_w = canvas_shape[0] / 2, canvas_shape[1] / 2
  layers = []
  for i, centre in enumerate(centres):
    room = min(centre - bounds[i], bounds[i + 1] - centre, config.max_slant / 2)
    spread = rng.uniform(0, room) if config.slanted else 0.0
    angle = rng.uniform(0, 2 * np.pi)
    # |b - centre| <= spread over the whole canvas: the tilt's extremes are at the corners.
    norm = abs(np.cos(angle)) + abs(np.sin(angle))
    slope_x = spread * np.cos(angle) / norm / half_w
    slope_y = spread * np.sin(angle) / norm / half_h
    coc = centre - slope_x * half_w - slope_y * half_h  # value at the canvas origin
    mask = None if i == 0 else _object_mask(rng, canvas_shape, frame)
    layers.append(Layer(float(coc), float(slope_x), float(slope_y), mask))
  return layers


def _photo_textures(rng, photo, canvas_shape, frame, count):
  """Layer textures from one photo: the frame is a random crop (upscaled if the photo is smaller);
  objects show flipped, shifted copies of it."""
  top, left, height, width = frame
  scale = max(height / photo.shape[0], width / photo.shape[1], 1.0)
  if scale > 1.0:
    size = (int(np.ceil(photo.shape[1] * scale)), int(np.ceil(photo.shape[0] * scale)))
    photo = cv2.resize(photo, size, interpolation=cv2.INTER_CUBIC)
  y, x = rng.integers(0, photo.shape[0] - height + 1), rng.integers(0, photo.shape[1] - width + 1)
  crop = np.clip(photo[y:y + height, x:x + width], 0.0, 1.0)
  pad = ((top, canvas_shape[0] - height - top), (left, canvas_shape[1] - width - left), (0, 0))
  background = np.pad(crop, pad, mode="reflect")
  result = [background]
  for _ in range(count - 1):
    variant = background[::rng.choice([-1, 1]), ::rng.choice([-1, 1])]
    shift = (rng.integers(0, canvas_shape[0]), rng.integers(0, canvas_shape[1]))
    result.append(np.roll(variant, shift, axis=(0, 1)))
  return result


def _camera(rng, config, left, right, sharp):
  """Vignetting and noise in linear light, then the sRGB encoding if asked for."""
  gain_left, gain_right = dp_render.vignetting_gains(left.shape[1], rng.uniform(0, config.vignetting))
  read_std = rng.uniform(0, config.read_noise)
  shot_gain = rng.uniform(0, config.shot_noise)
  left = dp_render.add_noise(rng, left * gain_left[None, :, None], read_std, shot_gain)
  right = dp_render.add_noise(rng, right * gain_right[None, :, None], read_std, shot_gain)
  encode = dp_render.linear_to_srgb if config.gamma else (lambda x: x)
  return tuple(np.clip(encode(x), 0.0, 1.0).astype(np.float32) for x in (left, right, sharp))


def render_sample(seed, config, sharp_image=None):
  """One synthetic DP sample, reproducibly from `seed` (and `sharp_image`, if given).

  `sharp_image`: an optional (H, W, 3) photo (float in [0, 1] or uint8/uint16), randomly cropped
  (upscaled if smaller); None draws dead-leaves textures. Returns float32 left, right, combined =
  (left + right) / 2, sharp (H, W, 3 in [0, 1]) and coc (H, W signed COC in px of the nearest layer).
  """
  rng = np.random.default_rng(seed)
  height, width = config.height, config.width
  margin = int(np.ceil(config.max_coc)) + 2  # blur reaches <= max_coc px into the frame from outside
  canvas_shape = (height + 2 * margin, width + 2 * margin)
  frame = (margin, margin, height, width)
  layers = sample_layers(rng, config, canvas_shape, frame)
  layer_textures = None
  if sharp_image is not None:
    photo = images.to_float(np.asarray(sharp_image))
    if photo.ndim != 3 or photo.shape[2] != 3:
      raise ValueError(f"sharp_image must be H x W x 3 RGB, got shape {photo.shape}")
    layer_textures = _photo_textures(rng, photo, canvas_shape, frame, len(layers))

  family = dp_render.psf_family(config.psf, config.rim_strength)
  to_linear = dp_render.srgb_to_linear if config.gamma else (lambda x: x)
  views = [None, None]  # left, right: (3, canvas) premultiplied colour
  sharp = np.zeros(canvas_shape + (3,), np.float32)
  coc = np.zeros(canvas_shape, np.float32)
  rows_all = np.arange(canvas_shape[0], dtype=np.float32)
  cols_all = np.arange(canvas_shape[1], dtype=np.float32)
  for index, layer in enumerate(layers):
    # Only the object's bounding box plus the blur's reach needs rendering.
    if layer.mask is None:
      r0, r1, c0, c1 = 0, canvas_shape[0], 0, canvas_shape[1]
    else:
      rows, cols = np.flatnonzero(layer.mask.any(1)), np.flatnonzero(layer.mask.any(0))
      if rows.size == 0:
        continue
      r0, r1 = max(rows[0] - margin, 0), min(rows[-1] + 1 + margin, canvas_shape[0])
      c0, c1 = max(cols[0] - margin, 0), min(cols[-1] + 1 + margin, canvas_shape[1])
    region = (slice(r0, r1), slice(c0, c1))
    texture = textures.dead_leaves(rng, r1 - r0, c1 - c0) if layer_textures is None else (
        layer_textures[index][region])
    if config.min_contrast < 1:  # no draw otherwise: scenes of the default config stay as they were
      mean = texture.mean((0, 1))
      texture = mean + rng.uniform(config.min_contrast, 1.0) * (texture - mean)
    if layer.slope_x == 0 and layer.slope_y == 0:
      layer_coc = np.float32(layer.coc)  # one blended PSF instead of a per-pixel blend
    else:
      layer_coc = layer.coc_map(rows_all[r0:r1], cols_all[c0:c1])
    colour = to_linear(texture).transpose(2, 0, 1)
    if layer.mask is None:  # the background
      views = list(dp_render.blur_views(colour, layer_coc, family, margin))
      sharp[:] = colour.transpose(1, 2, 0)
      coc[:] = layer_coc
      continue
    alpha_sharp = layer.mask[region]
    planes = np.concatenate([colour * alpha_sharp, alpha_sharp[None]])
    blurred = dp_render.blur_views(planes, layer_coc, family, margin)
    for v in range(2):
      # Premultiplied "over": this layer covers what is behind it by its blurred alpha.
      alpha = np.clip(blurred[v][3], 0.0, 1.0)
      views[v][:, r0:r1, c0:c1] = views[v][:, r0:r1, c0:c1] * (1.0 - alpha) + blurred[v][:3]
    sharp[region] = sharp[region] * (1.0 - alpha_sharp[..., None]) + (colour * alpha_sharp).transpose(1, 2, 0)
    coc[region] = np.where(alpha_sharp >= 0.5, layer_coc, coc[region])

  inner = (slice(margin, margin + height), slice(margin, margin + width))
  left, right = (np.ascontiguousarray(v[:, inner[0], inner[1]].transpose(1, 2, 0)) for v in views)
  sharp = sharp[inner]
  left, right, sharp = _camera(rng, config, left, right, sharp)
  return {
      "left": left,
      "right": right,
      "combined": (left + right) / np.float32(2),
      "sharp": sharp,
      "coc": np.ascontiguousarray(coc[inner]),
  }


def load_sharp_images(folder):
  """The sharp photos directly in `folder` (sorted), as float32 RGB in [0, 1] (grey repeated)."""
  return [images.to_float(images.to_rgb(images.read_image(p))) for p in images.image_paths(folder, "sharp images")]
