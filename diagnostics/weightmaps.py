"""Weight maps: Brohan-style summary frames of a one-hidden-layer autoencoder, and weight images.

A summary frame (1920 x 1080 RGB) shows, left half, each hidden neuron's input weights (top) and
output weights (bottom) as lat:lon maps with a bar chart of the neurons' magnitudes between them,
and, right half, a fixed validation field before (red) and after (blue) the autoencoder, a
reconstructed-vs-original scatter and the loss curve.

Frames of one run are comparable: the neuron order and the bar limit come from one reference state
(default: the last snapshot), each neuron's maps are multiplied by the sign of its plotted quantity
so its bar is positive, map colour limits are fixed per run, and the loss axes span the whole run.

Speed: the map grids and bars are numpy arrays (colormap lookup tables, one fancy-index resample
for all maps), the labels are drawn once per context, and matplotlib draws only the right-hand
panel on one reused figure with blitting (no PNG round trip).

Usage::

    ctx = summary_context(run_dir)                       # picklable; reads snapshots/meta.json
    frame = render_summary_frame(ctx, load_snapshot(p))  # (1080, 1920, 3) uint8
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .render import CMAPS, colormap_lut
from .snapshots import list_snapshots, load_snapshot, read_meta
from .weight_images import weight_image  # noqa: F401 - re-exported

FRAME_H, FRAME_W = 1080, 1920
BG = (224, 224, 224)
MAP_CMAP = CMAPS["weights"]
NAN_RGB = (160, 160, 160)
# Left half, rows from the top (Brohan: input block top 40 %, bar chart in the middle 15 %).
IN_BLOCK = (0, 432)
BAR_BLOCK = (446, 632)
OUT_BLOCK = (648, 1080)
LEFT_W = 960
TITLE_H = 20
LABEL_H = 13
CELL_PAD = 4
KEYS = {
    "enc_w": "weights/AE/encoder.weight",
    "enc_b": "weights/AE/encoder.bias",
    "dec_w": "weights/AE/decoder.weight",
    "field": "probe/field",
    "recon": "probe/recon",
    "loss_train": "scalar/loss/train",
    "loss_val": "scalar/loss/val",
}


# ------------------------------------------------------------------------------ neuron quantities
def neuron_quantity(enc_w: np.ndarray, enc_b: np.ndarray, quantity: str = "bias") -> np.ndarray:
    """Per hidden neuron: its encoder bias (Brohan) or the L2 norm of its input weights."""
    # enc_w (n_hidden, F), enc_b (n_hidden,)
    enc_w, enc_b = np.asarray(enc_w), np.asarray(enc_b)
    if enc_w.ndim != 2 or enc_b.shape != (enc_w.shape[0],):
        raise ValueError(
            f"neuron_quantity: encoder weight {enc_w.shape} and bias {enc_b.shape} disagree"
        )
    if quantity == "bias":
        return enc_b.astype(np.float64)
    if quantity == "norm":
        return np.sqrt((enc_w.astype(np.float64) ** 2).sum(axis=1))
    raise ValueError(f"quantity must be 'bias' or 'norm', got {quantity!r}")


def neuron_order(q: np.ndarray) -> tuple[np.ndarray, float]:
    """Neurons sorted by |q|, largest first (ties by index), and the bar limit 1.05 max|q|."""
    mag = np.abs(np.asarray(q, dtype=np.float64))
    order = np.lexsort((np.arange(len(mag)), -mag))
    top = float(mag.max()) if len(mag) else 0.0
    return order, (1.05 * top if top > 0 else 1.0)


def signed_maps(
    enc_w: np.ndarray, dec_w: np.ndarray, q: np.ndarray, shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Input maps (n, H, W), output maps (n, H, W) and bars (n,), each neuron times sign(q) (0 -> +1)."""
    # enc_w (n, F), dec_w (F, n), q (n,)
    n, f = enc_w.shape
    if dec_w.shape != (f, n) or q.shape != (n,) or shape[0] * shape[1] != f:
        raise ValueError(
            f"signed_maps: enc {enc_w.shape}, dec {dec_w.shape}, q {q.shape}, field {shape}"
        )
    s = np.where(q < 0, -1.0, 1.0)
    ins = (enc_w * s[:, None]).reshape(n, *shape)
    outs = (dec_w.T * s[:, None]).reshape(n, *shape)
    return ins, outs, q * s


def _limit(w: np.ndarray) -> float:
    """Symmetric colour limit |mean| + 3 std (Brohan's mean +/- 3 std, centred on zero)."""
    w = np.asarray(w, dtype=np.float64)
    lim = abs(float(w.mean())) + 3.0 * float(w.std())
    return lim if lim > 0 else 1.0


# ----------------------------------------------------------------------------------- the context
@dataclass
class SummaryContext:
    """Everything run-wide that a frame needs; picklable (figure state is rebuilt per process)."""

    shape: tuple[int, int]
    lat: np.ndarray
    lon: np.ndarray
    mask: np.ndarray  # (H, W) bool
    offset: float
    scale: float
    variable: str
    units: str
    probe_label: str
    quantity: str
    order: np.ndarray
    bar_max: float
    clim: str
    clim_in: float
    clim_out: float
    loss_steps: np.ndarray
    loss_train: np.ndarray
    loss_val: np.ndarray
    total_steps: int
    reference_step: int
    keys: dict = field(default_factory=lambda: dict(KEYS))
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_cache"] = {}  # matplotlib objects and the label layer are rebuilt lazily
        return state


def context_from_arrays(
    meta: dict,
    reference: dict,
    *,
    quantity: str = "bias",
    clim: str = "run",
    clim_limits: tuple[float, float] | None = None,
    loss_steps=(),
    loss_train=(),
    loss_val=(),
    total_steps: int | None = None,
) -> SummaryContext:
    """A context from run metadata and one reference state (a snapshot dict); used during training."""
    if clim not in ("run", "frame"):
        raise ValueError(f"clim must be 'run' or 'frame', got {clim!r}")
    keys = {**KEYS, **meta.get("keys", {})}
    enc_w, enc_b, dec_w = (np.asarray(reference[keys[k]]) for k in ("enc_w", "enc_b", "dec_w"))
    order, bar_max = neuron_order(neuron_quantity(enc_w, enc_b, quantity))
    if clim_limits is None:
        clim_limits = (_limit(enc_w), _limit(dec_w))
    norm = meta.get("normalisation", {"offset": 0.0, "scale": 1.0})
    steps = np.asarray(loss_steps, dtype=np.int64)
    ref_step = int(np.asarray(reference.get("step", steps[-1] if len(steps) else 0)))
    if total_steps is None:
        total_steps = int(meta.get("total_steps", steps.max() if len(steps) else 1))
    shape = tuple(int(s) for s in meta["shape"])
    return SummaryContext(
        shape=shape,
        lat=np.asarray(meta["lat"], dtype=np.float64),
        lon=np.asarray(meta["lon"], dtype=np.float64),
        mask=np.asarray(meta.get("mask", np.ones(shape)), dtype=bool),
        offset=float(norm["offset"]),
        scale=float(norm["scale"]),
        variable=str(meta.get("variable", "")),
        units=str(meta.get("units", "")),
        probe_label=str(meta.get("probe_label", "")),
        quantity=quantity,
        order=order,
        bar_max=bar_max,
        clim=clim,
        clim_in=float(clim_limits[0]),
        clim_out=float(clim_limits[1]),
        loss_steps=steps,
        loss_train=np.asarray(loss_train, dtype=np.float64),
        loss_val=np.asarray(loss_val, dtype=np.float64),
        total_steps=max(1, int(total_steps)),
        reference_step=ref_step,
        keys=keys,
    )


def summary_context(
    run_dir: str | os.PathLike,
    reference: str | int = "last",
    quantity: str = "bias",
    clim: str = "run",
) -> SummaryContext:
    """Run-wide context from a run's snapshots: order and bar limit from ``reference`` ("last",
    "first" or a step), colour limits over all snapshots, the whole loss history."""
    meta = read_meta(run_dir)
    if meta.get("kind") != "autoencoder":
        raise ValueError(
            f"{run_dir}: snapshots are of kind {meta.get('kind')!r}, not 'autoencoder'"
        )
    snaps = list_snapshots(run_dir)
    if not snaps:
        raise FileNotFoundError(f"{Path(run_dir) / 'snapshots'}: no snapshots")
    keys = {**KEYS, **meta.get("keys", {})}
    if reference == "last":
        ref_path = snaps[-1][1]
    elif reference == "first":
        ref_path = snaps[0][1]
    else:
        by_step = dict(snaps)
        if int(reference) not in by_step:
            raise KeyError(
                f"{run_dir}: no snapshot at step {reference}; steps are {sorted(by_step)}"
            )
        ref_path = by_step[int(reference)]
    steps, tr, va = [], [], []
    lim_in = lim_out = 0.0
    for step, path in snaps:
        with np.load(path, allow_pickle=False) as z:  # reads only the members asked for
            steps.append(step)
            tr.append(float(z[keys["loss_train"]]) if keys["loss_train"] in z.files else np.nan)
            va.append(float(z[keys["loss_val"]]) if keys["loss_val"] in z.files else np.nan)
            if clim == "run":
                lim_in = max(lim_in, _limit(z[keys["enc_w"]]))
                lim_out = max(lim_out, _limit(z[keys["dec_w"]]))
    return context_from_arrays(
        meta,
        load_snapshot(ref_path),
        quantity=quantity,
        clim=clim,
        clim_limits=(lim_in, lim_out) if clim == "run" else None,
        loss_steps=steps,
        loss_train=tr,
        loss_val=va,
        total_steps=max(int(meta.get("total_steps", 0)), steps[-1]),
    )


# ------------------------------------------------------------------------------------ geometry
def _grid(n: int, shape: tuple[int, int], height: int, width: int) -> tuple[int, int, int, int]:
    """(ncols, nrows, map_h, map_w) of the grid that makes the maps largest in the block."""
    h, w = shape
    best, best_s = (1, n), -1.0
    for ncols in range(1, n + 1):
        nrows = -(-n // ncols)
        cw = (width - CELL_PAD * (ncols + 1)) / ncols
        ch = (height - CELL_PAD * (nrows + 1)) / nrows - LABEL_H
        s = min(cw / w, ch / h)
        if s > best_s:
            best_s, best = s, (ncols, nrows)
    s = max(best_s, 1e-9)
    return best[0], best[1], max(1, int(h * s)), max(1, int(w * s))


def _grid_origins(
    ncols: int, nrows: int, mh: int, mw: int, top: int, height: int
) -> list[tuple[int, int]]:
    """Top-left (y, x) of each map (below its label strip), row-major, centred in the block."""
    gw = ncols * mw + (ncols - 1) * CELL_PAD
    gh = nrows * (mh + LABEL_H) + (nrows - 1) * CELL_PAD
    x0 = (LEFT_W - gw) // 2
    y0 = top + (height - gh) // 2
    return [
        (y0 + r * (mh + LABEL_H + CELL_PAD) + LABEL_H, x0 + c * (mw + CELL_PAD))
        for r in range(nrows)
        for c in range(ncols)
    ]


def _layout(ctx: SummaryContext) -> dict:
    n = len(ctx.order)
    top_in, bot_in = IN_BLOCK[0] + TITLE_H, IN_BLOCK[1]
    top_out, bot_out = OUT_BLOCK[0] + TITLE_H, OUT_BLOCK[1]
    ncols, nrows, mh, mw = _grid(n, ctx.shape, bot_in - top_in, LEFT_W)
    h, w = ctx.shape
    return {
        "mh": mh,
        "mw": mw,
        "ri": (np.arange(mh) * h) // mh,
        "ci": (np.arange(mw) * w) // mw,
        "in_xy": _grid_origins(ncols, nrows, mh, mw, top_in, bot_in - top_in),
        "out_xy": _grid_origins(ncols, nrows, mh, mw, top_out, bot_out - top_out),
        # bar plot area: y from top to bottom, x left to right
        "bar": (BAR_BLOCK[0] + 18, BAR_BLOCK[1] - 18, 70, LEFT_W - 20),
    }


def _static_layer(ctx: SummaryContext) -> np.ndarray:
    """Background, titles, neuron labels and the bar chart's axes: drawn once per context."""
    from PIL import Image, ImageDraw

    from .render import _font

    lay = _layout(ctx)
    img = np.empty((FRAME_H, FRAME_W, 3), np.uint8)
    img[:] = BG
    y0, y1, x0, x1 = lay["bar"]
    img[y0 : y1 + 1, x0 : x1 + 1] = 255
    img[y1, x0 : x1 + 1] = 0
    img[y0 : y1 + 1, x0] = 0
    pil = Image.fromarray(img)
    d = ImageDraw.Draw(pil)
    f_title, f_small = _font(15), _font(11)
    qname = "encoder bias" if ctx.quantity == "bias" else "input-weight norm"
    d.text((6, IN_BLOCK[0] + 2), "input weights (x sign of bar)", fill=(0, 0, 0), font=f_title)
    d.text((6, OUT_BLOCK[0] + 2), "output weights (x sign of bar)", fill=(0, 0, 0), font=f_title)
    d.text(
        (x0, BAR_BLOCK[0]),
        f"|{qname}| per neuron, order from step {ctx.reference_step}",
        fill=(0, 0, 0),
        font=f_small,
    )
    for xy in (lay["in_xy"], lay["out_xy"]):
        for slot, neuron in enumerate(ctx.order):
            y, x = xy[slot]
            d.text((x + 1, y - LABEL_H), str(int(neuron)), fill=(0, 0, 0), font=f_small)
    for frac in (0.0, 0.5, 1.0):
        yy = int(round(y1 - frac * (y1 - y0)))
        d.line([(x0 - 4, yy), (x0, yy)], fill=(0, 0, 0))
        d.text((6, yy - 7), f"{frac * ctx.bar_max:.3g}", fill=(0, 0, 0), font=f_small)
    n = len(ctx.order)
    slot = (x1 - x0) / max(n, 1)
    for i, neuron in enumerate(ctx.order):
        d.text(
            (int(x0 + i * slot + slot / 2 - 6), y1 + 2),
            str(int(neuron)),
            fill=(0, 0, 0),
            font=f_small,
        )
    return np.asarray(pil).copy()


# ------------------------------------------------------------------------- the matplotlib panel
class _Panel:
    """Right half: contours, scatter and loss on one reused figure, drawn by blitting."""

    def __init__(self, ctx: SummaryContext, field_phys: np.ndarray) -> None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        self.fig = Figure(figsize=(9.6, 10.8), dpi=100, facecolor=np.array(BG) / 255.0)
        self.canvas = FigureCanvasAgg(self.fig)
        valid = ctx.mask
        vals = field_phys[valid]
        lo, hi = float(vals.min()), float(vals.max())
        self.levels = _nice_levels(lo, hi)
        lon2d, lat2d = np.meshgrid(ctx.lon, ctx.lat)
        self.lon2d, self.lat2d = lon2d, lat2d
        ax = self.fig.add_axes((0.08, 0.52, 0.88, 0.41))
        ax.set_facecolor("white")
        shown = np.where(valid, field_phys, np.nan)
        ax.contour(lon2d, lat2d, shown, levels=self.levels, colors="red", linewidths=1.0)
        if not valid.all():
            ax.contourf(lon2d, lat2d, (~valid).astype(float), levels=[0.5, 1.5], colors=["0.75"])
        ax.set_xlim(ctx.lon.min(), ctx.lon.max())
        ax.set_ylim(ctx.lat.min(), ctx.lat.max())
        ax.set_xlabel("longitude")
        ax.set_ylabel("latitude")
        ax.set_title(
            f"{ctx.variable} [{ctx.units}] {ctx.probe_label}: original (red), autoencoded (blue)",
            fontsize=10,
        )
        self.ax_map = ax
        pad = 0.05 * (hi - lo if hi > lo else 1.0)
        ax = self.fig.add_axes((0.08, 0.06, 0.38, 0.38))
        ax.set_xlim(lo - pad, hi + pad)
        ax.set_ylim(lo - pad, hi + pad)
        ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="0.5", lw=0.8)
        ax.set_xlabel(f"original [{ctx.units}]")
        ax.set_ylabel(f"autoencoded [{ctx.units}]")
        self.sc = ax.scatter(vals, vals, s=3, c="blue", alpha=0.5, animated=True)
        self.ax_sc = ax
        ax = self.fig.add_axes((0.58, 0.06, 0.38, 0.38))
        finite = np.concatenate(
            [ctx.loss_train[np.isfinite(ctx.loss_train)], ctx.loss_val[np.isfinite(ctx.loss_val)]]
        )
        finite = finite[finite > 0]
        ax.set_xlim(0, ctx.total_steps)
        if len(finite):
            ax.set_yscale("log")
            ax.set_ylim(finite.min() / 1.5, finite.max() * 1.5)
        # the whole run, faint; the part up to the current step is drawn on top each frame
        ax.plot(ctx.loss_steps, ctx.loss_train, color="0.8", lw=1)
        ax.plot(ctx.loss_steps, ctx.loss_val, color="0.8", lw=1, ls="--")
        (self.l_tr,) = ax.plot([], [], color="black", lw=1.2, label="train", animated=True)
        (self.l_va,) = ax.plot(
            [], [], color="tab:orange", lw=1.2, ls="--", label="validation", animated=True
        )
        self.now = ax.axvline(0, color="tab:red", lw=0.8, animated=True)
        ax.legend(loc="upper right", fontsize=8)
        ax.set_xlabel("step")
        ax.set_ylabel("MSE (normalised)")
        self.ax_loss = ax
        self.title = self.fig.text(0.02, 0.99, "", ha="left", va="top", fontsize=14, animated=True)
        self.canvas.draw()
        self.bg = self.canvas.copy_from_bbox(self.fig.bbox)
        self.recon_cs = None

    def render(
        self, ctx: SummaryContext, field_phys: np.ndarray, recon_phys: np.ndarray, step: int
    ) -> np.ndarray:
        self.canvas.restore_region(self.bg)
        valid = ctx.mask
        shown = np.where(valid, recon_phys, np.nan)
        if self.recon_cs is not None:
            self.recon_cs.remove()
        self.recon_cs = self.ax_map.contour(
            self.lon2d, self.lat2d, shown, levels=self.levels, colors="blue", linewidths=1.0
        )
        self.recon_cs.set_animated(True)
        self.sc.set_offsets(np.column_stack([field_phys[valid], recon_phys[valid]]))
        upto = ctx.loss_steps <= step
        self.l_tr.set_data(ctx.loss_steps[upto], ctx.loss_train[upto])
        self.l_va.set_data(ctx.loss_steps[upto], ctx.loss_val[upto])
        self.now.set_xdata([step, step])
        self.title.set_text(f"step {step}")
        self.ax_map.draw_artist(self.recon_cs)
        self.ax_sc.draw_artist(self.sc)
        for a in (self.l_tr, self.l_va, self.now):
            self.ax_loss.draw_artist(a)
        self.fig.draw_artist(self.title)
        return np.asarray(self.canvas.buffer_rgba())[..., :3]


def _nice_levels(lo: float, hi: float, n: int = 12) -> np.ndarray:
    """About ``n`` contour levels at a round interval covering [lo, hi]."""
    span = hi - lo if hi > lo else 1.0
    raw = span / n
    mag = 10 ** np.floor(np.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=10 * mag)
    return np.arange(np.floor(lo / step) * step, hi + step, step)


# -------------------------------------------------------------------------------------- frames
def _colour(maps: np.ndarray, vmin: float, vmax: float) -> np.ndarray:
    """(n, h, w) floats -> (n, h, w, 3) uint8 through the weights LUT; NaN grey."""
    lut = colormap_lut(MAP_CMAP)
    k = len(lut)
    span = vmax - vmin if vmax > vmin else 1.0
    idx = np.nan_to_num((maps - vmin) * ((k - 1) / span), nan=0.0, posinf=k - 1, neginf=0.0)
    out = lut[np.clip(idx + 0.5, 0, k - 1).astype(np.intp)]
    nan = np.isnan(maps)
    if nan.any():
        out[nan] = NAN_RGB
    return out


def render_summary_frame(ctx: SummaryContext, snapshot: dict) -> np.ndarray:
    """One 1920 x 1080 RGB uint8 summary frame of a snapshot, laid out as Brohan's."""
    keys = ctx.keys
    enc_w, enc_b, dec_w = (
        np.asarray(snapshot[keys[k]], dtype=np.float64) for k in ("enc_w", "enc_b", "dec_w")
    )
    n = len(ctx.order)
    if enc_w.shape[0] != n:
        raise ValueError(f"snapshot has {enc_w.shape[0]} hidden neurons, the context {n}")
    q = neuron_quantity(enc_w, enc_b, ctx.quantity)
    ins, outs, bars = signed_maps(enc_w, dec_w, q, ctx.shape)
    if "layout" not in ctx._cache:
        ctx._cache["layout"] = _layout(ctx)
        ctx._cache["static"] = _static_layer(ctx)
    lay = ctx._cache["layout"]
    frame = ctx._cache["static"].copy()

    if ctx.clim == "frame":
        lims = [
            (float(w.mean()) - 3 * float(w.std()), float(w.mean()) + 3 * float(w.std()))
            for w in (enc_w, dec_w)
        ]
    else:
        lims = [(-ctx.clim_in, ctx.clim_in), (-ctx.clim_out, ctx.clim_out)]
    ri, ci = lay["ri"], lay["ci"]
    mh, mw = lay["mh"], lay["mw"]
    for maps, xy, (vmin, vmax) in ((ins, lay["in_xy"], lims[0]), (outs, lay["out_xy"], lims[1])):
        stack = maps[ctx.order]
        stack = np.where(ctx.mask[None], stack, np.nan)
        rgb = _colour(stack[:, ri][:, :, ci], vmin, vmax)
        for slot in range(n):
            y, x = xy[slot]
            frame[y : y + mh, x : x + mw] = rgb[slot]

    y0, y1, x0, x1 = lay["bar"]
    slot = (x1 - x0) / max(n, 1)
    heights = np.clip(bars[ctx.order] / ctx.bar_max, 0.0, 1.0) * (y1 - y0 - 1)
    for i in range(n):
        xa = int(x0 + 1 + i * slot + 0.15 * slot)
        xb = max(xa + 1, int(x0 + 1 + (i + 1) * slot - 0.15 * slot))
        top = int(round(y1 - heights[i]))
        frame[top:y1, xa:xb] = (110, 110, 110)

    field_n = np.asarray(snapshot[keys["field"]], dtype=np.float64).reshape(ctx.shape)
    recon_n = np.asarray(snapshot[keys["recon"]], dtype=np.float64).reshape(ctx.shape)
    field_phys = field_n * ctx.scale + ctx.offset
    recon_phys = recon_n * ctx.scale + ctx.offset
    if "panel" not in ctx._cache:
        ctx._cache["panel"] = _Panel(ctx, field_phys)
    step = int(np.asarray(snapshot.get("step", ctx.reference_step)))
    frame[:, LEFT_W:] = ctx._cache["panel"].render(ctx, field_phys, recon_phys, step)
    return frame
