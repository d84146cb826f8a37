"""Weight images: a layer's kernels as one picture, the same in TensorBoard, videos and notebooks.

keras_weight_animator's view, drawn live: every convolution and linear layer of each model becomes
one image per write, ``weights_img/<model>/<layer>``:

* layout (:func:`weight_image`): a linear layer's (out, in) matrix as is; a convolution's
  (out, in, *kernel) as an out x in grid of kernel tiles one grey pixel apart, a 3D kernel
  (kd, kh, kw) drawn as its kd depth slices side by side (kh x kd * kw); the title says which.
  Rows wider than the image are folded top to bottom (:func:`weight_to_2d`).
* colour: ``CMAPS["weights"]`` (RdBu_r), symmetric about zero. The limit is fixed per layer at its
  first write (max |w| then), so frames compare across steps; weights that outgrow it saturate and
  the title says so. The colour bar under the image shows the scale.
* optional deltas (``deltas=True``): the change since the previous write,
  ``weights_img_delta/<model>/<layer>``, with their own limit fixed at the first delta.

Biases and other 1-D or tiny tensors say nothing as pictures; their size is in the scalar
``weights/<model>/<param>/norm`` (and the weight histograms) of :mod:`diagnostics.params`.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from . import tags
from .render import CMAPS, apply_cmap, label_above, upscale_nearest, with_colorbar

GAP_RGB = (160, 160, 160)  # separators between kernel tiles (NaN in the 2D layout)
LAYER_TYPES = (nn.modules.conv._ConvNd, nn.Linear)
MIN_NUMEL = 8  # fewer weights than this: a picture says nothing
MAX_ASPECT = 4  # a longer side more than this many times the shorter one is folded
TITLE_MIN_W = 360  # px: narrow images are padded so their titles stay readable


def weight_image(tensor) -> np.ndarray:
    """Any parameter as a 2D float array, deterministically.

    0-d -> (1, 1); 1-d (N,) -> (1, N); 2-d as is (out, in); k-d (O, I, *kernel) -> an O x I grid of
    kernels separated by NaN lines (drawn grey), each kernel laid out 2D with its leading kernel
    dims side by side: (kh, kd * kw) for a 3D kernel (kd, kh, kw), (1, k) for a 1D kernel;
    pointwise kernels (all kernel sizes 1) -> the (O, I) matrix.
    """
    a = np.asarray(tensor.detach().cpu() if hasattr(tensor, "detach") else tensor, dtype=np.float32)
    if a.ndim == 0:
        return a.reshape(1, 1)
    if a.ndim == 1:
        return a.reshape(1, -1)
    if a.ndim == 2:
        return a
    o, i = a.shape[:2]
    if a[0, 0].size == 1:  # pointwise (1x1) kernels: the (out, in) matrix itself, no tiles
        return a.reshape(o, i)
    k = a.reshape(o, i, -1, *a.shape[-2:]) if a.ndim >= 4 else a.reshape(o, i, 1, 1, a.shape[-1])
    # (O, I, L, kh, kw): the L leading kernel slices go side by side -> (O, I, kh, L * kw)
    ll, kh, kw = k.shape[2:]
    cells = k.transpose(0, 1, 3, 2, 4).reshape(o, i, kh, ll * kw)
    ch, cw = kh + 1, ll * kw + 1
    out = np.full((o * ch - 1, i * cw - 1), np.nan, np.float32)
    for r in range(o):
        for c in range(i):
            out[r * ch : r * ch + kh, c * cw : c * cw + ll * kw] = cells[r, c]
    return out


def _fold(img: np.ndarray, limit: int) -> np.ndarray:
    # rows longer than ``limit``: cut into chunks of ``limit`` columns, stacked one NaN row apart
    n = -(-img.shape[1] // limit)
    padded = np.full((img.shape[0], n * limit), np.nan, np.float32)
    padded[:, : img.shape[1]] = img
    sep = np.full((1, limit), np.nan, np.float32)
    parts = [x for c in range(n) for x in (padded[:, c * limit : (c + 1) * limit], sep)]
    return np.concatenate(parts[:-1], axis=0)


def weight_to_2d(w, max_cols: int = 1920, max_rows: int = 1880) -> np.ndarray:
    """:func:`weight_image`, folded to a readable shape and to fit: a thin matrix (one side more
    than ``MAX_ASPECT`` times the other) is cut along its long side into chunks laid one NaN line
    apart, about 16:9 overall; then wider than ``max_cols`` -> chunks of ``max_cols`` columns
    stacked top to bottom; taller than ``max_rows`` -> chunks side by side. So Brohan's
    (32, 16380) encoder keeps one pixel per weight, as 17 bands of 964 columns."""
    return _fold_to_fit(np.asarray(weight_image(w), dtype=np.float32), max_cols, max_rows)


def _fold_to_fit(img: np.ndarray, max_cols: int, max_rows: int) -> np.ndarray:
    h, w = img.shape
    if min(h, w) >= 2 and max(h, w) > MAX_ASPECT * min(h, w):
        # k bands of the long side L: (k (s + 1)) / (L / k) ~ 9 / 16 for the short side s
        s, long = min(h, w), max(h, w)
        k = max(2, int(round(np.sqrt(9 / 16 * long / (s + 1)))))
        chunk = -(-long // k)
        img = _fold(img, chunk) if w > h else _fold(img.T, chunk).T  # tall: bands side by side
    if img.shape[1] > max_cols:
        img = _fold(img, max_cols)
    elif img.shape[0] > max_rows:
        img = _fold(img.T, max_rows).T
    return np.ascontiguousarray(img)


def fit_factor(shape: tuple[int, int], max_w: int, max_h: int) -> int:
    """Largest integer upscale keeping (h, w) within (max_h, max_w); never below 1."""
    h, w = max(int(shape[0]), 1), max(int(shape[1]), 1)
    return max(1, min(max_w // w, max_h // h))


def weight_frame(w, lim: float, *, max_w: int = 1920, max_h: int = 1880) -> np.ndarray:
    """RGB (H, W, 3) of one tensor: ``CMAPS["weights"]`` over [-lim, lim], integer upscaled."""
    return _frame_2d(weight_to_2d(w, max_cols=max_w, max_rows=max_h), lim, max_w, max_h)


def _frame_2d(img: np.ndarray, lim: float, max_w: int, max_h: int) -> np.ndarray:
    rgb = apply_cmap(img, -lim, lim, CMAPS["weights"], nan_rgb=GAP_RGB)
    return upscale_nearest(rgb, fit_factor(img.shape, max_w, max_h))


def layout_note(shape: tuple[int, ...]) -> str:
    """What the picture of a tensor of ``shape`` shows, for its title."""
    if len(shape) == 2 or (len(shape) > 2 and int(np.prod(shape[2:])) == 1):
        return f"rows: {shape[0]} outputs, columns: {shape[1]} inputs"
    if len(shape) == 5:
        kd, kh, kw = shape[2:]
        return f"{shape[0]} out x {shape[1]} in tiles of {kh}x{kw}, {kd} depth slices side by side"
    if len(shape) >= 3:
        k = "x".join(str(s) for s in shape[2:])
        return f"{shape[0]} out x {shape[1]} in tiles of {k} kernels"
    return f"shape {tuple(shape)}"


def picture_worthy(shape: tuple[int, ...]) -> bool:
    """A weight matrix or kernel bank with enough values to show: not biases or single values."""
    return len(shape) >= 2 and int(np.prod(shape)) >= MIN_NUMEL


def titled_weight_image(
    w: np.ndarray, lim: float, title: str, note: str, *, max_px: int, label: str = "weight"
) -> np.ndarray:
    """:func:`weight_frame` with its colour bar below and two title lines above."""
    full = np.asarray(weight_image(w), dtype=np.float32)
    shown = _fold_to_fit(full, max_px, max_px)  # the layout is computed once
    if full.shape != shown.shape:
        note += f"; folded from {full.shape[0]}x{full.shape[1]} px into {shown.shape[0]}x{shown.shape[1]}"
    rgb = _frame_2d(shown, lim, max_px, max_px)
    if rgb.shape[1] < TITLE_MIN_W:
        pad = np.full((rgb.shape[0], TITLE_MIN_W, 3), 255, np.uint8)
        pad[:, : rgb.shape[1]] = rgb
        rgb = pad
    rgb = with_colorbar(rgb, -lim, lim, CMAPS["weights"], label=label)
    # wrap, never cut: about 8 px per character at 14 px, 7 at 12 px
    for line in reversed(textwrap.wrap(note, max(20, rgb.shape[1] // 7))):
        rgb = label_above(rgb, line, size=12, height=18)
    for line in reversed(textwrap.wrap(title, max(20, rgb.shape[1] // 8))):
        rgb = label_above(rgb, line)
    return rgb


class WeightImages:
    """Live weight images of every conv and linear layer of named models.

    Args:
        models: name -> module (DDP wrappers unwrapped by the caller or here via ``.module``).
        writer: a :class:`diagnostics.Writer`; only its writing rank copies anything.
        deltas: also write the change since the previous write.
        max_px: longest side of the weight picture before title and colour bar.
    """

    def __init__(
        self,
        models: Mapping[str, nn.Module],
        writer,
        *,
        deltas: bool = False,
        max_px: int = 480,
    ) -> None:
        self.writer = writer
        self.deltas = bool(deltas)
        self.max_px = int(max_px)
        self.layers: dict[str, dict[str, torch.Tensor]] = {}
        for name, model in models.items():
            model = getattr(model, "module", model)
            self.layers[name] = {
                layer: m.weight
                for layer, m in model.named_modules()
                if isinstance(m, LAYER_TYPES)
                and isinstance(getattr(m, "weight", None), torch.Tensor)
                and picture_worthy(tuple(m.weight.shape))
            }
        self.lim: dict[str, float] = {}
        self.lim_delta: dict[str, float] = {}
        self.first_step: dict[str, int] = {}
        self._prev: dict[str, np.ndarray] = {}

    def tags(self) -> list[str]:
        """Every tag :meth:`write` writes (deltas from the second write on)."""
        out = [tags.weights_img(f"{m}/{layer}") for m, ls in self.layers.items() for layer in ls]
        return out + (
            [t.replace("weights_img/", "weights_img_delta/", 1) for t in out] * self.deltas
        )

    def _host(self, weights: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        # one device-to-host copy per model and write: all its weights in one flat buffer
        flat = torch.cat([w.detach().reshape(-1).float() for w in weights.values()]).cpu().numpy()
        out, i = {}, 0
        for layer, w in weights.items():
            out[layer] = flat[i : i + w.numel()].reshape(tuple(w.shape))
            i += w.numel()
        return out

    def write(self, step: int) -> None:
        """One image per layer (and delta) at ``step``; cost accounted as ``weights_img``."""
        if self.writer is None or not self.writer.is_writer:
            return
        with self.writer.cost("weights_img"):
            for model, weights in self.layers.items():
                if not weights:
                    continue
                for layer, w in self._host(weights).items():
                    self._write_layer(f"{model}/{layer}", w, step)

    def _write_layer(self, key: str, w: np.ndarray, step: int) -> None:
        peak = float(np.abs(w).max()) if w.size else 0.0
        if key not in self.lim:
            self.lim[key] = peak if peak > 0 else 1e-6
            self.first_step[key] = step
        lim, s0 = self.lim[key], self.first_step[key]
        over = f"; max |w| {peak:.3g} saturates" if peak > lim * (1 + 1e-6) else ""
        note = layout_note(w.shape)
        title = f"{key}.weight {tuple(w.shape)}, scale +-{lim:.3g} fixed at step {s0}{over}"
        img = titled_weight_image(w, lim, title, note, max_px=self.max_px)
        self.writer.image(tags.weights_img(key), img, step)
        if not self.deltas:
            return
        prev = self._prev.get(key)
        self._prev[key] = w.copy()
        if prev is None:
            return
        d = w - prev
        dpeak = float(np.abs(d).max())
        if key not in self.lim_delta:
            self.lim_delta[key] = dpeak if dpeak > 0 else 1e-12
        dl = self.lim_delta[key]
        title = f"{key}.weight change since the previous write, scale +-{dl:.3g}"
        img = titled_weight_image(d, dl, title, note, max_px=self.max_px, label="change")
        self.writer.image(tags.weights_img(key, delta=True), img, step)


def snapshot_images(
    first: Mapping, last: Mapping, first_step: int, *, max_px: int = 480
) -> dict[str, np.ndarray]:
    """Weight images of the snapshot ``last`` exactly as TensorBoard's ``weights_img/`` shows
    them: every picture-worthy ``weights/<model>/<layer>.weight`` array, scale fixed from the
    snapshot ``first`` (taken at ``first_step``). For notebooks; videos use :func:`weight_frame`."""
    out = {}
    for key, w in last.items():
        w = np.asarray(w)
        if not (key.startswith("weights/") and key.endswith(".weight")) or not picture_worthy(
            w.shape
        ):
            continue
        name = key[len("weights/") : -len(".weight")]
        ref = np.asarray(first.get(key, w), dtype=np.float32)
        lim = float(np.abs(ref).max()) or 1e-6
        title = f"{name}.weight {tuple(w.shape)}, scale +-{lim:.3g} fixed at step {first_step}"
        out[name] = titled_weight_image(w, lim, title, layout_note(w.shape), max_px=max_px)
    return out
