"""Matplotlib figures as PNG bytes (headless), for reports written atomically."""

import io


def pyplot():
  """matplotlib.pyplot on the non-interactive Agg backend (no display needed)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def png_bytes(fig, dpi=100):
  """Renders `fig` to PNG bytes and closes it."""
  buffer = io.BytesIO()
  fig.tight_layout()
  fig.savefig(buffer, format="png", dpi=dpi)
  pyplot().close(fig)
  return buffer.getvalue()
