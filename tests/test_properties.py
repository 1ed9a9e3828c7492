"""Properties over many inputs (hypothesis): the reblur loss, pad-and-crop, image decoding."""

import cv2
import hypothesis
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
import numpy as np
import pytest

from bambnet_jax.io import images
from bambnet_jax.losses import reblur
from bambnet_jax.models import padding

SETTINGS = hypothesis.settings(max_examples=25, deadline=None, derandomize=True,
                               suppress_health_check=[hypothesis.HealthCheck.too_slow])
SHAPE = (1, 10, 12, 3)  # one shape: every example reuses the compiled responses

pixels = hnp.arrays(np.float32, SHAPE, elements=st.floats(0.0, 1.0, width=32))
# Signed radii: fractions, exact integers, and values past the largest kernel radius (24).
radii = st.one_of(st.floats(-60.0, 60.0, width=32), st.integers(-30, 30).map(float),
                  st.sampled_from([-25.0, -24.0, -23.5, 0.0, 23.5, 24.0, 24.5, 25.0]))


@SETTINGS
@hypothesis.given(left=pixels, right=pixels, channels=st.sampled_from([1, 3]), data=st.data(),
                  tv_weight=st.sampled_from([0.0, 1e-5, 1.0]))
def test_reblur_loss_is_finite_and_non_negative(left, right, channels, data, tv_weight):
  coc = data.draw(hnp.arrays(np.float32, SHAPE[:3] + (channels,), elements=radii))
  loss = float(reblur.reblur_loss(left, right, coc, tv_weight))
  assert np.isfinite(loss) and loss >= 0.0


@SETTINGS
@hypothesis.given(view=pixels)
def test_reblur_loss_is_zero_for_identical_views_in_focus(view):
  # At COC 0 both views use the one symmetric kernel K_0, so the residual vanishes exactly;
  # the tolerance is FFT rounding (~1e-7 per pixel) times the loss scale 1000.
  loss = float(reblur.reblur_loss(view, view.copy(), np.zeros(SHAPE, np.float32), tv_weight=1.0))
  assert 0.0 <= loss < 1e-3


def test_reblur_loss_is_clearly_positive_for_mismatched_views():
  rng = np.random.default_rng(0)
  left = rng.random(SHAPE, dtype=np.float32)
  right = rng.random(SHAPE, dtype=np.float32)
  assert float(reblur.reblur_loss(left, right, np.zeros(SHAPE, np.float32))) > 1.0


@hypothesis.settings(max_examples=60, deadline=None, derandomize=True)
@hypothesis.given(height=st.integers(1, 70), width=st.integers(1, 70), channels=st.sampled_from([1, 3]))
def test_pad_then_crop_returns_the_input_exactly(height, width, channels):
  x = np.random.default_rng(height * 71 + width).random((1, height, width, channels), dtype=np.float32)
  (padded, none), crop = padding.pad_to_multiple((x, None), 16)
  padded = np.asarray(padded)
  assert none is None
  assert padded.shape[1] % 16 == 0 and padded.shape[2] % 16 == 0
  assert height <= padded.shape[1] < height + 16 and width <= padded.shape[2] < width + 16
  np.testing.assert_array_equal(np.asarray(crop(padded)), x)
  # The padding holds image values only (reflection), no zeros or garbage.
  assert np.isin(padded, x).all()


def _png_bytes(seed=0, shape=(9, 7, 3), dtype=np.uint8):
  rng = np.random.default_rng(seed)
  return images.encode_png(rng.integers(0, np.iinfo(dtype).max, shape, dtype=dtype, endpoint=True))


def _decodes_or_image_error(data):
  try:
    pixels = images.decode_image(data, "probe.png")
  except images.ImageError as e:
    assert e.path == "probe.png" and str(e).startswith("probe.png: ")
    return None
  assert pixels.ndim == 3 and pixels.shape[2] in (1, 3) and pixels.dtype in (np.uint8, np.uint16)
  return pixels


SIGNATURES = [b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"II*\x00", b"MM\x00*", b"BM"]


@hypothesis.settings(max_examples=150, deadline=None, derandomize=True)
@hypothesis.given(prefix=st.sampled_from(SIGNATURES), body=st.binary(max_size=300),
                  suffix=st.sampled_from([b"", b"\xff\xd9", b"\x00\x00\x00\x00IEND\xaeB`\x82"]))
def test_decoding_random_bytes_returns_pixels_or_raises_image_error(prefix, body, suffix):
  _decodes_or_image_error(prefix + body + suffix)


@hypothesis.settings(max_examples=150, deadline=None, derandomize=True)
@hypothesis.given(depth=st.sampled_from([np.uint8, np.uint16]), channels=st.sampled_from([1, 3, 4]),
                  data=st.data())
def test_decoding_truncated_or_corrupted_png_returns_pixels_or_raises_image_error(depth, channels, data):
  original = _png_bytes(shape=(9, 7, channels), dtype=depth)
  cut = data.draw(st.integers(0, len(original) - 1), label="cut")
  assert _decodes_or_image_error(original[:cut]) is None  # every truncation is refused
  flips = data.draw(st.lists(st.tuples(st.integers(0, len(original) - 1), st.integers(1, 255)), min_size=1,
                             max_size=4), label="flips")
  corrupt = bytearray(original)
  for index, xor in flips:
    corrupt[index] ^= xor
  _decodes_or_image_error(bytes(corrupt))


def test_decoding_a_whole_png_gives_its_pixels():
  pixels = np.random.default_rng(3).integers(0, 65535, (9, 7, 3), dtype=np.uint16)
  np.testing.assert_array_equal(_decodes_or_image_error(images.encode_png(pixels)), pixels)
  bgr = cv2.imdecode(np.frombuffer(images.encode_png(pixels), np.uint8), cv2.IMREAD_UNCHANGED)
  np.testing.assert_array_equal(bgr[:, :, ::-1], pixels)  # RGB order, checked against OpenCV itself


@SETTINGS
@hypothesis.given(body=st.binary(max_size=200), suffix=st.sampled_from([".png", ".jpg", ".tif", ".bmp"]))
def test_read_image_of_random_files_raises_image_error_naming_the_file(tmp_path_factory, body, suffix):
  path = tmp_path_factory.mktemp("files") / f"random{suffix}"
  path.write_bytes(body)
  with pytest.raises(images.ImageError) as info:
    images.read_image(path)
  assert info.value.path == str(path) and str(path) in str(info.value)
