"""Embeddings: what a network learned, as clusters of examples (after convml_tt).

Every example (a validation field for the autoencoder, a slice sample for the GAN critic) is
embedded as a vector; the vectors are kept as an ``xarray.DataArray`` with dims
``(sample, emb_dim)`` and written to NetCDF. Three views of them:

- :func:`dendrogram`: hierarchical clustering (scipy ``linkage``, Ward by default), truncated to
  ``n_clusters_max`` leaves, a column of example thumbnails under each leaf and the flat cluster
  label of every sample, consistent with the leaves drawn.
- :func:`scatter_annotated`: two embedding dims (or two principal components), all points faint,
  a seeded subset highlighted with thumbnails on connector lines.
- :class:`EmbeddingLogger`: both figures to TensorBoard (``embed/<model>/dendrogram``,
  ``embed/<model>/scatter``), the NetCDF file ``RUN/embeddings/<model>_step<8 digits>.nc`` (the
  embeddings and their thumbnails, so a notebook can redraw both figures from the run alone) and a
  projector export whose thumbnail sprite stays within the projector's 8192 px limit.

Thumbnails use one colormap and fixed limits per run, so figures from different steps compare.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from . import tags
from .render import CMAPS, apply_cmap, tile
from .rundir import commit, tmp_path
from .stats import to_numpy

SPRITE_MAX_PX = 8192  # the projector does not show sprites larger than 8192 x 8192
FILL = (224, 224, 224)
_NC_NAME = re.compile(r"^(?P<model>.+)_step(?P<step>\d{8})\.nc$")


_host = to_numpy  # diagnostics.stats: the one host copy of an array


# ------------------------------------------------------------------------------ data array
def _netcdf_attr(key: str, value):
    """A NetCDF-safe version of one attribute value, or a TypeError naming the key."""
    if isinstance(value, bool | np.bool_):
        return int(value)  # netCDF has no boolean attribute type
    if isinstance(value, str | int | float | np.integer | np.floating):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, list | tuple | np.ndarray):
        arr = np.asarray(value)
        if arr.ndim == 1 and arr.dtype.kind in "iuf":
            return arr
        if arr.ndim == 1 and arr.dtype.kind == "b":
            return arr.astype(np.int8)
    raise TypeError(
        f"attribute {key!r}: {type(value).__name__} is not NetCDF-safe "
        "(use str, int, float or a 1D numeric sequence)"
    )


def embeddings_dataarray(
    values, coords: Mapping[str, object] | None = None, attrs: Mapping[str, object] | None = None
) -> xr.DataArray:
    """Embeddings (N, D) as a DataArray with dims (sample, emb_dim) and per-sample coords."""
    # (N, D)
    arr = _host(values).astype(np.float32, copy=False)
    if arr.ndim != 2:
        raise ValueError(f"embeddings must be (N, D), got shape {arr.shape}")
    n, d = arr.shape
    co: dict[str, object] = {"sample": np.arange(n), "emb_dim": np.arange(d)}
    for name, c in (coords or {}).items():
        c = _host(c)
        if c.shape != (n,):
            raise ValueError(f"coord {name!r}: expected shape ({n},), got {c.shape}")
        co[name] = ("sample", c)
    safe = {k: _netcdf_attr(k, v) for k, v in (attrs or {}).items()}
    return xr.DataArray(arr, dims=("sample", "emb_dim"), coords=co, attrs=safe, name="embedding")


def save_embeddings(da: xr.DataArray, path: str | os.PathLike, thumbs=None) -> Path:
    """Write embeddings (and optionally their thumbnails (N, H, W)) to NetCDF atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path(path)
    ds = da.rename("embedding").to_dataset()
    encoding = {}
    if thumbs is not None:
        th = _host(thumbs).astype(np.float32, copy=False)
        if th.ndim != 3 or len(th) != da.sizes["sample"]:
            raise ValueError(f"thumbnails must be ({da.sizes['sample']}, H, W), got {th.shape}")
        ds["thumbnail"] = (("sample", "thumb_y", "thumb_x"), th)
        encoding["thumbnail"] = {"zlib": True, "complevel": 1}
    ds.to_netcdf(tmp, encoding=encoding)
    commit(tmp, path)
    return path


def load_embeddings(path: str | os.PathLike) -> xr.DataArray:
    """Read embeddings written by :func:`save_embeddings` (loaded eagerly, file closed)."""
    with xr.open_dataset(path) as ds:
        return ds["embedding"].load()


def load_thumbnails(path: str | os.PathLike) -> np.ndarray | None:
    """The thumbnails (N, H, W) stored beside the embeddings, or None if there are none."""
    with xr.open_dataset(path) as ds:
        return ds["thumbnail"].values if "thumbnail" in ds else None


def shrink_thumbnails(thumbs, max_px: int = 64) -> np.ndarray:
    """Block-mean (NaN-aware) by the smallest integer factor that keeps the longer side <= max_px."""
    # (N, H, W)
    th = _host(thumbs).astype(np.float32, copy=False)
    if th.ndim != 3:
        raise ValueError(f"thumbnails must be (N, H, W), got {th.shape}")
    n, h, w = th.shape
    f = max(1, -(-max(h, w) // max_px))
    if f == 1:
        return th
    hh, ww = h // f, w // f
    blocks = th[:, : hh * f, : ww * f].reshape(n, hh, f, ww, f)
    import warnings

    with warnings.catch_warnings():  # an all-NaN block (e.g. land) stays NaN, silently
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(blocks, axis=(2, 4)).astype(np.float32)


def list_embeddings(run_dir: str | os.PathLike, model: str | None = None) -> list[tuple[int, Path]]:
    """(step, path) of the run's embedding files (of one model if given), sorted by step."""
    d = Path(run_dir) / "embeddings"
    if not d.is_dir():
        return []
    out = []
    for p in d.iterdir():
        m = _NC_NAME.match(p.name)
        if m and (model is None or m["model"] == model):
            out.append((int(m["step"]), p))
    return sorted(out)


def _values(data) -> np.ndarray:
    # (N, D)
    arr = _host(data.values if isinstance(data, xr.DataArray) else data).astype(np.float64)
    if arr.ndim != 2:
        raise ValueError(f"embeddings must be (N, D), got shape {arr.shape}")
    return arr


# ------------------------------------------------------------------------------ features
def layer_features(model, layer: str | None, *inputs, pool: str = "mean") -> torch.Tensor:
    """Output of the submodule ``layer`` (None: the model's output) as (B, F), on the device.

    Runs ``model(*inputs)`` once in eval mode under ``no_grad`` and restores the previous
    ``.training`` flag and removes the hook also when the forward raises. Spatial dims of a
    (B, C, *S) output are averaged (``pool="mean"``) or kept and flattened (``pool="flatten"``).
    """
    from .hooks import first_tensor, probe_mode, unwrap

    if pool not in ("mean", "flatten"):
        raise ValueError(f"pool must be 'mean' or 'flatten', got {pool!r}")
    inner = unwrap(model)
    captured: list[torch.Tensor] = []
    handle = None
    if layer is not None:
        modules = dict(inner.named_modules())
        if layer not in modules:
            raise KeyError(f"no submodule {layer!r}; some are {list(modules)[1:8]}")
        handle = modules[layer].register_forward_hook(
            lambda _m, _i, out: captured.append(first_tensor(out))
        )
    try:
        with probe_mode(model):
            out = model(*inputs)
    finally:
        if handle is not None:
            handle.remove()
    feats = captured[-1] if layer is not None else first_tensor(out)
    if feats is None or feats.dim() < 2:
        raise ValueError(f"layer {layer!r} gave no (B, ...) floating tensor")
    # (B, C, *S) -> (B, C) or (B, C * prod(S))
    if feats.dim() > 2 and pool == "mean":
        feats = feats.mean(dim=tuple(range(2, feats.dim())))
    return feats.flatten(1)


# ------------------------------------------------------------------------------ thumbnails
def thumbnails_rgb(
    thumbs,
    px: int | None = None,
    *,
    cmap: str = CMAPS["thumbnail"],
    vmin: float | None = None,
    vmax: float | None = None,
    fill=FILL,
) -> np.ndarray:
    """Fields (N, H, W) to RGB uint8 (N, px, px, 3), aspect kept, on a square canvas.

    ``(N, H, W, 3)`` uint8 input is taken as already coloured. Without ``px`` the canvas side is
    ``max(H, W)``. Limits default to the min/max over all thumbnails (one norm for all).
    """
    from PIL import Image

    arr = _host(thumbs)
    rgb_in = arr.ndim == 4 and arr.shape[-1] == 3 and arr.dtype == np.uint8
    if not (arr.ndim == 3 or rgb_in):
        raise ValueError(
            f"thumbnails must be (N, H, W) or uint8 (N, H, W, 3), got {arr.dtype} {arr.shape}"
        )
    n, h, w = arr.shape[:3]
    if not rgb_in and (vmin is None or vmax is None):
        lo, hi = (float(np.nanmin(arr)), float(np.nanmax(arr))) if arr.size else (0.0, 1.0)
        vmin = lo if vmin is None else vmin
        vmax = hi if vmax is None else vmax
    side = int(px) if px else max(h, w)
    scale = side / max(h, w)
    th, tw = max(1, round(h * scale)), max(1, round(w * scale))
    out = np.empty((n, side, side, 3), np.uint8)
    out[:] = fill
    y0, x0 = (side - th) // 2, (side - tw) // 2
    resample = Image.NEAREST if scale >= 1 else Image.BOX
    for i in range(n):
        rgb = arr[i] if rgb_in else apply_cmap(arr[i], vmin, vmax, cmap)
        if (th, tw) != (h, w):
            rgb = np.asarray(Image.fromarray(rgb).resize((tw, th), resample))
        out[i, y0 : y0 + th, x0 : x0 + tw] = rgb
    return out


def _limits(th: np.ndarray, vmin: float | None, vmax: float | None) -> tuple[float, float]:
    """Colour limits: the given ones, else min/max over all thumbnails (not just those drawn)."""
    if vmin is None or vmax is None:
        finite = th[np.isfinite(th)] if th.dtype.kind == "f" else th
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        vmin = lo if vmin is None else vmin
        vmax = hi if vmax is None else vmax
    return float(vmin), float(vmax)


# ------------------------------------------------------------------------------- clustering
def cluster_tree(
    values, n_clusters_max: int = 14, linkage_method: str = "ward"
) -> tuple[np.ndarray, list[int], np.ndarray]:
    """Linkage, the node ids of the truncated dendrogram's leaves (left to right), and labels.

    ``labels[i]`` is the position (0..K-1) of the displayed leaf that holds sample ``i``; it is
    read off the tree itself, so it always agrees with the leaves drawn (ties included).
    """
    from scipy.cluster import hierarchy

    x = _values(values)
    n = len(x)
    if n < 2:
        raise ValueError(f"clustering needs at least 2 samples, got {n}")
    z = hierarchy.linkage(x, method=linkage_method)
    info = hierarchy.dendrogram(z, truncate_mode="lastp", p=n_clusters_max, no_plot=True)
    leaves = [int(v) for v in info["leaves"]]
    labels = np.full(n, -1, np.int64)
    for pos, node in enumerate(leaves):
        stack = [node]
        while stack:
            k = stack.pop()
            if k < n:
                labels[k] = pos
            else:
                a, b = z[k - n, :2].astype(np.int64)
                stack += [int(a), int(b)]
    if (labels < 0).any():  # every sample sits under exactly one displayed leaf
        raise RuntimeError("dendrogram leaves do not cover every sample")
    return z, leaves, labels


def pick_samples(
    values, labels: np.ndarray, n_samples: int = 10, sampling: str = "random", seed: int = 0
) -> list[np.ndarray]:
    """Indices of up to ``n_samples`` examples per cluster (``random`` or ``center_dist``)."""
    x = _values(values)
    labels = np.asarray(labels)
    if labels.shape != (len(x),):
        raise ValueError(f"labels must be ({len(x)},), got {labels.shape}")
    rng = np.random.default_rng(seed)
    out = []
    for k in range(int(labels.max()) + 1):
        idx = np.flatnonzero(labels == k)
        m = min(n_samples, len(idx))
        if sampling == "random":
            out.append(rng.choice(idx, size=m, replace=False))
        elif sampling == "center_dist":
            # closest to the cluster centroid first: the cluster's most typical members
            dist = np.linalg.norm(x[idx] - x[idx].mean(axis=0), axis=1)
            out.append(idx[np.argsort(dist, kind="stable")[:m]])
        else:
            raise ValueError(f"sampling must be 'random' or 'center_dist', got {sampling!r}")
    return out


def cluster_letter(k: int) -> str:
    """A, B, ..., Z, AA, AB, ... for cluster ``k``."""
    s = ""
    k += 1
    while k:
        k, r = divmod(k - 1, 26)
        s = chr(65 + r) + s
    return s


def dendrogram(
    da,
    thumbs,
    *,
    n_clusters_max: int = 14,
    n_samples: int = 10,
    sampling: str = "random",
    linkage_method: str = "ward",
    label_clusters: bool = False,
    seed: int = 0,
    cmap: str = CMAPS["thumbnail"],
    vmin: float | None = None,
    vmax: float | None = None,
    thumb_px: int = 48,
    title: str | None = None,
):
    """Truncated dendrogram with example thumbnails under each leaf; returns (fig, labels (N,))."""
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure
    from scipy.cluster import hierarchy

    # da: (N, D); thumbs: (N, H, W)
    x = _values(da)
    th = _host(thumbs)
    if len(th) != len(x):
        raise ValueError(f"{len(x)} embeddings but {len(th)} thumbnails")
    vmin, vmax = _limits(th, vmin, vmax)
    z, leaves, labels = cluster_tree(x, n_clusters_max, linkage_method)
    picks = pick_samples(x, labels, n_samples, sampling, seed)
    k = len(leaves)
    counts = np.bincount(labels, minlength=k)

    sel = np.concatenate(picks)
    rgb = dict(
        zip(
            sel.tolist(),
            thumbnails_rgb(th[sel], thumb_px, cmap=cmap, vmin=vmin, vmax=vmax),
            strict=True,
        )
    )
    blank = np.full((thumb_px, thumb_px, 3), 255, np.uint8)  # white: the leaf has no more samples
    rows = max(1, min(n_samples, int(counts.max())))
    # row-major grid: row r holds the r-th example of every leaf, so leaf j is column j
    cells = [rgb[int(p[r])] if r < len(p) else blank for r in range(rows) for p in picks]
    grid = tile(cells, k, pad=2, fill=(255, 255, 255))

    col_in = 0.8 if k > 1 else 1.6
    width = max(4.0, col_in * k)
    grid_h = width * grid.shape[0] / grid.shape[1]
    fig = Figure(figsize=(width, 2.4 + grid_h), dpi=100, layout="constrained")
    gs = fig.add_gridspec(2, 1, height_ratios=[2.0, grid_h])
    ax = fig.add_subplot(gs[0])
    tick = [f"{cluster_letter(i)}\n{c}" if label_clusters else f"{c}" for i, c in enumerate(counts)]
    with plt.rc_context({"lines.linewidth": 1.0}):
        hierarchy.dendrogram(
            z,
            truncate_mode="lastp",
            p=n_clusters_max,
            ax=ax,
            color_threshold=0,
            above_threshold_color="k",
            labels=None,
        )
    # scipy draws leaf j at x = 10 j + 5; the grid image spans the same [0, 10 k] so columns align
    ax.set_xlim(0, 10 * k)
    ax.set_xticks(10 * np.arange(k) + 5, tick, fontsize=8)
    ax.tick_params(axis="x", length=0, pad=2)
    ax.set_ylabel(f"{linkage_method} distance", fontsize=8)
    ax.tick_params(axis="y", labelsize=7)
    for s in ("top", "right"):
        ax.spines[s].set_visible(False)
    ax.set_title(title or f"{len(x)} samples, {k} clusters", fontsize=9)
    axg = fig.add_subplot(gs[1])
    axg.imshow(grid, extent=(0, 10 * k, grid.shape[0], 0), aspect="auto", interpolation="nearest")
    axg.set_axis_off()
    return fig, labels


# ------------------------------------------------------------------------------- scatter
def pca2(values) -> tuple[np.ndarray, np.ndarray]:
    """Projection on the first two principal components (N, 2) and their variance fractions."""
    x = _values(values)
    xc = x - x.mean(axis=0)
    _, s, vt = np.linalg.svd(xc, full_matrices=False)
    var = s**2
    frac = var / var.sum() if var.sum() > 0 else np.zeros_like(var)
    # sign convention: the largest loading of each component is positive (stable across calls)
    comps = vt[:2]
    sign = np.sign(comps[np.arange(len(comps)), np.abs(comps).argmax(axis=1)])
    comps = comps * np.where(sign == 0, 1, sign)[:, None]
    proj = xc @ comps.T
    if proj.shape[1] < 2:
        proj = np.concatenate([proj, np.zeros((len(x), 2 - proj.shape[1]))], axis=1)
        frac = np.concatenate([frac, np.zeros(2 - len(frac))])
    return proj, frac[:2]


def scatter_annotated(
    data,
    thumbs,
    *,
    dims: tuple[int, int] | str = (0, 1),
    n_points: int = 12,
    seed: int = 0,
    cmap: str = CMAPS["thumbnail"],
    vmin: float | None = None,
    vmax: float | None = None,
    thumb_px: int = 48,
    labels: np.ndarray | None = None,
    title: str | None = None,
):
    """Scatter of two embedding dims (or ``dims="pca"``), ``n_points`` shown with thumbnails.

    ``data`` is a DataArray or array (N, D), or a pair ``(x, y)`` of (N,) arrays. Thumbnails sit
    on a ring outside the cloud, each point joined to a slot so the connectors do not cross.
    """
    from matplotlib.figure import Figure
    from matplotlib.offsetbox import AnnotationBbox, OffsetImage

    if isinstance(data, tuple):
        xy = np.stack([_host(data[0]), _host(data[1])], axis=1).astype(np.float64)
        xlabel, ylabel = "x", "y"
    else:
        x = _values(data)
        if dims == "pca":
            xy, frac = pca2(x)
            xlabel, ylabel = f"PC1 ({100 * frac[0]:.0f} %)", f"PC2 ({100 * frac[1]:.0f} %)"
        else:
            i, j = dims
            xy = x[:, [i, j]]
            xlabel, ylabel = f"emb_dim {i}", f"emb_dim {j}"
    # xy: (N, 2)
    th = _host(thumbs)
    n = len(xy)
    if len(th) != n:
        raise ValueError(f"{n} points but {len(th)} thumbnails")
    vmin, vmax = _limits(th, vmin, vmax)
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(n, size=min(n_points, n), replace=False))

    fig = Figure(figsize=(7.0, 7.0), dpi=100)
    ax = fig.add_subplot()
    ax.scatter(
        xy[:, 0],
        xy[:, 1],
        s=8,
        c="0.4" if labels is None else labels,
        cmap=None if labels is None else "tab20",
        alpha=0.35,
        linewidths=0,
    )
    ax.scatter(xy[chosen, 0], xy[chosen, 1], s=20, c="k", linewidths=0)
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    span = np.where(hi - lo > 0, hi - lo, 1.0)
    centre = (lo + hi) / 2
    # thumbnails on an ellipse 0.8 spans from the centre, the axes widened to hold them; points go
    # to slots by minimum total connector length, and a minimum-length matching never crosses
    from scipy.optimize import linear_sum_assignment

    m = len(chosen)
    slot_ang = np.arange(m) * 2 * np.pi / max(m, 1) + np.pi / 4
    unit = np.stack([np.cos(slot_ang), np.sin(slot_ang)], axis=1)  # (m, 2) in span units
    rel = (xy[chosen] - centre) / span  # (m, 2)
    cost = np.linalg.norm(rel[:, None, :] - 0.8 * unit[None, :, :], axis=2)
    rows, cols = linear_sum_assignment(cost)
    rgb = thumbnails_rgb(th[chosen], thumb_px, cmap=cmap, vmin=vmin, vmax=vmax)
    for o, slot in zip(rows, cols, strict=True):
        pos = centre + 0.8 * span * unit[slot]
        box = AnnotationBbox(
            OffsetImage(rgb[o], zoom=1.0),
            tuple(xy[chosen[o]]),
            xybox=tuple(pos),
            xycoords="data",
            boxcoords="data",
            pad=0.1,
            arrowprops={"arrowstyle": "-", "linestyle": "--", "color": "0.3", "lw": 0.8},
        )
        ax.add_artist(box)
    ax.set_xlim(centre[0] - 1.0 * span[0], centre[0] + 1.0 * span[0])
    ax.set_ylim(centre[1] - 1.0 * span[1], centre[1] + 1.0 * span[1])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title or f"{n} samples, {len(chosen)} shown", fontsize=9)
    return fig


# ------------------------------------------------------------------------------- projector
def sprite_layout(
    n: int, thumb_px: int, *, min_px: int = 8, max_px: int = SPRITE_MAX_PX
) -> tuple[int, int]:
    """(number of samples, thumbnail side) so that ceil(sqrt(n)) * side <= max_px.

    Thumbnails shrink first; only if they would fall below ``min_px`` is the count capped.
    """
    if n <= 0:
        return 0, thumb_px
    side = min(int(thumb_px), max_px // math.ceil(math.sqrt(n)))
    if side >= min_px:
        return n, side
    per_row = max_px // min_px
    return min(n, per_row * per_row), min_px


def _get(cfg, key: str, default):
    if cfg is None:
        return default
    v = cfg.get(key, default)
    return default if v is None else v


class EmbeddingLogger:
    """Dendrogram and scatter figures, NetCDF file and projector export of one model's embeddings.

    ``cfg`` keys (all optional): ``every``, ``n_clusters_max`` (14), ``n_samples`` (10),
    ``sampling`` (random), ``linkage_method`` (ward), ``label_clusters`` (False), ``n_points``
    (12), ``dims`` ((0, 1) or "pca"), ``cmap`` (viridis), ``vmin``/``vmax`` (default: fixed from
    the first call, so every later figure uses the same limits), ``thumb_px`` (48),
    ``projector`` (True), ``sprite_px`` (32), ``sprite_max_px`` (8192), ``seed`` (0),
    ``save_thumbs`` (True: thumbnails go into the NetCDF file, block-averaged to at most
    ``thumb_store_px`` (64) px, so notebooks can redraw the figures from the run alone).
    """

    def __init__(
        self, writer, run_dir: str | os.PathLike, model_name: str, cfg: Mapping | None = None
    ) -> None:
        self.writer = writer
        self.run_dir = Path(run_dir)
        self.model = model_name
        self.cfg = cfg
        self.every = int(_get(cfg, "every", 0))
        self.vmin = _get(cfg, "vmin", None)
        self.vmax = _get(cfg, "vmax", None)
        self.logged: set[int] = set()

    def due(self, step: int, *, last: bool = False) -> bool:
        """True at step 0, every ``every`` steps and at the last step, once per step."""
        if step in self.logged:
            return False
        return step == 0 or last or (self.every > 0 and step % self.every == 0)

    def log(
        self,
        step: int,
        values,
        thumbs,
        coords: Mapping[str, object] | None = None,
        attrs: Mapping[str, object] | None = None,
    ) -> np.ndarray:
        """Write figures, NetCDF and projector export for ``values`` (N, D); returns cluster labels."""
        # values: (N, D); thumbs: (N, H, W)
        x = _host(values)
        th = _host(thumbs)
        if x.ndim != 2 or len(th) != len(x):
            raise ValueError(
                f"expected values (N, D) and N thumbnails, got {x.shape} and {th.shape}"
            )
        cfg = self.cfg
        if not getattr(self.writer, "is_writer", True):
            # other ranks draw nothing; they get the same labels from the same tree
            self.logged.add(step)
            n_max = int(_get(cfg, "n_clusters_max", 14))
            return cluster_tree(x, n_max, str(_get(cfg, "linkage_method", "ward")))[2]
        if self.vmin is None or self.vmax is None:
            # fixed on the first call so the thumbnails of every later step share the norm
            self.vmin, self.vmax = _limits(th, self.vmin, self.vmax)
        style = {
            "cmap": _get(cfg, "cmap", CMAPS["thumbnail"]),
            "vmin": self.vmin,
            "vmax": self.vmax,
            "thumb_px": int(_get(cfg, "thumb_px", 48)),
        }
        seed = int(_get(cfg, "seed", 0))
        with self.writer.cost("embed"):
            fig, labels = dendrogram(
                x,
                th,
                n_clusters_max=int(_get(cfg, "n_clusters_max", 14)),
                n_samples=int(_get(cfg, "n_samples", 10)),
                sampling=str(_get(cfg, "sampling", "random")),
                linkage_method=str(_get(cfg, "linkage_method", "ward")),
                label_clusters=bool(_get(cfg, "label_clusters", False)),
                seed=seed,
                title=f"{self.model} step {step}: {len(x)} samples",
                **style,
            )
            self.writer.figure(f"embed/{self.model}/dendrogram", fig, step)
            dims = _get(cfg, "dims", (0, 1))
            dims = dims if isinstance(dims, str) else tuple(int(d) for d in dims)
            if dims != "pca" and x.shape[1] < 2:
                dims = "pca"  # a 1-D code has no second dim; PCA pads with zeros
            fig = scatter_annotated(
                x,
                th,
                dims=dims,
                n_points=int(_get(cfg, "n_points", 12)),
                seed=seed,
                labels=labels,
                title=f"{self.model} step {step}",
                **style,
            )
            self.writer.figure(f"embed/{self.model}/scatter", fig, step)

            co = dict(coords or {})
            co["cluster"] = labels
            at = {"model": self.model, "step": int(step), **(attrs or {})}
            da = embeddings_dataarray(x, co, at)
            keep = th if th.ndim == 3 and bool(_get(cfg, "save_thumbs", True)) else None
            if keep is not None:
                keep = shrink_thumbnails(keep, int(_get(cfg, "thumb_store_px", 64)))
            path = self.run_dir / "embeddings" / f"{self.model}_step{step:08d}.nc"
            save_embeddings(da, path, keep)
            if bool(_get(cfg, "projector", True)):
                self._projector(step, x, th, coords or {}, labels, seed, style)
        self.logged.add(step)
        return labels

    def _projector(self, step, x, th, coords, labels, seed, style) -> None:
        # x: (N, D); th: (N, H, W)
        n, side = sprite_layout(
            len(x),
            int(_get(self.cfg, "sprite_px", 32)),
            max_px=int(_get(self.cfg, "sprite_max_px", SPRITE_MAX_PX)),
        )
        idx = np.arange(len(x))
        if n < len(x):
            idx = np.sort(np.random.default_rng(seed).choice(len(x), size=n, replace=False))
        names = [k for k, c in coords.items() if np.ndim(c) == 1 and k != "sample"]
        header = ["sample", *names, "cluster"]
        cols = [idx, *[np.asarray(_host(coords[k]))[idx] for k in names]]
        meta = [
            [str(c[r]) for c in cols] + [cluster_letter(int(labels[i]))] for r, i in enumerate(idx)
        ]
        sprite = thumbnails_rgb(
            th[idx], side, cmap=style["cmap"], vmin=style["vmin"], vmax=style["vmax"]
        )
        label_img = torch.from_numpy(sprite).permute(0, 3, 1, 2).float() / 255.0  # (n, 3, s, s)
        self.writer.embedding(
            x[idx],
            metadata=meta,
            label_img=label_img,
            step=step,
            tag=tags.embed(self.model),
            metadata_header=header,
        )
