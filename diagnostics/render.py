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


def draw_text(
    img: np.ndarray, text: str, xy: tuple[int, int], *, size: int = 14, color=(0, 0, 0)
) -> np.ndarray:
    """Draw ``text`` onto an RGB uint8 image in place (PIL, no matplotlib) and return it."""
    from PIL import Image, ImageDraw

    pil = Image.fromarray(img)
    ImageDraw.Draw(pil).text(xy, text, fill=tuple(color), font=_font(size))
    img[...] = np.asarray(pil)
    return img


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
    img: np.ndarray, text: str, *, height: int = 32, size: int = 12, fill=(255, 255, 255)
) -> np.ndarray:
    """Like :func:`label_above`, one line per ``\\n`` in ``text``; a line too wide for the image
    is drawn in a smaller font (down to 6 px), then wrapped onto sub-lines in its share of the
    height, so a long name is shrunk or wrapped, never cut."""
    from PIL import Image, ImageDraw

    width = img.shape[1]
    strip = np.empty((height, width, 3), np.uint8)
    strip[:] = fill
    pil = Image.fromarray(strip)
    draw = ImageDraw.Draw(pil)
    lines = text.split("\n")
    line_h = height // len(lines)
    y = 0
    for ln in lines:
        for k in range(1, max(1, line_h // 7) + 1):
            pieces = _wrap(ln, k)
            s = min(size, max(6, line_h // k - 2))
            while s > 6 and max(draw.textlength(p, font=_font(s)) for p in pieces) > width - 4:
                s -= 1
            if max(draw.textlength(p, font=_font(s)) for p in pieces) <= width - 4:
                break
        sub_h = line_h // len(pieces)
        for n, p in enumerate(pieces):
            draw.text(
                (2, y + n * sub_h + max(0, (sub_h - s) // 2 - 1)), p, fill=(0, 0, 0), font=_font(s)
            )
        y += line_h
    return np.concatenate([np.asarray(pil), img[..., :3]], axis=0)


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
