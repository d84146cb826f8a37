"""Rendering: arrays to pixels without a PNG round trip.

Colormap lookup tables, tiling, nearest-neighbour upscaling and text labels. Every frame that a
diagnostic logs or a video shows is composed here from numpy arrays; matplotlib is used only to
build the lookup tables and, through :func:`figure_to_array`, where a panel needs vector plots.
"""

from __future__ import annotations

import functools

import numpy as np

# One colormap per quantity, everywhere (TensorBoard, videos, notebooks): diverging maps are
# centred on zero with symmetric limits; sequential ones run from the fixed minimum to the maximum.
CMAPS = {
    "weights": "RdBu_r",  # weights, weight deltas, per-neuron maps: diverging, centred on 0
    "difference": "RdBu_r",  # generated - truth
    "field": "inferno",  # physical fields (slices, thumbnails)
    "counts": "viridis",  # histograms over time (colorful dimension)
    "thumbnail": "viridis",  # embedding thumbnails (``embed.cmap`` may choose another)
}


@functools.lru_cache(maxsize=32)
def colormap_lut(name: str, n: int = 256) -> np.ndarray:
    """RGB lookup table of a matplotlib colormap, shape (n, 3), uint8."""
    import matplotlib

    cmap = matplotlib.colormaps[name].resampled(n)
    lut = (cmap(np.arange(n))[:, :3] * 255.0 + 0.5).astype(np.uint8)
    lut.setflags(write=False)
    return lut


def apply_cmap(
    arr: np.ndarray, vmin: float, vmax: float, cmap: str = "viridis", *, nan_rgb=(128, 128, 128)
) -> np.ndarray:
    """Map a 2D array to RGB uint8 (H, W, 3) with fixed limits; NaN gets ``nan_rgb``."""
    arr = np.asarray(arr, dtype=np.float32)
    if arr.ndim != 2:
        raise ValueError(f"apply_cmap expects a 2D array, got shape {arr.shape}")
    lut = colormap_lut(cmap)
    n = len(lut)
    span = float(vmax) - float(vmin)
    scale = (n - 1) / span if span > 0 else 0.0
    idx = np.nan_to_num((arr - float(vmin)) * scale, nan=0.0, posinf=n - 1, neginf=0.0)
    idx = np.clip(idx + 0.5, 0, n - 1).astype(np.intp)
    out = lut[idx]
    nan = np.isnan(arr)
    if nan.any():
        out[nan] = nan_rgb
    return out


def upscale_factor(shape: tuple[int, int], max_px: int) -> int:
    """Largest integer nearest-neighbour factor that keeps the longer side <= max_px (never 0)."""
    longest = max(int(shape[0]), int(shape[1]), 1)
    return max(1, max_px // longest)


def upscale_nearest(img: np.ndarray, factor: int) -> np.ndarray:
    """Pixel replication by an integer factor (no smoothing)."""
    if factor <= 1:
        return img
    return np.repeat(np.repeat(img, factor, axis=0), factor, axis=1)


def pad_even(img: np.ndarray, fill=0) -> np.ndarray:
    """Pad bottom/right by one pixel where a side is odd (H.264 with yuv420p needs even sides)."""
    h, w = img.shape[:2]
    ph, pw = h % 2, w % 2
    if not (ph or pw):
        return img
    pad = [(0, ph), (0, pw)] + [(0, 0)] * (img.ndim - 2)
    return np.pad(img, pad, constant_values=fill)


def tile(images: list[np.ndarray], ncols: int, *, pad: int = 2, fill=(224, 224, 224)) -> np.ndarray:
    """Grid of equally sized RGB images, row-major, with ``pad`` pixels between cells."""
    if not images:
        raise ValueError("tile needs at least one image")
    h, w = images[0].shape[:2]
    for im in images:
        if im.shape[:2] != (h, w):
            raise ValueError(f"tile: images differ in size ({im.shape[:2]} vs {(h, w)})")
    nrows = -(-len(images) // ncols)
    out = np.empty((nrows * h + (nrows + 1) * pad, ncols * w + (ncols + 1) * pad, 3), np.uint8)
    out[:] = fill
    for i, im in enumerate(images):
        r, c = divmod(i, ncols)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        out[y : y + h, x : x + w] = im[..., :3]
    return out


def fit_into(img: np.ndarray, height: int, width: int, *, fill=(224, 224, 224)) -> np.ndarray:
    """Place ``img`` centred on a canvas of the given size, upscaled by the largest integer factor."""
    h, w = img.shape[:2]
    f = max(1, min(height // max(h, 1), width // max(w, 1)))
    big = upscale_nearest(img, f)
    if big.shape[0] > height or big.shape[1] > width:  # larger than the canvas: subsample
        sy, sx = -(-big.shape[0] // height), -(-big.shape[1] // width)
        big = big[::sy, ::sx]
    out = np.empty((height, width, 3), np.uint8)
    out[:] = fill
    y, x = (height - big.shape[0]) // 2, (width - big.shape[1]) // 2
    out[y : y + big.shape[0], x : x + big.shape[1]] = big[..., :3]
    return out


@functools.lru_cache(maxsize=8)
def _font(size: int):
    from PIL import ImageFont

    try:
        from matplotlib import font_manager  # `import matplotlib` alone does not load it

        path = font_manager.findfont("DejaVu Sans")
        return ImageFont.truetype(path, size)
    except Exception:  # noqa: BLE001 - any font problem falls back to PIL's bitmap font
        return ImageFont.load_default()


@functools.lru_cache(maxsize=4096)
def _text_mask(text: str, size: int) -> tuple[np.ndarray, int, int]:
    """``text`` at ``size`` px rendered once as an 8-bit coverage mask, with its offset from the
    drawing origin. Tick labels, titles and legends repeat at every write: each is rasterised
    once per process, then only blended (:func:`stamp_text`)."""
    from PIL import Image, ImageDraw

    font = _font(size)
    left, top, right, bottom = (int(v) for v in font.getbbox(text))
    w, h = max(right - left, 0), max(bottom - top, 0)
    if w == 0 or h == 0:
        return np.zeros((0, 0), np.uint8), 0, 0
    mask = Image.new("L", (w, h), 0)
    ImageDraw.Draw(mask).text((-left, -top), text, fill=255, font=font)
    out = np.asarray(mask).copy()
    out.setflags(write=False)
    return out, left, top


@functools.lru_cache(maxsize=4096)
def text_width(text: str, size: int) -> float:
    """Advance width of ``text`` at ``size`` px (PIL's ``textlength``), cached."""
    return float(_font(size).getlength(text))


def stamp_text(
    img: np.ndarray, text: str, xy: tuple[float, float], *, size: int = 14, color=(0, 0, 0)
) -> np.ndarray:
    """Blend ``text`` (anti-aliased, ``color``) into an RGB uint8 image in place at ``xy`` (the
    PIL text origin, rounded to whole pixels), clipped to the image; returns ``img``."""
    mask, dx, dy = _text_mask(text, int(size))
    if mask.size == 0:
        return img
    x0, y0 = int(round(xy[0])) + dx, int(round(xy[1])) + dy
    H, W = img.shape[:2]
    ya, yb, xa, xb = max(y0, 0), min(y0 + mask.shape[0], H), max(x0, 0), min(x0 + mask.shape[1], W)
    if ya >= yb or xa >= xb:
        return img
    a = mask[ya - y0 : yb - y0, xa - x0 : xb - x0, None].astype(np.uint16)
    region = img[ya:yb, xa:xb, :3]
    ink = np.asarray(color, np.uint16)[: region.shape[2]]
    region[...] = ((region.astype(np.uint16) * (255 - a) + ink * a + 127) // 255).astype(np.uint8)
    return img


def draw_text(
    img: np.ndarray, text: str, xy: tuple[int, int], *, size: int = 14, color=(0, 0, 0)
) -> np.ndarray:
    """Draw ``text`` onto an RGB uint8 image in place and return it (:func:`stamp_text`)."""
    return stamp_text(img, text, xy, size=size, color=color)


def label_above(
    img: np.ndarray, text: str, *, height: int = 20, size: int = 14, fill=(255, 255, 255)
) -> np.ndarray:
    """A copy of ``img`` with a strip of ``height`` px on top holding ``text``."""
    strip = np.empty((height, img.shape[1], 3), np.uint8)
    strip[:] = fill
    draw_text(strip, text, (3, max(0, (height - size) // 2 - 1)), size=size)
    return np.concatenate([strip, img[..., :3]], axis=0)


def _wrap(text: str, k: int) -> list[str]:
    """``text`` in ``k`` pieces of about equal length, broken at spaces where there are any."""
    if k <= 1:
        return [text]
    out, rest = [], text
    for m in range(k, 1, -1):
        target = len(rest) // m
        cut = rest.rfind(" ", 0, target + 1)
        cut = cut if cut > target // 2 else target  # no space near: break inside the word
        out.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip()
    return [*out, rest]


def fit_label_above(
    img: np.ndarray,
    text: str,
    *,
    height: int = 32,
    size: int = 12,
    fill=(255, 255, 255),
    min_size: int = 9,
) -> np.ndarray:
    """Like :func:`label_above`, one line per ``\\n`` in ``text``; a line too wide for the image
    is wrapped onto sub-lines in its share of the height (font not below ``min_size``), and only
    where that cannot fit drawn smaller, down to 6 px: a long name is wrapped or shrunk, never cut."""
    strip = _label_strip(text, img.shape[1], height, size, tuple(fill), min_size)
    return np.concatenate([strip, img[..., :3]], axis=0)


@functools.lru_cache(maxsize=1024)
def _label_strip(
    text: str, width: int, height: int, size: int, fill: tuple, min_size: int
) -> np.ndarray:
    """The title strip of :func:`fit_label_above`, laid out and drawn once per (text, width)."""
    strip = np.empty((height, width, 3), np.uint8)
    strip[:] = fill
    lines = text.split("\n")
    line_h = height // len(lines)
    y = 0

    def fits(pieces, s):
        return max(text_width(p, s) for p in pieces) <= width - 4

    for ln in lines:
        # wrapping onto more sub-lines is preferred to a font below min_size; only when the
        # height allows no more sub-lines does the font shrink further, down to 6 px
        done = False
        for floor in (min(min_size, size), 6):
            for k in range(1, max(1, line_h // 7) + 1):
                pieces = _wrap(ln, k)
                s = min(size, max(6, line_h // k - 2))
                if s < floor:
                    break
                while s > floor and not fits(pieces, s):
                    s -= 1
                if fits(pieces, s):
                    done = True
                    break
            if done:
                break
        sub_h = line_h // len(pieces)
        for n, p in enumerate(pieces):
            stamp_text(strip, p, (2, y + n * sub_h + max(0, (sub_h - s) // 2 - 1)), size=s)
        y += line_h
    strip.setflags(write=False)
    return strip


def figure_to_array(fig) -> np.ndarray:
    """Render a matplotlib figure through Agg to RGB uint8 (H, W, 3)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def _tick(x: float) -> str:
    """Compact tick label: 3 significant digits, scientific outside [1e-3, 1e4)."""
    if x == 0 or not np.isfinite(x):
        return f"{x:g}"
    return f"{x:.3g}" if 1e-3 <= abs(x) < 1e4 else f"{x:.2e}"


def colorbar(
    width: int,
    vmin: float,
    vmax: float,
    cmap: str,
    *,
    label: str = "",
    height: int = 34,
    bar_h: int = 10,
    size: int = 11,
    fill=(255, 255, 255),
) -> np.ndarray:
    """A horizontal colour bar (height, width, 3): the LUT from vmin to vmax, ticks at both ends
    and the middle, and ``label`` (units or quantity) after the middle tick."""
    width = max(int(width), 60)
    out = np.empty((height, width, 3), np.uint8)
    out[:] = fill
    x0, x1 = 4, width - 4
    ramp = np.linspace(vmin, vmax, x1 - x0, dtype=np.float64)[None, :].repeat(bar_h, 0)
    out[2 : 2 + bar_h, x0:x1] = apply_cmap(ramp, vmin, vmax, cmap)
    mid = 0.5 * (float(vmin) + float(vmax))
    y = 3 + bar_h
    lo, hi = _tick(float(vmin)), _tick(float(vmax))
    draw_text(out, lo, (x0, y), size=size)
    centre = _tick(mid) + (f"  {label}" if label else "")
    draw_text(out, centre, (max(x0, width // 2 - 3 * len(centre)), y), size=size)
    draw_text(out, hi, (max(x0, x1 - int(0.62 * size * len(hi))), y), size=size)
    return out


def with_colorbar(
    img: np.ndarray, vmin: float, vmax: float, cmap: str, *, label: str = "", **kw
) -> np.ndarray:
    """``img`` (H, W, 3) with :func:`colorbar` of its colour scale appended below."""
    bar = colorbar(img.shape[1], vmin, vmax, cmap, label=label, **kw)
    if bar.shape[1] != img.shape[1]:  # images narrower than a readable bar: pad the image
        pad = np.empty((img.shape[0], bar.shape[1], 3), np.uint8)
        pad[:] = kw.get("fill", (255, 255, 255))
        pad[:, : img.shape[1]] = img[..., :3]
        img = pad
    return np.concatenate([img[..., :3], bar], axis=0)


# ----------------------------------------------------------------------------------------------
# charts with axes: the colorful dimension, the dead fraction and small line plots, drawn the same
# in TensorBoard images and video frames

AX_LEFT = 56  # px left of the plot area: y tick labels
AX_BOTTOM = 30  # px below the plot area: x tick marks, labels and the axis name
AX_RIGHT = 14  # px right of the plot area: room for the last x label
AX_TITLE = 52  # px above the plot area: title lines (shrunk or wrapped to fit, never cut)
AX_MIN_W = 320  # px: narrower plot areas are widened (columns repeated) so the labels fit
AXIS_RGB = (64, 64, 64)


def _ticks(n: int, k: int = 5) -> list[int]:
    """Up to ``k`` evenly spaced indices of 0..n-1, first and last included."""
    if n <= 0:
        return []
    return sorted({int(round(x)) for x in np.linspace(0, n - 1, min(k, n))})


def axes_panel(
    plot: np.ndarray,
    *,
    title: str,
    x_ticks: list[tuple[int, str]],
    y_ticks: list[tuple[int, str]],
    x_label: str = "step",
    bar: tuple[float, float, str, str] | None = None,
    fill=(255, 255, 255),
) -> np.ndarray:
    """``plot`` (h, w, 3) framed by a y axis (``y_ticks``: (row px, label)), an x axis
    (``x_ticks``: (column px, label)) named ``x_label``, ``title`` above (one line per ``\\n``)
    and, given ``bar`` = (vmin, vmax, cmap, label), a colour bar below. The plot area starts at
    (AX_TITLE, AX_LEFT)."""
    h, w = plot.shape[:2]
    canvas = np.empty((h + AX_BOTTOM, AX_LEFT + w + AX_RIGHT, 3), np.uint8)
    canvas[:] = fill
    canvas[:h, AX_LEFT : AX_LEFT + w] = plot[..., :3]
    canvas[: h + 1, AX_LEFT - 1] = AXIS_RGB  # y axis
    canvas[h, AX_LEFT - 1 : AX_LEFT + w + 1] = AXIS_RGB  # x axis
    for y, text in y_ticks:
        y = int(min(max(y, 0), h - 1))
        canvas[y, AX_LEFT - 4 : AX_LEFT] = AXIS_RGB
        tw = text_width(text, 10)
        stamp_text(canvas, text, (AX_LEFT - 6 - tw, min(max(0, y - 6), h - 12)), size=10)
    right = AX_LEFT + w + AX_RIGHT
    for x, text in x_ticks:
        x = AX_LEFT + int(min(max(x, 0), w - 1))
        canvas[h : h + 4, x] = AXIS_RGB
        tw = text_width(text, 10)
        stamp_text(canvas, text, (min(max(0, x - tw / 2), right - tw), h + 4), size=10)
    tw = text_width(x_label, 10)
    stamp_text(
        canvas, x_label, (AX_LEFT + max(0, (w - tw) / 2), h + 17), size=10, color=(80, 80, 80)
    )
    out = canvas
    if bar is not None:
        out = with_colorbar(out, bar[0], bar[1], bar[2], label=bar[3], fill=fill)
    return fit_label_above(out, title, height=AX_TITLE, size=12, fill=fill)


def _columns(n: int, plot_w: int) -> np.ndarray:
    """Source column of each of the max(plot_w, n) pixel columns: n columns stretched over the
    plot width (widths differ by at most one pixel), or one pixel each when n > plot_w."""
    w = max(int(plot_w), n, 1)
    return (np.arange(w) * n) // w


def _step_ticks(steps, n_cols: int, width: int) -> list[tuple[int, str]]:
    steps = list(steps)
    return [
        (int((i + 0.5) * width / n_cols), str(int(steps[i])))
        for i in _ticks(min(n_cols, len(steps)))
    ]


def colorful_panel(
    cols: np.ndarray,
    edges,
    steps,
    *,
    title: str,
    value_label: str = "|activation|",
    vmax: float | None = None,
    plot_w: int = AX_MIN_W,
    plot_h: int = 168,
    gap_rgb=(160, 160, 160),
) -> np.ndarray:
    """The colorful dimension with its axes: log1p(counts) of ``cols`` (n_bins + 2, n_cols)
    (underflow row first, overflow last), bin 0 at the bottom, one column per write at ``steps``.

    Rows are labelled with bin edges (``edges``, n_bins + 1 values, of ``value_label``), columns
    with their steps; a colour bar gives log1p(count) from 0 to ``vmax`` (default: the maximum).
    NaN columns (writes still to come, in a video) are drawn ``gap_rgb``. Each row is
    ``plot_h // rows`` px high; the columns fill ``plot_w`` px (widths differ by at most 1 px),
    one pixel each when there are more."""
    # cols: (n_bins + 2, n_cols) counts
    cols = np.asarray(cols, dtype=np.float64)
    edges = np.asarray(edges, dtype=np.float64)
    if cols.ndim != 2 or cols.shape[1] == 0 or cols.shape[0] != len(edges) + 1:
        raise ValueError(
            f"colorful_panel expects ({len(edges) + 1}, n_cols>0) counts for {len(edges)} edges, "
            f"got {cols.shape}"
        )
    rows, n = cols.shape
    if vmax is None:
        m = np.log1p(np.maximum(cols, 0.0))
        vmax = float(np.nanmax(m)) if np.isfinite(m).any() else 1.0
    vmax = float(vmax) if vmax > 0 else 1.0
    rgb = colorful_dimension(cols, vmax=vmax, nan_rgb=gap_rgb)  # overflow at the top
    rh = max(1, plot_h // rows)
    img = np.repeat(rgb, rh, axis=0)[:, _columns(n, plot_w)]
    # edge j lies between row j (from the bottom, row 0 = underflow) and row j + 1
    n_bins = len(edges) - 1
    y_ticks = [((rows - 1 - j) * rh, _tick(float(edges[j]))) for j in _ticks(n_bins + 1)]
    return axes_panel(
        img,
        title=title,
        x_ticks=_step_ticks(steps, n, img.shape[1]),
        y_ticks=y_ticks,
        bar=(0.0, vmax, CMAPS["counts"], "log1p(count)"),
    )


def fraction_panel(
    values,
    steps,
    *,
    title: str,
    plot_w: int = AX_MIN_W,
    plot_h: int = 64,
    rgb=(200, 40, 40),
) -> np.ndarray:
    """An area chart of a fraction in [0, 1] per write (the dead fraction), y axis 0-100 %,
    x axis the writes' steps, with a darker top edge (also at 0 %); NaN columns stay blank."""
    # values: (n_cols,) fractions
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    n = max(1, len(v))
    cols = _columns(n, plot_w)
    img = np.full((plot_h, len(cols), 3), 255, np.uint8)
    img[[0, plot_h // 2], :] = (225, 225, 225)  # gridlines at 100 % and 50 %
    edge = tuple(int(c * 0.6) for c in rgb)
    x = np.full(len(cols), np.nan)
    inside = cols < len(v)
    x[inside] = v[cols[inside]]
    fin = np.isfinite(x)
    hpx = np.zeros(len(cols), np.int64)
    hpx[fin] = np.rint(np.clip(x[fin], 0.0, 1.0) * plot_h).astype(np.int64)
    rows = np.arange(plot_h)[:, None]
    img[(rows >= plot_h - hpx[None, :]) & fin[None, :]] = rgb
    # A darker top edge on every finite value, so 0 % reads as a line on the floor, not as the
    # blank of a write still to come
    px = np.flatnonzero(fin)
    img[plot_h - np.maximum(hpx[px], 1), px] = edge
    y_ticks = [(0, "100 %"), (plot_h // 2, "50 %"), (plot_h - 1, "0 %")]
    return axes_panel(img, title=title, x_ticks=_step_ticks(steps, n, len(cols)), y_ticks=y_ticks)


LINE_RGB = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
]  # matplotlib tab10, first eight


def lines_panel(
    series: np.ndarray,
    steps,
    *,
    title: str,
    names: list[str] | None = None,
    ylim: tuple[float, float] | None = None,
    plot_w: int = AX_MIN_W,
    plot_h: int = 120,
) -> np.ndarray:
    """Line plot with axes of ``series`` (k, n_steps) over ``steps`` (k <= 8 lines, colours in
    ``LINE_RGB`` order, named by ``names`` in a legend); NaN values (steps still to come) are not
    drawn. ``ylim`` defaults to the finite range of the data (a constant gets +-1 around it)."""
    from PIL import Image, ImageDraw

    # series: (k, n_steps)
    series = np.atleast_2d(np.asarray(series, dtype=np.float64))
    k, n = series.shape
    if k > len(LINE_RGB):
        raise ValueError(f"lines_panel draws at most {len(LINE_RGB)} lines, got {k}")
    fin = series[np.isfinite(series)]
    if ylim is None:
        ylim = (float(fin.min()), float(fin.max())) if fin.size else (0.0, 1.0)
    lo, hi = float(ylim[0]), float(ylim[1])
    if not hi > lo:
        lo, hi = lo - (abs(lo) or 1.0), hi + (abs(hi) or 1.0)
    img = np.full((plot_h, plot_w, 3), 255, np.uint8)
    pil = Image.fromarray(img)
    d = ImageDraw.Draw(pil)

    m = max(2, plot_h // 12)  # lines at the limits stay clear of the frame

    def px(i: int, v: float) -> tuple[float, float]:
        x = (i + 0.5) * plot_w / n
        return x, m + (plot_h - 1 - 2 * m) * (hi - v) / (hi - lo)

    for v in (lo, 0.5 * (lo + hi), hi):
        y = px(0, v)[1]
        d.line([(0, y), (plot_w - 1, y)], fill=(230, 230, 230))
    for j in range(k):
        pts = [px(i, v) for i, v in enumerate(series[j]) if np.isfinite(v)]
        if len(pts) > 1:
            d.line(pts, fill=LINE_RGB[j], width=2)
        for x, y in pts[-1:]:
            d.ellipse([x - 2, y - 2, x + 2, y + 2], fill=LINE_RGB[j])
    img = np.asarray(pil).copy()
    if names:
        x = 4
        for j, name in enumerate(names[:k]):
            stamp_text(img, name, (x, 2), size=10, color=LINE_RGB[j])
            x += text_width(name, 10) + 8
    y_ticks = [(int(round(px(0, v)[1])), _tick(v)) for v in (hi, 0.5 * (lo + hi), lo)]
    x_ticks = [(int(px(i, 0)[0]), str(int(s))) for i, s in ((i, list(steps)[i]) for i in _ticks(n))]
    return axes_panel(img, title=title, x_ticks=x_ticks, y_ticks=y_ticks)


def colorful_dimension(
    counts: np.ndarray,
    *,
    vmax: float | None = None,
    upto: int | None = None,
    fy: int = 1,
    fx: int = 1,
    nan_rgb=(128, 128, 128),
) -> np.ndarray:
    """The colorful dimension (fast.ai): ``log1p`` of histogram counts over time, one way for
    TensorBoard and video.

    Args:
        counts: (n_bins, n_cols) host counts, bin 0 (underflow) drawn at the bottom.
        vmax: upper colour limit of ``log1p(count)``; None: this image's maximum. A video passes
            the sequence's maximum so that its frames compare.
        upto: columns after this index are drawn ``nan_rgb`` (not yet written).
        fy, fx: integer upscale factors.
    """
    # counts: (n_bins, n_cols)
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 2:
        raise ValueError(f"colorful_dimension expects (n_bins, n_cols), got {counts.shape}")
    m = np.log1p(np.maximum(counts, 0.0))[::-1].astype(np.float32)  # row 0 of an image: its top
    if upto is not None:
        m[:, upto + 1 :] = np.nan
    if vmax is None:
        finite = m[np.isfinite(m)]
        vmax = float(finite.max()) if finite.size else 1.0
    rgb = apply_cmap(m, 0.0, vmax if vmax > 0 else 1e-6, CMAPS["counts"], nan_rgb=nan_rgb)
    return np.repeat(np.repeat(rgb, max(1, fy), axis=0), max(1, fx), axis=1)
