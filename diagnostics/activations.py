"""Activation statistics per hooked layer: fast.ai's colorful dimension and dead-activation chart.

Forward hooks add each training-mode output's histogram (fixed edges, default 40 bins of |a| on
[0, 10] with under/overflow), moments and NaN/Inf counts into a device buffer per layer
(:mod:`diagnostics.stats`). At each write the summed buffers arrive on the host once; here they
become TensorBoard records under ``act/<model>/<layer>/...``: a native histogram, ``mean``,
``std``, ``dead``, ``nan_count``, ``inf_count`` scalars, and the two images ``colorful`` (log1p of
the bins-by-writes matrix, bin 0 at the bottom, writes to the right) and ``dead_chart``.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from . import tags
from .hooks import DEFAULT_TYPES, Hooks, select_modules
from .render import colorful_panel, fraction_panel
from .stats import HistSpec, accumulate, make_spec, summarize


def _merge_columns(m: np.ndarray, max_cols: int, how: str) -> np.ndarray:
    """Sum or average groups of adjacent columns of ``m`` (rows, cols) so at most ``max_cols`` remain."""
    n = m.shape[1]
    if n <= max_cols:
        return m
    g = -(-n // max_cols)
    m = np.concatenate([m, np.full((m.shape[0], (-n) % g), np.nan)], axis=1)
    groups = m.reshape(m.shape[0], -1, g)
    if how == "sum":
        return np.nansum(groups, axis=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN group stays NaN
        return np.nanmean(groups, axis=2)


class ColumnHistory:
    """Bounded bins-by-writes history: at most ``max_cols`` columns, each the sum of ``group`` writes.

    When full, adjacent columns are summed in pairs and ``group`` doubles, so memory is
    O(rows x max_cols) and a write costs O(rows) amortised, however long the run (the colorful
    image used to be rebuilt from every past write).
    """

    def __init__(self, rows: int, max_cols: int = 512) -> None:
        if max_cols < 2 or max_cols % 2:
            raise ValueError(f"max_cols must be an even number >= 2, got {max_cols}")
        self.max_cols = max_cols
        self.group = 1  # writes per stored column
        self._data = np.zeros((rows, max_cols), np.float64)
        self._writes = np.zeros(max_cols, np.int64)  # writes summed into each column
        self._steps = np.zeros(max_cols, np.int64)  # step of each column's first write
        self.n = 0  # stored columns; the last one may be partial

    def add(self, col: np.ndarray, step: int) -> None:
        """Add one write's column (rows,)."""
        if self.n and self._writes[self.n - 1] < self.group:
            j = self.n - 1
        else:
            if self.n == self.max_cols:
                self._halve()
            j = self.n
            self.n += 1
            self._data[:, j] = 0.0
            self._writes[j] = 0
            self._steps[j] = step
        self._data[:, j] += col
        self._writes[j] += 1

    def _halve(self) -> None:
        h = self.max_cols // 2
        d = self._data
        d[:, :h] = d[:, 0::2] + d[:, 1::2]
        self._writes[:h] = self._writes[0::2] + self._writes[1::2]
        self._steps[:h] = self._steps[0::2]
        self.n = h
        self.group *= 2

    def array(self) -> np.ndarray:
        """(rows, n) sums per stored column (a view: copy before keeping)."""
        return self._data[:, : self.n]

    def mean(self) -> np.ndarray:
        """(rows, n) mean per write of each stored column."""
        return self._data[:, : self.n] / self._writes[: self.n]

    @property
    def steps(self) -> np.ndarray:
        """(n,) step of the first write in each stored column."""
        return self._steps[: self.n]


VALUE_LABELS = {"none": "activation", "abs": "|activation|", "log10abs": "log10 |activation|"}


def colorful_image(
    cols: np.ndarray,
    edges=None,
    steps=None,
    *,
    title: str = "colorful dimension",
    transform: str = "abs",
    max_px: int = 512,
) -> np.ndarray:
    """The colorful dimension with its axes (:func:`diagnostics.render.colorful_panel`): log1p of
    counts ``(n_counts, n_writes)``, bin 0 at the bottom, rows labelled with ``edges`` (default:
    bin numbers), columns with ``steps`` (default: write numbers)."""
    # cols: (n_counts, n_writes) host counts, underflow first, overflow last.
    cols = np.asarray(cols, dtype=np.float64)
    if cols.ndim != 2 or cols.shape[1] == 0:
        raise ValueError(f"colorful_image expects (n_counts, n_writes>0), got {cols.shape}")
    n = cols.shape[1]
    steps = np.arange(n) if steps is None else np.asarray(steps)
    edges = np.arange(cols.shape[0] - 1) if edges is None else np.asarray(edges)
    merged = _merge_columns(cols, max_px, "sum")  # a long run keeps a bounded image size
    steps = steps[:: -(-n // max_px)] if merged.shape[1] < n else steps
    return colorful_panel(
        merged,
        edges,
        steps,
        title=f"{title}\nrows: {VALUE_LABELS.get(transform, transform)} bins (bottom/top row: "
        f"below/above the edges), colour: log1p(count)",
        value_label=VALUE_LABELS.get(transform, transform),
        plot_h=max(168, cols.shape[0]),
    )


def dead_chart(
    dead: list[float] | np.ndarray, steps=None, *, title: str = "dead fraction", max_px: int = 512
) -> np.ndarray:
    """Area chart with axes of a dead fraction in [0, 1] per write (NaN columns stay blank)."""
    # dead: (n_writes,) fractions; y axis fixed to [0, 1] so charts compare across layers.
    d0 = np.asarray(dead, dtype=np.float64).reshape(-1)
    n = len(d0)
    steps = np.arange(n) if steps is None else np.asarray(steps)
    d = _merge_columns(d0.reshape(1, -1), max_px, "mean")[0]
    steps = steps[:: -(-n // max_px)] if len(d) < n else steps
    return fraction_panel(d, steps, title=title)


class ActivationStats:
    """Hooks and per-layer device buffers for activation statistics of several models."""

    name = "act"

    def __init__(self, models: Mapping[str, nn.Module], cfg: Mapping | None = None) -> None:
        cfg = dict(cfg or {})
        self.spec: HistSpec = make_spec(cfg, lo=0.0, hi=10.0, n_bins=40, transform="abs")
        self.dead_bins = int(cfg.get("dead_bins", 1))
        types = cfg.get("types", None)
        types = DEFAULT_TYPES if types is None else tuple(types)
        self.layers: list[tuple[str, str, nn.Module]] = []
        for mname, model in models.items():
            for lname, m in select_modules(
                model, types=types, names=cfg.get("names"), exclude=cfg.get("exclude")
            ):
                self.layers.append((mname, lname, m))
        self.active = False
        self.seconds = 0.0  # host time inside hooks (launch time only on a GPU)
        self.bufs: list[torch.Tensor] = []
        # bounded histories (memory and per-write cost flat in run length)
        self.columns = [ColumnHistory(self.spec.n_counts) for _ in self.layers]
        self.dead_hist = [ColumnHistory(1) for _ in self.layers]
        self._snap = [np.zeros(self.spec.n_counts) for _ in self.layers]
        self._hooks = Hooks([m for _, _, m in self.layers], self._hook)
        self._warned = False

    def sizes(self) -> list[int]:
        """Buffer length per layer."""
        return [self.spec.size] * len(self.layers)

    def bind(self, views: list[torch.Tensor]) -> None:
        """Use these views of the shared flat buffer, one per layer."""
        self.bufs = views

    def _hook(self, i: int, module: nn.Module, out: torch.Tensor) -> None:
        if not self.active:
            return
        t0 = time.perf_counter()
        accumulate(self.bufs[i], out, self.spec)
        self.seconds += time.perf_counter() - t0

    def register(self) -> None:
        """Register the forward hooks."""
        self._hooks.register()

    def remove(self) -> None:
        """Remove the forward hooks."""
        self._hooks.remove()

    def emit(self, host: list[np.ndarray], step: int, writer, scalars: dict, images: bool) -> None:
        """Turn host buffers (one per layer) into records; scalars go into ``scalars``."""
        edges = self.spec.bin_edges()
        if not self._warned:
            self._warned = True
            silent = [
                f"{m}/{n}"
                for (m, n, _), f in zip(self.layers, self._hooks.fired, strict=True)
                if not f
            ]
            if silent:
                warnings.warn(
                    f"diagnostics: selected layers never ran a training-mode forward before the "
                    f"first write at step {step}: {', '.join(silent)}",
                    stacklevel=3,
                )
        for i, ((mname, lname, _), b) in enumerate(zip(self.layers, host, strict=True)):
            s = summarize(b, self.spec, dead_bins=self.dead_bins)
            if s["n"] == 0:
                continue  # the layer ran no training-mode forward since the last write
            tag = tags.act(mname, lname)
            scalars[f"{tag}/mean"] = s["mean"]
            scalars[f"{tag}/std"] = s["std"]
            scalars[f"{tag}/dead"] = s["dead"]
            scalars[f"{tag}/nan_count"] = s["nan_count"]
            scalars[f"{tag}/inf_count"] = s["inf_count"]
            self.columns[i].add(s["counts"], step)
            self.dead_hist[i].add(np.array([s["dead"]]), step)
            self._snap[i] += s["counts"]
            if writer is not None:
                writer.histogram(f"{tag}/hist", s["counts"], edges, step)
                if images:
                    hist = self.columns[i]
                    img = colorful_image(
                        hist.array(),
                        edges,
                        hist.steps,
                        title=f"{tag} colorful dimension",
                        transform=self.spec.transform,
                    )
                    writer.image(f"{tag}/colorful", img, step)
                    dh = self.dead_hist[i]
                    chart = dead_chart(
                        dh.mean()[0],
                        dh.steps,
                        title=f"{tag} dead fraction: share of outputs with "
                        f"{VALUE_LABELS.get(self.spec.transform, 'value')} < "
                        f"{edges[min(self.dead_bins, len(edges) - 1)]:.3g}",
                    )
                    writer.image(f"{tag}/dead_chart", chart, step)

    def snapshot_arrays(self) -> dict[str, np.ndarray]:
        """Counts (int64) and dead fraction per layer since the previous call; resets them."""
        out = {}
        for i, (mname, lname, _) in enumerate(self.layers):
            c = self._snap[i]
            total = c.sum()
            out[f"act_hist/{mname}/{lname}"] = np.rint(c).astype(np.int64)
            dead = c[1 : 1 + self.dead_bins].sum() / total if total > 0 else np.nan
            out[f"act_dead/{mname}/{lname}"] = np.asarray(dead, dtype=np.float64)
            self._snap[i] = np.zeros_like(c)
        return out

    def meta(self) -> dict:
        """Run-wide facts for snapshots: edges, transform, layers per model."""
        layers: dict[str, list[str]] = {}
        for mname, lname, _ in self.layers:
            layers.setdefault(mname, []).append(lname)
        return {
            "act_edges": self.spec.bin_edges().tolist(),
            "act_transform": self.spec.transform,
            "act_dead_bins": self.dead_bins,
            "layers": layers,
        }
