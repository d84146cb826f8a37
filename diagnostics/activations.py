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
from .render import colorful_dimension
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


def colorful_image(cols: np.ndarray, *, max_px: int = 512) -> np.ndarray:
    """RGB uint8 image of log1p(counts), counts ``(n_counts, n_writes)``: bin 0 at the bottom
    (``render.colorful_dimension``, as the videos draw it; colour limit: this image's max)."""
    # cols: (n_counts, n_writes) host counts, underflow first, overflow last.
    cols = np.asarray(cols, dtype=np.float64)
    if cols.ndim != 2 or cols.shape[1] == 0:
        raise ValueError(f"colorful_image expects (n_counts, n_writes>0), got {cols.shape}")
    cols = _merge_columns(cols, max_px, "sum")  # a long run keeps a bounded image size
    fy = max(1, min(4, max_px // cols.shape[0]))
    fx = max(1, min(8, max_px // cols.shape[1]))
    return colorful_dimension(cols, fy=fy, fx=fx)


def dead_chart(
    dead: list[float] | np.ndarray, *, height: int = 64, max_px: int = 512
) -> np.ndarray:
    """RGB uint8 area chart of a dead fraction in [0, 1] per write (NaN columns stay blank)."""
    # dead: (n_writes,) fractions; y axis fixed to [0, 1] so charts compare across layers.
    d = _merge_columns(np.asarray(dead, dtype=np.float64).reshape(1, -1), max_px, "mean")[0]
    col_px = max(1, min(4, max_px // max(1, len(d))))  # the colorful image's column width
    w = max(1, len(d)) * col_px
    img = np.full((height + 2, w + 2, 3), 255, np.uint8)
    img[0, :] = img[-1, :] = img[:, 0] = img[:, -1] = (128, 128, 128)
    for i, v in enumerate(d):
        if not np.isfinite(v):
            continue
        h = int(round(min(max(v, 0.0), 1.0) * height))
        if h:
            img[1 + height - h : 1 + height, 1 + i * col_px : 1 + (i + 1) * col_px] = (200, 40, 40)
    return img


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
                    writer.image(f"{tag}/colorful", colorful_image(self.columns[i].array()), step)
                    writer.image(f"{tag}/dead_chart", dead_chart(self.dead_hist[i].mean()[0]), step)

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
