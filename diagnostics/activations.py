"""Activation statistics per hooked layer: fast.ai's colorful dimension and dead-activation chart.

Forward hooks add each training-mode output's histogram, moments and NaN/Inf counts into a device
buffer per layer (:mod:`diagnostics.stats`). At each write the summed buffers arrive on the host
once; here they become TensorBoard records under ``act/<model>/<layer>/...``: a native histogram,
``mean``, ``std``, ``dead``, ``nan_count``, ``inf_count`` scalars, and the two images ``colorful``
(log1p of the bins-by-writes matrix, bin 0 at the bottom, writes to the right) and ``dead_chart``.

Bins (default ``transform: auto``): |a| is counted on a fine fixed grid (:data:`AUTO_GRID`: 64
bins per octave, the float's exponent and top 6 mantissa bits, from 2**-34 = 5.8e-11 to 2**14 =
16384, under/overflow outside; TensorBoard gets the edges as log10|a|); at the first write in which a layer has
nonzero finite values its window of ``n_bins`` (default 40) coarse bins, each a whole number of
fine bins, is fitted to that write's values and frozen for the run. Every layer so gets bins that
fit its own scale (a Tanh, a 0.02-init generator, a raw conv alike), counts still add across steps
and ranks, and each coarse count is an exact sum of fine counts. Exact zeros are underflow. A
fixed ``transform`` (``none``, ``abs``, ``log10abs``) with ``lo``/``hi``/``n_bins`` or ``edges``
gives one fixed grid for every layer instead.

Dead (default): the fraction of a layer's units that gave no nonzero output in any forward
recorded since the previous write (by default the write step's own forwards: ``record_every``),
a unit being a channel (dim 1, conv layout) or, for Linear, RNN and attention outputs and 2-D
tensors, a feature (last dim). A ReLU fed only negatives is 100 % dead, a healthy ReLU (half its outputs zero, every unit sometimes on) 0 %, a LeakyReLU or Tanh
never. ``dead_bins: k`` instead gives the legacy share of values in the lowest k bins.
"""

from __future__ import annotations

import functools
import logging
import math
import sys
import time
import warnings
from collections.abc import Mapping

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from . import tags
from .hooks import DEFAULT_TYPES, Hooks, is_compiled, select_modules
from .render import colorful_panel, fraction_panel
from .stats import HistSpec, accumulate, host_reads_ok, make_spec, summarize

log = logging.getLogger(__name__)

# Fine grid of the adaptive bins: 64 per octave over [2**-34, 2**14), the float32 bit pattern's
# exponent and top 6 mantissa bits, so bin edges are the exact floats 2**e * (1 + m / 64): in
# log2 units (what AUTO_GRID's edges are) 64 steps per octave, at most 1.6 % wide in |a|.
AUTO_PER_OCTAVE = 64
_SHIFT = 23 - 6  # float32: 23 mantissa bits; keep 6
_E_LO, _E_HI = -34, 14
_FIRST = (127 + _E_LO) * AUTO_PER_OCTAVE  # slot (bits >> 17) of 2**-34
_N_FINE = (_E_HI - _E_LO) * AUTO_PER_OCTAVE
_N_SLOTS = 1 << (31 - _SHIFT)  # every non-negative float32 pattern >> 17
_INF_SLOT = 0x7F800000 >> _SHIFT  # +Inf; NaN patterns lie above it


def _fine_edges() -> tuple[float, ...]:
    s = np.arange(_FIRST, _FIRST + _N_FINE + 1)
    e, m = s // AUTO_PER_OCTAVE - 127, s % AUTO_PER_OCTAVE
    return tuple((e + np.log2(1.0 + m / AUTO_PER_OCTAVE)).tolist())


@functools.lru_cache(maxsize=1024)
def _window_edges(j0: int, k: int, n_bins: int) -> np.ndarray:
    """``n_bins + 1`` edges (log10|a|) of the window starting at fine bin ``j0``, ``k`` wide."""
    e = AUTO_GRID.bin_edges()[j0 : j0 + k * n_bins + 1 : k] * math.log10(2.0)
    e.flags.writeable = False
    return e


def _dynamo_compiled() -> bool:
    """Whether torch.compile has traced any frame in this process (dynamo's own counter)."""
    utils = sys.modules.get("torch._dynamo.utils")
    return utils is not None and utils.counters["frames"]["total"] > 0


AUTO_GRID = HistSpec(edges=_fine_edges(), transform="none")  # log2|a| edges
_SLOT_MAP: dict[str, torch.Tensor] = {}


def _slot_map(device: torch.device) -> torch.Tensor:
    """(_N_SLOTS,) buffer position of each slot: underflow (zeros too), fine bins, overflow."""
    key = str(device)
    if key not in _SLOT_MAP:
        f = _N_FINE
        m = torch.empty(_N_SLOTS, dtype=torch.int64)
        m[:_FIRST] = 0
        m[_FIRST : _FIRST + f] = torch.arange(1, f + 1)
        m[_FIRST + f : _INF_SLOT + 1] = f + 1  # finite above the grid and +Inf: overflow
        m[_INF_SLOT + 1 :] = f + 5  # NaN: in no bin, only in the nonfinite count
        _SLOT_MAP[key] = m.to(device)
    return _SLOT_MAP[key]


_SCRATCH: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

# Deferred recording: a layer whose outputs are not modified in place after its hook (checked by
# the tensor version counter on its first recorded call) has its outputs kept (detached views, no
# copy) until the end of the step, then recorded together: a GAN step calls each critic layer
# ~20 times, and one concatenated record costs the operations of one call instead of 20.
# The kept outputs are held at most ``activations.defer_mb`` (default DEFER_MB; 0 = off), then
# recorded at once, so peak memory grows by at most that much; kept outputs larger together than
# DEFER_CAT_NUMEL are recorded one by one at the step's end (there the per-element work dominates
# and a concatenation would be one more pass).
DEFER_MB = 128
DEFER_CAT_NUMEL = 1 << 20


def _scratch(n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    # Reused work buffers (|x|, its bits >> 17), grown to the largest activation: fresh
    # multi-MB tensors per hook call cost more in page faults on CPU than the arithmetic.
    key = str(device)
    have = _SCRATCH.get(key)
    if have is None or have[0].numel() < n:
        m = max(n, 2 * have[0].numel()) if have is not None else n
        have = (torch.empty(m, device=device), torch.empty(m, dtype=torch.int32, device=device))
        _SCRATCH[key] = have
    return have[0][:n], have[1][:n]


def _log2_bits(
    x: torch.Tensor, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(flat float32 view of ``x`` on ``device``, |x| in a reused work buffer, its slots)."""
    if x.device != device:
        x = x.to(device, non_blocking=True)
    flat = x.detach().reshape(-1).float()
    a, idx = _scratch(flat.numel(), flat.device)
    torch.abs(flat, out=a)
    torch.bitwise_right_shift(a.view(torch.int32), _SHIFT, out=idx)  # sign bit cleared: >= 0
    return flat, a, idx


def _slot_counts(idx: torch.Tensor) -> torch.Tensor:
    """(_N_SLOTS,) counts of the slots ``idx``."""
    if host_reads_ok(idx.device):
        return torch.bincount(idx, minlength=_N_SLOTS)
    # bincount on CUDA reads max() back to the host; scatter_add_ does not
    h = torch.zeros(_N_SLOTS, dtype=torch.int64, device=idx.device)
    return h.scatter_add_(0, idx.long(), torch.ones_like(idx, dtype=torch.int64))


def _moments(buf: torch.Tensor, flat: torch.Tensor) -> None:
    """Sum and sum of squares of ``flat`` into their slots of ``buf``."""
    if flat.numel():
        nc = AUTO_GRID.n_counts
        buf[nc + 1 : nc + 3].add_(torch.stack([flat.sum(), torch.dot(flat, flat)]).double())


def fold_slots(buf: torch.Tensor, raw: torch.Tensor) -> None:
    """Slot counts ``raw`` (_N_SLOTS,) into ``buf``'s layout: underflow (zeros too), fine bins,
    overflow (+Inf too), and the NaN and non-finite counts."""
    # raw: (_N_SLOTS,) counts; buf: (AUTO_GRID.size,) float64 on raw's device
    nc = AUTO_GRID.n_counts
    h = raw.to(torch.float64)
    buf.index_add_(0, _slot_map(raw.device), h)  # NaN lands in the nonfinite count
    # NaN count, and +Inf (already in overflow) into the nonfinite count too: the layout of
    # stats.accumulate, [.., nan_count, sum, sum_sq, n_nonfinite]
    buf[nc : nc + 4 : 3].add_(torch.stack([h[_INF_SLOT + 1 :].sum(), h[_INF_SLOT]]))


def accumulate_log2(
    buf: torch.Tensor, x: torch.Tensor, raw: torch.Tensor | None = None
) -> torch.Tensor:
    """Add the :data:`AUTO_GRID` statistics of ``x`` into ``buf`` (``(AUTO_GRID.size,)`` float64),
    the layout of :func:`diagnostics.stats.accumulate`; returns |x| (float32, flat) in a reused
    work buffer, valid until the next call.

    The bin of |a| is its float32 bit pattern shifted right by 17 (exponent and 6 mantissa bits):
    abs, one shift and one bincount into reused buffers, no log, no clamp; exact zeros, Inf and
    NaN fall into their own slots. About 3x cheaper on CPU than the general path.

    Given ``raw`` (``(_N_SLOTS,)`` int64, the caller's), the slot counts are only added to it and
    the caller folds them into ``buf`` later (:func:`fold_slots`, once for many calls): the hooks
    do this, so a forward pays for the bincount and not for the mapping of 16384 slots.
    """
    # x: any shape, any float dtype; buf: (n_fine + 6,) float64 on x's device
    if buf.shape != (AUTO_GRID.size,):
        raise ValueError(f"buffer shape {tuple(buf.shape)} != ({AUTO_GRID.size},)")
    flat, a, idx = _log2_bits(x, buf.device)
    if raw is None:
        fold_slots(buf, _slot_counts(idx))
    else:
        raw.add_(_slot_counts(idx))
    _moments(buf, flat)
    return a


# Window fitted at the first write: from this quantile of the nonzero values to the largest value,
# widened by AUTO_BELOW / AUTO_ABOVE of that span below / above (room for growth in training).
AUTO_QUANTILE = 1e-3
AUTO_BELOW = 0.25
AUTO_ABOVE = 0.5
# Modules whose output's last dim holds the units (features); other outputs: dim 1 (channels).
LAST_DIM_UNITS: tuple[type, ...] = (nn.Linear, nn.Bilinear, nn.RNNBase, nn.MultiheadAttention)


def fit_window(counts: np.ndarray, n_bins: int, n_fine: int = AUTO_GRID.n_bins) -> tuple[int, int]:
    """``(j0, k)``: ``n_bins`` coarse bins of ``k`` fine bins from fine bin ``j0``, fitted to ``counts``.

    ``counts`` ``(n_fine + 2,)`` are fine-grid counts (underflow first, overflow last); raises
    ValueError when no fine bin holds a value (nothing to fit yet).
    """
    c = np.asarray(counts, np.float64)[1:-1]
    if c.shape != (n_fine,) or not c.sum() > 0:
        raise ValueError("fit_window needs counts (n_fine + 2,) with a value in some fine bin")
    cum = np.cumsum(c)
    lo = int(np.searchsorted(cum, AUTO_QUANTILE * cum[-1]))
    hi = int(np.flatnonzero(c)[-1]) + 1
    span = hi - lo
    lo, hi = lo - math.ceil(AUTO_BELOW * span), hi + math.ceil(AUTO_ABOVE * span)
    k = min(max(1, math.ceil((hi - lo) / n_bins)), n_fine // n_bins)
    width = k * n_bins
    j0 = lo - (width - (hi - lo)) // 2  # spare bins split between both ends
    return min(max(j0, 0), n_fine - width), k


def coarsen(counts: np.ndarray, j0: int, k: int, n_bins: int) -> np.ndarray:
    """Coarse ``(n_bins + 2,)`` counts (underflow, bins, overflow) from fine ``counts``."""
    c = np.asarray(counts, np.float64)
    a, b = 1 + j0, 1 + j0 + k * n_bins
    return np.concatenate([[c[:a].sum()], c[a:b].reshape(n_bins, k).sum(axis=1), [c[b:].sum()]])


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


VALUE_LABELS = {
    "none": "activation",
    "abs": "|activation|",
    "log10abs": "log10 |activation|",
    "auto": "log10 |activation|",
}


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
        transform = cfg.get("transform")
        fixed_keys = [k for k in ("lo", "hi", "edges") if cfg.get(k) is not None]
        if transform is None:
            transform = "abs" if fixed_keys else "auto"  # lo/hi/edges alone: the old |a| grid
        self.auto = transform == "auto"
        self.n_bins = int(cfg.get("n_bins") or 40)
        if self.auto:
            if fixed_keys:
                raise ValueError(
                    f"diagnostics.activations: {fixed_keys} need a fixed transform (none, abs or "
                    "log10abs); transform auto fits each layer's edges itself"
                )
            if not 1 <= self.n_bins <= AUTO_GRID.n_bins:
                raise ValueError(f"activations.n_bins: 1..{AUTO_GRID.n_bins} with auto bins")
            self.spec: HistSpec = AUTO_GRID  # what the hooks count; windows make n_bins of it
        else:
            cfg = {k: v for k, v in cfg.items() if v is not None}
            self.spec = make_spec(
                cfg | {"transform": transform}, lo=0.0, hi=10.0, n_bins=40, transform=transform
            )
            self.n_bins = self.spec.n_bins
        mb = cfg.get("defer_mb")
        mb = DEFER_MB if mb is None else mb
        if isinstance(mb, bool) or not isinstance(mb, int | float) or mb < 0:
            raise ValueError(f"diagnostics.activations.defer_mb: expected MB >= 0, got {mb!r}")
        self.defer_bytes = int(mb * 2**20)
        db = cfg.get("dead_bins")
        self.dead_bins = int(db) if db is not None else None  # None: dead units
        if self.auto and self.dead_bins is not None:
            raise ValueError(
                "diagnostics.activations: dead_bins (share of values in the lowest bins) needs a "
                "fixed transform (none, abs or log10abs); with transform auto, dead counts units"
            )
        types = cfg.get("types", None)
        types = DEFAULT_TYPES if types is None else tuple(types)
        self.layers: list[tuple[str, str, nn.Module]] = []
        for mname, model in models.items():
            for lname, m in select_modules(
                model, types=types, names=cfg.get("names"), exclude=cfg.get("exclude")
            ):
                self.layers.append((mname, lname, m))
        self._active = False
        self.seconds = 0.0  # host time inside hooks (launch time only on a GPU)
        self.bufs: list[torch.Tensor] = []
        # auto bins: per-layer slot counts of the recorded forwards, folded into ``bufs`` when
        # recording stops and before every read of the buffers (:meth:`flush`)
        self._raw: list[torch.Tensor | None] = [None] * len(self.layers)
        self._dirty = [False] * len(self.layers)
        # bounded histories (memory and per-write cost flat in run length)
        self.columns = [ColumnHistory(self.n_bins + 2) for _ in self.layers]
        self.dead_hist = [ColumnHistory(1) for _ in self.layers]
        self._snap = [np.zeros(self.n_bins + 2) for _ in self.layers]
        self._snap_dead = [[0.0, 0] for _ in self.layers]  # sum of dead fractions, writes
        # auto bins: (j0, k) per layer once frozen; None before (and the fixed grid's layers)
        self.windows: list[tuple[int, int] | None] = [None] * len(self.layers)
        # dead units: running max |a| per unit since the last write, made at the first call
        self.unit_dim = [-1 if isinstance(m, LAST_DIM_UNITS) else 1 for _, _, m in self.layers]
        self.units: list[torch.Tensor | None] = [None] * len(self.layers)
        self._unit_bad = [False] * len(self.layers)
        # deferred recording (defer_mb): None = not yet known, True = outputs kept until
        # the step's end, False = recorded in the hook (modified in place after it)
        self._defer: list[bool | None] = [None] * len(self.layers)
        self._kept: list[list[tuple[torch.Tensor, int]]] = [[] for _ in self.layers]
        self._probe: list[list[tuple[torch.Tensor, int]]] = [[] for _ in self.layers]
        self._kept_bytes = 0
        self._hooks = Hooks([m for _, _, m in self.layers], self._hook)
        # The hooks are registered only while recording (a registered hook costs a few us per
        # module call even when it returns at once: ~6,000 calls per GAN step); a compiled
        # model keeps them (dynamo does not guard on hooks, so a graph traced without them would
        # never call them): :meth:`register` / :meth:`remove` bracket the attachment.
        self._models = list(models.values())
        self._attached = False
        self._keep = False
        # models whose never-fired layers are still to be checked (one warning per model)
        self._unchecked = list(dict.fromkeys(m for m, _, _ in self.layers))
        self._idle_told: set[str] = set()

    def sizes(self) -> list[int]:
        """Buffer length per layer: the histogram buffer, then dead units and units."""
        return [self.spec.size + 2] * len(self.layers)

    def bind(self, views: list[torch.Tensor]) -> None:
        """Use these views of the shared flat buffer, one per layer."""
        self.flush()
        self.bufs = views
        if self.auto and views:
            _slot_map(views[0].device)  # its host-to-device copy now, not on a training step

    @property
    def active(self) -> bool:
        """Whether the hooks record; switching recording off folds the pending slot counts."""
        return self._active

    @active.setter
    def active(self, on: bool) -> None:
        if self._active and not on:
            self.flush()
        self._active = bool(on)
        if not self._attached:
            return
        if on and not self._hooks.handles:
            if not self._keep and _dynamo_compiled():
                # something was compiled while the hooks were off: a graph of a hooked layer
                # traced then would never call them; retrace with hooks, and keep them
                log.info(
                    "diagnostics: torch.compile used after attach; compile caches reset "
                    "once, activation hooks kept registered from now on"
                )
                self._keep = True
                torch.compiler.reset()
            self._hooks.register()
        elif not on and not self._keep_hooks():
            self._hooks.remove()

    def _keep_hooks(self) -> bool:
        self._keep = self._keep or _dynamo_compiled() or any(is_compiled(m) for m in self._models)
        return self._keep

    def drain(self) -> None:
        """Record the outputs kept since the last drain (the end of a step; also when they
        reach ``defer_mb``). A kept output modified in place since its hook is not recorded:
        that layer is named once and recorded inside its hook from then on."""
        t0 = time.perf_counter()
        for i, kept in enumerate(self._kept):
            if not kept:
                continue
            ok = [t for t, v in kept if t._version == v]
            if len(ok) < len(kept):
                self._defer[i] = False
                mname, lname, _ = self.layers[i]
                warnings.warn(
                    f"diagnostics: the output of {mname}.{lname} was modified in place after its "
                    f"forward hook; {len(kept) - len(ok)} of its recorded outputs are left out, "
                    "and it is recorded inside the hook from now on",
                    stacklevel=2,
                )
            self._record_many(i, ok)
            kept.clear()
        for i, probe in enumerate(self._probe):
            if probe:
                self._defer[i] = all(t._version == v for t, v in probe)
                probe.clear()
        self._kept_bytes = 0
        self.seconds += time.perf_counter() - t0

    def _record_many(self, i: int, outs: list[torch.Tensor]) -> None:
        if not outs:
            return
        first = outs[0]
        same = all(t.shape[1:] == first.shape[1:] and t.dtype == first.dtype for t in outs)
        total = sum(t.numel() for t in outs)
        if len(outs) > 1 and same and first.ndim >= 2 and total <= DEFER_CAT_NUMEL:
            self._record(i, torch.cat(outs))  # units along dim 1 or -1: kept by a cat on dim 0
        else:
            for t in outs:
                self._record(i, t)

    def flush(self) -> None:
        """Record the kept outputs (:meth:`drain`), then fold the slot counts recorded since the
        last flush into the layers' buffers (one 16384-slot mapping per layer, instead of one per
        forward)."""
        self.drain()
        for i, raw in enumerate(self._raw):
            if self._dirty[i]:
                fold_slots(self.bufs[i][: self.spec.size], raw)
                raw.zero_()
                self._dirty[i] = False

    def _hook(self, i: int, module: nn.Module, out: torch.Tensor) -> None:
        if not self.active:
            return
        t0 = time.perf_counter()
        # inference tensors have no version counter; defer_mb = 0: always in the hook
        can_defer = self.defer_bytes > 0 and not out.is_inference()
        d = self._defer[i]
        if d and can_defer:
            self._kept[i].append((out.detach(), out._version))
            self._kept_bytes += out.numel() * out.element_size()
            if self._kept_bytes > self.defer_bytes:
                self.drain()
        else:
            self._record(i, out)
            if d is None and can_defer:
                # first call: is the output left as the hook saw it until the step's end?
                self._probe[i].append((out.detach(), out._version))
        self.seconds += time.perf_counter() - t0

    def _record(self, i: int, out: torch.Tensor) -> None:
        buf = self.bufs[i][: self.spec.size]
        if self.auto:
            raw = self._raw[i]
            if raw is None or raw.device != buf.device:
                raw = self._raw[i] = torch.zeros(_N_SLOTS, dtype=torch.int64, device=buf.device)
            a = accumulate_log2(buf, out, raw=raw).view(out.shape)
            self._dirty[i] = True
        else:
            accumulate(buf, out, self.spec)
            a = None
        if self.dead_bins is None and not self._unit_bad[i]:
            self._units(i, out if a is None else a, absolute=a is not None)

    def _units(self, i: int, out: torch.Tensor, absolute: bool = False) -> None:
        # out: any shape (or its |.|); units along unit_dim (channels of (B, C, ...) or features
        # of (..., F)).
        x = out.detach()
        if x.ndim == 0 or x.numel() == 0:
            return
        d = self.unit_dim[i] % x.ndim if x.ndim >= 2 else 0
        u = self.units[i]
        if u is not None and u.numel() != x.shape[d]:
            if d == x.ndim - 1:
                self._unit_bad[i] = True  # the feature count itself changes: no fixed units
                self.units[i] = None
                return
            # dim 1 changed size (a sequence length, not channels): units are the last dim
            self.unit_dim[i], d, u = -1, x.ndim - 1, None
        a = x if absolute else x.abs()
        m = a.amax(dim=[j for j in range(x.ndim) if j != d]) if x.ndim > 1 else a
        if u is None:
            self.units[i] = m.float()
        else:
            torch.maximum(u, m.float(), out=u)

    def register(self) -> None:
        """Attach: register the forward hooks now if recording (or a model is compiled), else
        at the next recorded step."""
        self._attached = True
        if self._keep_hooks() or self._active:
            self._hooks.register()

    def remove(self) -> None:
        """Detach: remove the forward hooks."""
        self._attached = False
        self._hooks.remove()

    def edges(self, i: int) -> np.ndarray:
        """Layer ``i``'s ``n_bins + 1`` edges (of log10|a| with auto bins; provisional until frozen)."""
        if not self.auto:
            return self.spec.bin_edges()
        return _window_edges(*self._window(i), self.n_bins)

    def _window(self, i: int) -> tuple[int, int]:
        if self.windows[i] is not None:
            return self.windows[i]
        # Nothing in a fine bin yet (only zeros, or nothing): any window gives the same counts.
        k = max(1, AUTO_GRID.n_bins // (2 * self.n_bins))
        return (AUTO_GRID.n_bins - k * self.n_bins) // 2, k

    def discard_units(self) -> None:
        """Forget the dead-unit maxima recorded so far (with the flat buffer's counts)."""
        for kept in self._kept:
            kept.clear()
        self._kept_bytes = 0
        for i, raw in enumerate(self._raw):
            if raw is not None:
                raw.zero_()
            self._dirty[i] = False
        for u in self.units:
            if u is not None:
                u.zero_()

    def pre_reduce(self) -> None:
        """Before the write's reduce: each layer's dead and total unit counts into its buffer.

        The unit maxima are MAX-reduced across ranks first (a unit alive on any rank is alive);
        the counts then ride in the one host copy of the flat buffer (rank 0 adds them).
        """
        self.flush()
        if self.dead_bins is None and self.layers:
            n_layers = len(self.layers)
            n = [0 if u is None else u.numel() for u in self.units]
            ok = [n[i] > 0 and not self._unit_bad[i] for i in range(n_layers)]
            rank0 = True
            if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
                rank0 = dist.get_rank() == 0
                device = self.bufs[0].device
                # unit counts must agree across ranks (a rank without the layer saw no active unit)
                lo = [x if x else 2**62 for x in n]
                bad = [int(b) for b in self._unit_bad]
                t = torch.tensor(n + [-x for x in lo] + bad, dtype=torch.int64, device=device)
                dist.all_reduce(t, op=dist.ReduceOp.MAX)
                t = t.tolist()
                n, lo, bad = (
                    t[:n_layers],
                    [-x for x in t[n_layers : 2 * n_layers]],
                    t[2 * n_layers :],
                )
                ok = [n[i] > 0 and lo[i] == n[i] and not bad[i] for i in range(n_layers)]
                for i in range(n_layers):
                    if ok[i] and self.units[i] is None:
                        self.units[i] = torch.zeros(n[i], device=device)
                parts = [self.units[i] for i in range(n_layers) if ok[i]]
                if parts:
                    flat = torch.cat(parts)
                    dist.all_reduce(flat, op=dist.ReduceOp.MAX)
                    for u, v in zip(parts, flat.split([p.numel() for p in parts]), strict=True):
                        u.copy_(v)
            for i in range(n_layers):
                if ok[i] and rank0:
                    u = self.units[i]
                    self.bufs[i][-2] += (u == 0).sum()
                    self.bufs[i][-1] += u.numel()
                if self.units[i] is not None:
                    self.units[i].zero_()

    def emit(self, host: list[np.ndarray], step: int, writer, scalars: dict, images: bool) -> None:
        """Turn host buffers (one per layer) into records; scalars go into ``scalars``."""
        self._check_fired(step)
        size = self.spec.size
        for i, ((mname, lname, _), b) in enumerate(zip(self.layers, host, strict=True)):
            s = summarize(b[:size], self.spec, dead_bins=self.dead_bins or 1)
            if s["n"] == 0:
                continue  # the layer ran no training-mode forward since the last write
            counts = s["counts"]
            if self.auto:
                if self.windows[i] is None and counts[1:-1].sum() > 0:
                    self.windows[i] = fit_window(counts, self.n_bins)  # frozen from here on
                counts = coarsen(counts, *self._window(i), self.n_bins)
            if self.dead_bins is not None:
                dead = s["dead"]
            else:  # dead units / units; NaN where the units are unknown
                dead = float(b[size] / b[size + 1]) if b[size + 1] > 0 else float("nan")
            tag = tags.act(mname, lname)
            scalars[f"{tag}/mean"] = s["mean"]
            scalars[f"{tag}/std"] = s["std"]
            scalars[f"{tag}/dead"] = dead
            scalars[f"{tag}/nan_count"] = s["nan_count"]
            scalars[f"{tag}/inf_count"] = s["inf_count"]
            self.columns[i].add(counts, step)
            self.dead_hist[i].add(np.array([dead]), step)
            self._snap[i] += counts
            if math.isfinite(dead):
                self._snap_dead[i][0] += dead
                self._snap_dead[i][1] += 1
            if writer is not None:
                writer.histogram(f"{tag}/hist", counts, self.edges(i), step)
        if images and writer is not None:
            self.write_images(writer, step)

    def _check_fired(self, step: int) -> None:
        """Warn once per model about selected layers that never ran a training-mode forward in
        the recorded steps. A model none of whose layers ran yet (a network not trained yet, as
        the critic in a content-only pretraining phase) is named once, and its layers are
        checked at the first write after it starts."""
        for mname in list(self._unchecked):
            mine = [
                (lname, f)
                for (m, lname, _), f in zip(self.layers, self._hooks.fired, strict=True)
                if m == mname
            ]
            silent = [f"{mname}/{lname}" for lname, f in mine if not f]
            if len(silent) == len(mine):
                if mname not in self._idle_told:
                    self._idle_told.add(mname)
                    warnings.warn(
                        f"diagnostics: none of the {len(mine)} selected layers of {mname} has "
                        f"run a training-mode forward in the recorded steps up to the write at "
                        f"step {step}. Fine for a network not trained yet (a pretraining phase); "
                        f"a model compiled and run before Diagnostics was attached keeps its "
                        f"graph without the hooks: pass the compiled module itself",
                        stacklevel=4,
                    )
                continue
            self._unchecked.remove(mname)
            if silent:
                warnings.warn(
                    f"diagnostics: selected layers never ran a training-mode forward in the "
                    f"recorded steps up to the write at step {step}, while the rest of {mname} "
                    f"did: {', '.join(silent)}",
                    stacklevel=4,
                )

    def write_images(self, writer, step: int) -> None:
        """The colorful-dimension and dead-chart images of every layer from their histories
        (all writes so far), at ``step``."""
        for i, (mname, lname, _) in enumerate(self.layers):
            if not self.columns[i].steps.size:
                continue  # no write of this layer yet
            tag = tags.act(mname, lname)
            edges = self.edges(i)
            hist = self.columns[i]
            img = colorful_image(
                hist.array(),
                edges,
                hist.steps,
                title=f"{tag} colorful dimension",
                transform="auto" if self.auto else self.spec.transform,
            )
            writer.image(f"{tag}/colorful", img, step)
            dh = self.dead_hist[i]
            chart = dead_chart(
                dh.mean()[0],
                dh.steps,
                title=f"{tag} dead: units with no nonzero output in the recorded forwards"
                if self.dead_bins is None
                else f"{tag} dead fraction: share of outputs with "
                f"{VALUE_LABELS.get(self.spec.transform, 'value')} < "
                f"{edges[min(self.dead_bins, len(edges) - 1)]:.3g}",
            )
            writer.image(f"{tag}/dead_chart", chart, step)

    def snapshot_arrays(self) -> dict[str, np.ndarray]:
        """Counts (int64), edges and dead fraction (mean over the writes) per layer since the
        previous call; resets them."""
        out = {}
        for i, (mname, lname, _) in enumerate(self.layers):
            c = self._snap[i]
            out[f"act_hist/{mname}/{lname}"] = np.rint(c).astype(np.int64)
            out[f"act_edges/{mname}/{lname}"] = self.edges(i)
            total, k = self._snap_dead[i]
            out[f"act_dead/{mname}/{lname}"] = np.asarray(total / k if k else np.nan, np.float64)
            self._snap[i] = np.zeros_like(c)
            self._snap_dead[i] = [0.0, 0]
        return out

    def meta(self) -> dict:
        """Run-wide facts for snapshots: edges (fixed bins; auto: per snapshot), transform, layers."""
        layers: dict[str, list[str]] = {}
        for mname, lname, _ in self.layers:
            layers.setdefault(mname, []).append(lname)
        return {
            "act_edges": [] if self.auto else self.spec.bin_edges().tolist(),
            "act_transform": "auto" if self.auto else self.spec.transform,
            "act_dead_bins": self.dead_bins,
            "layers": layers,
        }
