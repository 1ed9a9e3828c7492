"""NumPy references for the stride-1 zero-"same"-padded convolutions of the nets."""

import numpy as np


def weight_gradient(x, dy, window=(3, 3)):
  """dW (OHWI) of a conv of NHWC x with an odd `window`: each tap's products summed over pixels."""
  (kh, kw), (_, h, w, _) = window, x.shape
  padded = np.pad(np.asarray(x, np.float64), ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
  dy = np.asarray(dy, np.float64)
  taps = [[np.einsum("nhwi,nhwo->oi", padded[:, a:a + h, b:b + w], dy) for b in range(kw)] for a in range(kh)]
  return np.stack([np.stack(row, 1) for row in taps], 1)  # (o, kh, kw, i)


def conv3x3_passes(x, w, dy):
  """Forward, dgrad and wgrad of a 3x3 conv of NHWC x with an OHWI kernel w, given dy."""
  _, h, wd, _ = x.shape
  padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  windows = np.stack([padded[:, i:i + h, j:j + wd] for i in range(3) for j in range(3)], axis=3)  # n h w 9 c
  taps = w.reshape(w.shape[0], 9, w.shape[-1])  # o, 9, i
  forward = np.einsum("nhwki,oki->nhwo", windows, taps)
  dx_padded = np.zeros_like(padded)
  for k, (i, j) in enumerate((i, j) for i in range(3) for j in range(3)):
    dx_padded[:, i:i + h, j:j + wd] += np.einsum("nhwo,oi->nhwi", dy, taps[:, k])
  return forward, dx_padded[:, 1:-1, 1:-1], weight_gradient(x, dy)
