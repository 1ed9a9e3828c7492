"""The report's figure of one DP capture restored by `bambnet deblur`: the input (L+R)/2 beside the
restored image (and a test scene's ground truth), their most detailed window enlarged pixel by
pixel, the COC map naming its estimator, and the branch masks, with HTML legends.
"""

import base64
import dataclasses
import html
import pathlib

import numpy as np

from bambnet_jax.commands import coc as coc_command
from bambnet_jax.commands import deblur
from bambnet_jax.commands import inference
from bambnet_jax.io import images

VIEW_WIDTH = 512  # on-page px of a full view at most
ROW_WIDTH = 1100  # on-page px of a row of views: a 1280-px window less the page's margins
GAP = 12  # px between the figures of a row
MAX_ENLARGE = 8  # small scenes are enlarged by a whole factor up to this, so pixels stay square
LEGEND_WIDTH = 260  # px a map's figure keeps at least, so its legend's lines do not wrap
CROP_SIDE = (16, 128)  # the zoomed window's side in image px: half the short side, within these
CROP_ZOOM = (2, 8)  # whole enlargement factors of the zoomed window
ESTIMATORS = {"network": "COC net", "search": "classical search"}

CSS = (f".capture{{margin:1.5em 0}}.compare,.maps{{display:flex;gap:{GAP}px;align-items:flex-start}}"
       ".compare{flex-wrap:nowrap}.maps{flex-wrap:wrap}.compare figure,.maps figure{margin:4px 0;text-align:center}"
       ".frame{position:relative;display:inline-block;line-height:0}"
       ".roi{position:absolute;box-sizing:border-box;border:2px solid #ffd400;outline:1px solid #000}"
       "img.enlarged,img.zoom{image-rendering:pixelated}"
       ".legend{font-size:13px;text-align:left;margin:4px 0}.legend ul{margin:0;padding:0;list-style:none}"
       ".legend li{margin:2px 0}.swatch{display:inline-block;width:14px;height:14px;margin-right:6px;"
       "vertical-align:middle;border:1px solid #555}.scale{height:14px;border:1px solid #555}"
       ".ticks{display:flex;justify-content:space-between}.note{font-size:12px;color:#444}")


@dataclasses.dataclass(frozen=True)
class Crop:
  """A side x side window at (top, left) of the image, shown enlarged `zoom` times."""
  top: int
  left: int
  side: int
  zoom: int

  def of(self, image):
    """The window of `image`, enlarged by repeating pixels (the page shows it at its own size)."""
    window = image[self.top:self.top + self.side, self.left:self.left + self.side]
    return np.repeat(np.repeat(window, self.zoom, axis=0), self.zoom, axis=1)


def display_width(width, columns=2):
  """On-page width of a full view in a row of `columns`: shrunk to fit, or enlarged a whole factor."""
  room = min(VIEW_WIDTH, (ROW_WIDTH + GAP) // columns - GAP)
  return room if width >= room else width * max(1, min(MAX_ENLARGE, room // width))


def detail_window(image, side):
  """(top, left) of the side x side window of (H, W, C) `image` with the most gradient energy."""
  grey = np.asarray(image, np.float64).mean(axis=-1)
  energy = np.zeros_like(grey)
  energy[:, 1:] += np.diff(grey, axis=1) ** 2
  energy[1:, :] += np.diff(grey, axis=0) ** 2
  total = np.pad(energy.cumsum(axis=0).cumsum(axis=1), ((1, 0), (1, 0)))  # summed-area table
  sums = total[side:, side:] - total[:-side, side:] - total[side:, :-side] + total[:-side, :-side]
  top, left = np.unravel_index(np.argmax(sums), sums.shape)
  return int(top), int(left)


def choose_crop(image, columns=2):
  """The zoomed window of an (H, W, C) input: its most detailed square, about as wide as its view."""
  height, width = image.shape[:2]
  side = min(int(np.clip(min(height, width) // 2, *CROP_SIDE)), height, width)
  zoom = int(np.clip(display_width(width, columns) // side, *CROP_ZOOM))
  return Crop(*detail_window(image, side), side, zoom)


def png8(image):
  """A float [0, 1] image as 8-bit PNG bytes (the report is for looking, not for measuring)."""
  return images.encode_png(images.from_float(np.clip(image, 0.0, 1.0), 8))


def img(png, css_class, alt, style=""):
  """An <img> of PNG bytes, inline as a data URI: the page needs no file beside it."""
  style = f" style='{style}'" if style else ""
  data = base64.b64encode(png).decode("ascii")
  return f"<img class='{css_class}' alt='{html.escape(alt)}'{style} src='data:image/png;base64,{data}'>"


def coc_legend_html(vmax, stops=11):
  """The COC map's colour scale as an HTML gradient over [-vmax, vmax], with its meaning."""
  colours = coc_command.colour_map(np.linspace(-vmax, vmax, stops)[None], vmax)[0]
  gradient = ", ".join(f"rgb({r},{g},{b}) {100 * i / (stops - 1):g}%" for i, (r, g, b) in enumerate(colours))
  return (f"<div class='legend coc-legend'><div class='scale' style='background:linear-gradient(to right, "
          f"{gradient})'></div><div class='ticks'><span>&minus;{vmax:.2f} px</span><span>0</span>"
          f"<span>+{vmax:.2f} px</span></div><p class='note'>signed COC radius (mean over colour channels): "
          "red in front of the focal plane, blue behind; the ends are the 99th percentile of |COC|, "
          "beyond it the colour is clipped</p></div>")


def masks_legend_html(thresholds, shares):
  """Per branch r_1..r_M a colour swatch, its blur range and its share (shares: then untinted)."""
  px = lambda r: f"{r:.3g}"  # searched thresholds carry float noise (0.294531)
  rows = []
  for i, r in enumerate(thresholds):
    span = f"{px(r)} &le; blur &lt; {px(thresholds[i + 1])} px" if i + 1 < len(thresholds) else f"blur &ge; {px(r)} px"
    colour = ",".join(str(int(c)) for c in deblur.BRANCH_COLOURS[i % len(deblur.BRANCH_COLOURS)])
    rows.append(f"<li><span class='swatch' style='background:rgb({colour})'></span>"
                f"branch {i + 1}: {span} ({100 * shares[i]:.0f}%)</li>")
  if thresholds[0] > 0:
    rows.append(f"<li><span class='swatch' style='background:transparent'></span>untinted: blur &lt; "
                f"{px(thresholds[0])} px ({100 * shares[-1]:.0f}%)</li>")
  return (f"<div class='legend masks-legend'><ul>{''.join(rows)}</ul><p class='note'>blur = the largest "
          "|COC| over colour channels; each pixel is tinted with its branch's colour over the input</p></div>")


def _figure(body, caption, width):
  return f"<figure style='width:{width}px'>{body}<figcaption>{caption}</figcaption></figure>"


def _maps_html(outputs, estimator, combined, shown, thresholds):
  """The COC map and the branch masks at the views' size, with the legends beneath them."""
  if "coc.npy" not in outputs:
    return "<p class='note'>No COC map: the COC estimator was turned off (--coc none).</p>"
  coc = np.load(outputs["coc.npy"])
  css_class, style = ("map enlarged" if shown > combined.shape[1] else "map"), f"width:{shown}px"
  branches = inference.branch_index(coc, thresholds)
  masks = images.encode_png(deblur.masks_overlay(combined, branches, thresholds, legend=False))
  coc_caption = (f"COC map, drawn by the <b class='estimator'>{html.escape(estimator)}</b>"
                 + coc_legend_html(coc_command.colour_range(coc.mean(axis=-1))))
  shares = deblur.pixel_shares(branches, len(thresholds))
  masks_caption = "branch masks (from that COC map)" + masks_legend_html(thresholds, shares)
  coc_png, width = outputs["coc.png"].read_bytes(), max(shown, LEGEND_WIDTH)
  return ("<div class='maps'>" + _figure(img(coc_png, css_class, f"COC map ({estimator})", style), coc_caption, width)
          + _figure(img(masks, css_class, "branch masks", style), masks_caption, width) + "</div>")


def capture_html(title, result, extra_views=()):
  """The figure of one pair restored by `deblur.run_deblur` (`result`: one of its returned dicts);
  extra_views: (caption, float image) after the input and the restored image, e.g. ground truth."""
  outputs = {pathlib.Path(p).name[len(result["name"]) + 1:]: pathlib.Path(p) for p in result["outputs"]}
  left, right = images.read_dp_pair(result["left"], result["right"])
  # The window is chosen on the input: reports of one capture compare the same window.
  combined = (images.to_float(left) + images.to_float(right)) / 2.0
  restored = images.to_float(images.read_image(outputs.get("restored.png") or outputs["restored.npy"]))
  views = [("input (L+R)/2", combined), ("restored", restored), *extra_views]
  height, width = combined.shape[:2]
  crop, shown = choose_crop(combined, len(views)), display_width(width, len(views))
  css_class = "view enlarged" if shown > width else "view"
  # The window's outline over the full view, in percent: right at any display size.
  box = (f"<div class='roi' style='left:{100 * crop.left / width:.3f}%;top:{100 * crop.top / height:.3f}%;"
         f"width:{100 * crop.side / width:.3f}%;height:{100 * crop.side / height:.3f}%'></div>")
  full = "".join(_figure(f"<div class='frame'>{img(png8(v), css_class, c, f'width:{shown}px')}{box}</div>",
                         html.escape(c), shown) for c, v in views)
  zoomed = "".join(_figure(img(png8(crop.of(v)), "zoom", f"{c}, zoomed"), f"{html.escape(c)}, {crop.zoom}x", shown)
                   for c, v in views)
  depth = images.bit_depth_of(left)
  about = (f"{width} x {height}, {f'{depth}-bit' if depth else 'float'}; the box marks the {crop.side} x "
           f"{crop.side} px window with the most detail in the input, shown below {crop.zoom}x")
  estimator = ESTIMATORS.get(result["coc_source"], result["coc_source"])
  maps = _maps_html(outputs, estimator, combined, shown, result["thresholds"])
  return (f"<div class='capture' data-name='{html.escape(result['name'])}'><h3>{html.escape(title)}</h3>"
          f"<p class='note'>{about}</p><div class='compare views'>{full}</div>"
          f"<div class='compare crops'>{zoomed}</div>{maps}</div>")
