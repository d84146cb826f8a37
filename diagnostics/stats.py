"""On-device tensor statistics: fixed-edge histograms with under/overflow, moments, NaN/Inf counts.

One call of :func:`accumulate` adds a tensor's statistics into a float64 device buffer laid out
as :class:`HistSpec` describes::

    [underflow, bin_0 .. bin_{n-1}, overflow, nan_count, sum, sum_squares, n_nonfinite]

(the histogram and the NaN count are one ``bincount`` of n + 3 positions; ``n_values`` is their
sum). :func:`segment_stats` gives the same rows for K tensors at once, in a number of operations
that does not depend on K (one flat view, one ``bincount``, one ``segment_reduce``, one
``_foreach_powsum``; sync-free equivalents on a GPU, see :data:`HOST_READING_OPS`).

Everything stays on the tensor's device: no ``.item()``, no host copy, no data-dependent Python
branch, so it is safe inside forward hooks and optimizer hooks. Buffers add across steps and
across ranks (``all_reduce`` with SUM), and :func:`summarize` turns a host copy into numbers.

Bins are half-open ``[e_i, e_{i+1})``; a value below the first edge is underflow, a value at or
above the last edge is overflow (so ``+Inf`` is overflow and ``-Inf`` underflow). NaN is in no bin
but in its own count. Values within float rounding of an edge may land on either
side of it. Mean and std are over all values, so they become NaN/Inf when any value is; the
``nan_count``/``inf_count`` say how many were.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

TRANSFORMS = ("none", "abs", "log10abs")

# aten ops whose CUDA kernels read a device value back to the host (a sync that drains the launch
# queue): ``bincount`` (its max, for the output size), ``segment_reduce`` (its length checks),
# boolean-mask indexing and ``nonzero`` (the result size), ``unique``, ``repeat_interleave``
# without ``output_size``, ``equal`` and ``_local_scalar_dense`` (``.item()``, ``bool``). On the
# CPU they cost nothing extra and several are the fastest choice, so the statistics pick them
# there and sync-free equivalents (``scatter_add_``, ``index_add_``, ``histc``) elsewhere:
# :func:`host_reads_ok` is that choice. tests/test_host_sync.py runs both training scripts with
# the non-CPU paths forced (:func:`device_paths`) and asserts none of these ops on the step path.
HOST_READING_OPS = frozenset(
    {
        "bincount",
        "segment_reduce",
        "nonzero",
        "masked_select",
        "unique",
        "_unique",
        "_unique2",
        "unique_consecutive",
        "unique_dim",
        "repeat_interleave",
        "equal",
        "is_nonzero",
        "_local_scalar_dense",
    }
)
_FORCE_DEVICE_PATHS = False


def host_reads_ok(device: torch.device) -> bool:
    """True where ops that read the device back (:data:`HOST_READING_OPS`) cost no sync: the
    CPU, unless :func:`device_paths` forces the GPU code paths there."""
    return device.type == "cpu" and not _FORCE_DEVICE_PATHS


@contextlib.contextmanager
def device_paths():
    """Take the GPU code paths (no host-reading op) on the CPU too: tests check on a machine
    without a GPU that the code a GPU runs has no sync in it."""
    global _FORCE_DEVICE_PATHS
    old, _FORCE_DEVICE_PATHS = _FORCE_DEVICE_PATHS, True
    try:
        yield
    finally:
        _FORCE_DEVICE_PATHS = old


@dataclass(frozen=True)
class HistSpec:
    """Histogram edges and the value transform binned (``none``, ``abs`` or ``log10abs``).

    Uniform edges (``lo``, ``hi``, ``n_bins``) take the fast ``histc`` path; explicit ``edges``
    (strictly increasing) take ``bucketize``.
    """

    lo: float = 0.0
    hi: float = 10.0
    n_bins: int = 40
    transform: str = "abs"
    edges: tuple[float, ...] | None = None
    uniform: bool = field(init=False, default=True)

    def __post_init__(self) -> None:
        if self.transform not in TRANSFORMS:
            raise ValueError(f"transform must be one of {TRANSFORMS}, got {self.transform!r}")
        if self.edges is not None:
            e = tuple(float(v) for v in self.edges)
            if len(e) < 2 or any(b <= a for a, b in zip(e, e[1:], strict=False)):
                raise ValueError(f"edges must be strictly increasing with >= 2 entries, got {e}")
            object.__setattr__(self, "edges", e)
            object.__setattr__(self, "lo", e[0])
            object.__setattr__(self, "hi", e[-1])
            object.__setattr__(self, "n_bins", len(e) - 1)
            object.__setattr__(self, "uniform", False)
        elif not (self.hi > self.lo and self.n_bins >= 1):
            raise ValueError(
                f"need hi > lo and n_bins >= 1, got {self.lo}, {self.hi}, {self.n_bins}"
            )

    @property
    def n_counts(self) -> int:
        """Histogram entries: underflow, ``n_bins`` bins, overflow."""
        return self.n_bins + 2

    @property
    def size(self) -> int:
        """Length of the accumulation buffer (counts plus n_values, sum, sum_squares, n_nonfinite)."""
        return self.n_counts + 4

    def bin_edges(self) -> np.ndarray:
        """The ``n_bins + 1`` edges as float64 (a read-only array, made once per spec)."""
        return _bin_edges(self)


@functools.lru_cache(maxsize=4096)
def _bin_edges(spec: HistSpec) -> np.ndarray:
    if spec.edges is not None:
        e = np.asarray(spec.edges, dtype=np.float64)
    else:
        e = np.linspace(spec.lo, spec.hi, spec.n_bins + 1)
    e.flags.writeable = False
    return e


def _transform(x: torch.Tensor, transform: str) -> torch.Tensor:
    if transform == "abs":
        return x.abs()
    if transform == "log10abs":
        return x.abs().log10_()  # 0 -> -inf -> underflow
    return x


_EDGES: dict[tuple, torch.Tensor] = {}


def _edges_on(spec: HistSpec, device: torch.device) -> torch.Tensor:
    # Cached per device: building it per call would be a host-to-device copy on every hook.
    key = (spec.lo, spec.hi, spec.n_bins, spec.edges, str(device))
    if key not in _EDGES:
        _EDGES[key] = torch.tensor(spec.bin_edges(), dtype=torch.float32, device=device)
    return _EDGES[key]


def histogram(x: torch.Tensor, spec: HistSpec, method: str | None = None) -> torch.Tensor:
    """Counts of the transformed values of ``x`` (any shape), ``(n_bins + 2,)`` on its device.

    Args:
        method: ``bincount`` (uniform edges, CPU), ``histc`` (uniform edges, GPU),
            ``bucketize`` (any edges) or ``sort`` (any edges, deterministic on a GPU); None picks
            by edges, device and ``torch.are_deterministic_algorithms_enabled()``. All give the
            same counts.
    """
    # (N,) flattened; bins are computed in float32 whatever the activation dtype (bf16 autocast).
    v = _transform(x.detach().reshape(-1).float(), spec.transform)
    n = spec.n_bins
    if method is None:
        if host_reads_ok(v.device):
            method = "bincount" if spec.uniform else "bucketize"
        elif torch.are_deterministic_algorithms_enabled():
            method = "sort"  # histc and scatter_add_ on CUDA refuse to run in deterministic mode
        else:
            method = "histc" if spec.uniform else "bucketize"
    if method == "bincount":
        w = (spec.hi - spec.lo) / n
        # Arithmetic bucketing: about 2x faster than histc on CPU. Position 0 is underflow,
        # n + 1 overflow (the clamp also catches +-Inf); NaN goes to n + 2, which is cut off.
        t = v.mul(1.0 / w).add_(1.0 - spec.lo / w).clamp_(0.0, n + 1.0).nan_to_num_(n + 2.0)
        return torch.bincount(t.to(torch.int32), minlength=n + 3)[: n + 2]
    if method == "histc":
        w = (spec.hi - spec.lo) / n
        # On a GPU bincount reads its max() back to the host; histc does not. The clamp pulls
        # out-of-range values (and +-Inf) into one extra bin on each side, so histc, which drops
        # values outside its range, drops nothing but NaN.
        v = v.clamp(spec.lo - 0.5 * w, spec.hi + 0.5 * w)
        return torch.histc(v, n + 2, spec.lo - w, spec.hi + w)
    if method not in ("bucketize", "sort"):
        raise ValueError(f"unknown histogram method {method!r}")
    edges = _edges_on(spec, v.device)
    idx = torch.bucketize(v, edges, right=True)  # 0 = underflow, n + 1 = overflow; NaN -> n + 1
    if method == "sort":
        # Deterministic and sync-free: count each position by binary search in the sorted indices.
        idx = torch.where(torch.isnan(v), n + 2, idx).sort().values
        pos = torch.arange(n + 3, device=v.device, dtype=idx.dtype)
        ends = torch.searchsorted(idx, pos, right=True)
        return torch.diff(ends, prepend=ends.new_zeros(1))[: n + 2]
    ones = (~torch.isnan(v)).float()  # NaN adds 0, so it lands in no bin
    out = torch.zeros(n + 2, dtype=torch.float32, device=v.device)
    # scatter_add_, not bincount: bincount on CUDA reads max() back to the host.
    return out.scatter_add_(0, idx, ones)


def _positions(
    v: torch.Tensor, spec: HistSpec, scaled: bool = False, shift=None, out=None
) -> torch.Tensor:
    """Float positions of transformed values ``v`` (N,): 0 underflow, 1..n bins, n + 1 overflow,
    n + 2 NaN; their floor is the count index. With ``scaled``, ``v`` is already multiplied by
    per-element scales and only ``shift`` (a float or (N,)) is added (per-tensor edges of several
    tensors at once). ``out`` (N,) float32 receives them (it may be ``v`` itself)."""
    n = spec.n_bins
    if not spec.uniform:
        idx = torch.bucketize(v, _edges_on(spec, v.device), right=True)  # NaN -> n + 1
        idx = torch.where(torch.isnan(v), n + 2, idx)
        return idx.float() if out is None else out.copy_(idx)
    if scaled:
        t = (v if out is None else out.copy_(v)).add_(shift)  # multiply (done), then add
    else:
        w = (spec.hi - spec.lo) / n
        # Arithmetic bucketing (about 2x faster than histc on CPU); the clamp catches +-Inf.
        t = torch.mul(v, 1.0 / w, out=out).add_(1.0 - spec.lo / w)
    return t.clamp_(0.0, n + 1.0).nan_to_num_(n + 2.0)


def _count(pos: torch.Tensor, size: int, idx: torch.Tensor | None = None) -> torch.Tensor:
    """Counts of the floors of float positions ``pos`` in [0, size), (size,) on their device.
    ``idx`` (int32, like ``pos``) is a reused buffer for the indices on CPU."""
    if host_reads_ok(pos.device):
        # int32: bincount of int64 indices is about 3x slower on CPU (and so is the cast).
        i = pos.to(torch.int32) if idx is None else idx.copy_(pos)  # truncation = floor
        return torch.bincount(i, minlength=size)
    # bincount on CUDA reads max() back to the host; index_add_ does not (and is deterministic
    # under torch.use_deterministic_algorithms; the sums of ones are exact either way).
    ones = torch.ones((), dtype=torch.float64, device=pos.device).expand(pos.numel())
    return torch.zeros(size, dtype=torch.float64, device=pos.device).index_add_(
        0, pos.to(torch.int64), ones
    )


def accumulate(buf: torch.Tensor, x: torch.Tensor, spec: HistSpec) -> None:
    """Add the statistics of ``x`` (any shape, any float dtype) into ``buf`` (``(spec.size,)`` float64)."""
    # buf: (n_bins + 6,) float64 on the statistics device; x: any shape.
    if buf.shape != (spec.size,):
        raise ValueError(f"buffer shape {tuple(buf.shape)} != ({spec.size},)")
    if x.device != buf.device:
        x = x.to(buf.device, non_blocking=True)
    nc = spec.n_counts
    flat = x.detach().reshape(-1)
    if flat.dtype != torch.float32:  # bins and moments in float32 whatever the dtype (bf16)
        flat = flat.float()
    # Histogram and NaN count: one bincount of n + 3 positions into the buffer's first n + 3.
    # add_ on the slices, not +=: item assignment would add a copy_ per slice.
    buf[: nc + 1].add_(_count(_positions(_transform(flat, spec.transform), spec), nc + 1))
    if flat.numel():
        # x * 0 is NaN exactly where x is +-Inf or NaN: on CPU about 7x cheaper than
        # isfinite(x).sum() (bool sums are not vectorised).
        n_nonfinite = flat.mul(0.0).nan_to_num_(1.0).sum()
        moments = torch.stack([flat.sum(), torch.dot(flat, flat), n_nonfinite])
        buf[nc + 1 :].add_(moments)


class Segments:
    """K tensors of fixed sizes laid end to end in one flat vector, with the segment of each element."""

    def __init__(self, sizes: Sequence[int], device: torch.device) -> None:
        self.sizes = [int(n) for n in sizes]
        if not self.sizes or min(self.sizes) < 1:
            raise ValueError(f"segments need sizes >= 1, got {self.sizes}")
        self.k = len(self.sizes)
        self.lengths = torch.tensor(self.sizes, dtype=torch.int64, device=device)
        self.seg = torch.repeat_interleave(
            torch.arange(self.k, device=device), self.lengths, output_size=sum(self.sizes)
        )
        self.total = sum(self.sizes)
        self._base: dict[int, torch.Tensor] = {}
        self._work: dict[tuple[str, torch.dtype], torch.Tensor] = {}

    def base(self, p: int) -> torch.Tensor:
        """``seg * p`` as float (N,): the first count position of each element's segment."""
        if p not in self._base:
            self._base[p] = (self.seg * p).to(torch.float32)
        return self._base[p]

    def work(self, name: str, dtype: torch.dtype) -> torch.Tensor:
        """An (N,) work buffer, kept between calls on CPU: there a fresh multi-MB tensor per
        call costs more in page faults than the arithmetic on it (measured 20-50 ms against
        1-2 ms for a pass over 1.1 M values). On a GPU the caching allocator already reuses
        memory, so nothing is held there."""
        if self.seg.device.type != "cpu":
            return torch.empty(self.total, dtype=dtype, device=self.seg.device)
        key = (name, dtype)
        if key not in self._work:
            self._work[key] = torch.empty(self.total, dtype=dtype)
        return self._work[key]


def segment_stats(
    tensors: Sequence[torch.Tensor],
    spec: HistSpec,
    segs: Segments,
    scale: torch.Tensor | Sequence[float] | None = None,
    shift: torch.Tensor | float | None = None,
) -> torch.Tensor:
    """Rows of :func:`accumulate` for K tensors at once, ``(K, spec.size)`` float64.

    A constant number of operations whatever K: the tensors are concatenated (one ``cat``),
    binned with per-tensor count offsets (one ``bincount``, which also counts the non-finite
    values) and reduced per tensor (one ``segment_reduce``, one ``_foreach_powsum``). ``scale``/``shift`` (K,) float32 give each tensor its own uniform bins,
    position = value * scale + shift (``1/w`` and ``1 - lo/w`` of its edges); ``shift`` may be
    one float shared by all tensors, and ``scale`` a sequence of K host floats (no per-element
    gather: one multiply per tensor slice in a single ``_foreach_mul_``).
    """
    if len(tensors) != segs.k:
        raise ValueError(f"{len(tensors)} tensors for {segs.k} segments")
    nc = spec.n_counts
    p = nc + 1
    with torch.no_grad():
        # Every pass writes into one of three reused (N,) buffers (Segments.work): flat values,
        # float positions, int32 indices (also scratch for the per-element shift).
        flat = segs.work("flat", torch.float32)
        parts = [t.reshape(-1) for t in tensors]
        if any(t.dtype != torch.float32 for t in parts):  # bf16 etc.: bins in float32
            parts = [t.float() for t in parts]
        torch.cat(parts, out=flat)
        pos = segs.work("pos", torch.float32)
        idx = segs.work("idx", torch.int32)
        if spec.transform in ("abs", "log10abs"):
            torch.abs(flat, out=pos)
            if spec.transform == "log10abs":
                pos.log10_()  # 0 -> -inf -> underflow
            v = pos
        else:
            v = flat
        if scale is not None and spec.uniform:  # v is flat here (weights: transform none)
            if isinstance(scale, torch.Tensor):
                torch.index_select(scale, 0, segs.seg, out=pos).mul_(v)
            else:  # one host float per tensor: one in-place multiply of each tensor's slice
                pos.copy_(v)
                torch._foreach_mul_(pos.split(segs.sizes), list(scale))
            if isinstance(shift, torch.Tensor):
                shift = torch.index_select(shift, 0, segs.seg, out=idx.view(torch.float32))
            _positions(pos, spec, scaled=True, shift=shift)
        else:
            _positions(v, spec, out=pos)
        # Non-finite values (+-Inf are also in under/overflow, NaN at n + 2) get their position
        # shifted by p: one bincount of 2p positions per tensor counts both.
        nonfinite = torch.mul(flat, 0.0, out=idx.view(torch.float32)).nan_to_num_(1.0)
        pos.add_(nonfinite, alpha=float(p)).add_(segs.base(2 * p))
        counts = _count(pos, segs.k * 2 * p, idx).view(segs.k, 2, p).to(torch.float64)
        # sums: float32 in, float accumulation (within 1e-5 relative of float64 at 1 M values)
        views = flat.split(segs.sizes)
        moments = [
            _segment_sums(flat, segs).double(),
            _sum_squares(views).double(),
            counts[:, 1].sum(1),
        ]
        return torch.cat([counts.sum(1), torch.stack(moments, 1)], 1)


def _segment_sums(flat: torch.Tensor, segs: Segments) -> torch.Tensor:
    """(K,) float32 sums of the segments of ``flat``: one ``segment_reduce`` on CPU (fastest
    there), one ``index_add_`` elsewhere (``segment_reduce`` checks its lengths on the host)."""
    if host_reads_ok(flat.device):
        return torch.segment_reduce(flat, "sum", lengths=segs.lengths)
    return torch.zeros(segs.k, device=flat.device).index_add_(0, segs.seg, flat)


def _sum_squares(views: list[torch.Tensor]) -> torch.Tensor:
    """(K,) sums of squares, one foreach op (``_foreach_powsum`` where this torch has it, else the
    squared ``_foreach_norm``: same numbers within float32 rounding)."""
    powsum = getattr(torch, "_foreach_powsum", None)
    if powsum is not None:
        return torch.stack(powsum(views, 2))
    return torch.stack(torch._foreach_norm(views, 2)).square()


def summarize(buf: np.ndarray, spec: HistSpec, *, dead_bins: int = 1) -> dict:
    """Host numbers from a (possibly summed) buffer: counts, mean, std, dead, nan_count, inf_count."""
    buf = np.asarray(buf, dtype=np.float64)
    if buf.shape != (spec.size,):
        raise ValueError(f"buffer shape {buf.shape} != ({spec.size},)")
    nc = spec.n_counts
    counts = buf[:nc]
    nan_count, s, ss, n_nonfinite = buf[nc : nc + 4]
    binned = counts.sum()
    n = binned + nan_count
    n_inf = max(0.0, n_nonfinite - nan_count)
    if n > 0:
        mean = s / n
        var = (ss - s * s / n) / (n - 1) if n > 1 else 0.0
        if math.isnan(var):
            std = float("nan")
        else:  # float rounding can leave a tiny negative variance for a constant tensor
            std = math.sqrt(max(var, 0.0))
    else:
        mean = std = float("nan")
    # Lowest k bins; with log10abs the underflow holds the exact zeros (log10 0 = -inf) and
    # everything below 10**lo, the deadest values of all, so it counts too.
    first = 0 if spec.transform == "log10abs" else 1
    dead = float(counts[first : 1 + dead_bins].sum() / binned) if binned > 0 else float("nan")
    return {
        "counts": counts,
        "n": float(n),
        "mean": float(mean),
        "std": float(std),
        "dead": dead,
        "nan_count": float(nan_count),
        "inf_count": float(n_inf),
    }


def make_spec(cfg, *, lo: float, hi: float, n_bins: int, transform: str) -> HistSpec:
    """A :class:`HistSpec` from a config mapping with optional keys lo/hi/n_bins/transform/edges."""
    get = cfg.get if cfg is not None else (lambda k, d=None: d)
    edges = get("edges", None)
    return HistSpec(
        lo=float(get("lo", lo)),
        hi=float(get("hi", hi)),
        n_bins=int(get("n_bins", n_bins)),
        transform=str(get("transform", transform)),
        edges=tuple(float(e) for e in edges) if edges is not None else None,
    )


def layout(sizes: Sequence[int]) -> list[slice]:
    """Consecutive slices of a flat buffer for blocks of the given sizes."""
    out, start = [], 0
    for s in sizes:
        out.append(slice(start, start + s))
        start += s
    return out


def to_numpy(x) -> np.ndarray:
    """A host numpy array of a tensor (one copy, detached) or of anything ``np.asarray`` takes;
    call at write time only (the one home of the host copy for arrays)."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


class Scalars:
    """Running means of scalars reported from anywhere, kept on the device until a write.

    The one scalar stream of a run (stylegan2-ada ``training_stats``): :meth:`report` is cheap
    (tensor additions on the value's device, no host copy, no sync), :meth:`vector` lays every
    tag's sum and count out in one float64 tensor for the write's single ``all_reduce`` and
    host copy, and :meth:`means` turns that host copy into ``{tag: mean}``. A tag's mean is
    ``sum(value * n) / sum(n)`` over every report on every rank since the last write.

    Every rank must report the same tags between two writes (the reduction is positional).
    """

    def __init__(self) -> None:
        self._sums: dict[str, torch.Tensor] = {}
        self._counts: dict[str, float] = {}

    def report(self, tag: str, value: torch.Tensor | float, n: float = 1.0) -> None:
        """Add ``value`` (the mean of ``n`` items; a 0-dim or 1-element tensor, or a number)."""
        if isinstance(value, torch.Tensor):
            v = value.detach().reshape(()).to(torch.float64) * float(n)
        else:
            v = torch.tensor(float(value) * float(n), dtype=torch.float64)
        if tag in self._sums:
            s = self._sums[tag]
            self._sums[tag] = s + v.to(s.device)
        else:
            self._sums[tag] = v.clone()
        self._counts[tag] = self._counts.get(tag, 0.0) + float(n)

    def __len__(self) -> int:
        return len(self._sums)

    @property
    def tags(self) -> list[str]:
        """Tags reported since the last reset, sorted (the order of :meth:`vector`)."""
        return sorted(self._sums)

    def vector(self, device: torch.device | str | None = None) -> torch.Tensor:
        """``[sum_0 .. sum_k-1, n_0 .. n_k-1]`` in :attr:`tags` order, float64, on ``device``."""
        tags = self.tags
        if device is None:
            device = self._sums[tags[0]].device if tags else "cpu"
        if not tags:
            return torch.zeros(0, dtype=torch.float64, device=device)
        sums = torch.stack([self._sums[t].to(device) for t in tags])
        counts = torch.tensor([self._counts[t] for t in tags], dtype=torch.float64, device=device)
        return torch.cat([sums, counts])

    def means(self, host: np.ndarray, tags: Sequence[str] | None = None) -> dict[str, float]:
        """``{tag: mean}`` from a host copy of :meth:`vector` (reduced across ranks or not)."""
        tags = self.tags if tags is None else list(tags)
        k = len(tags)
        return {t: float(host[i] / host[k + i]) for i, t in enumerate(tags) if host[k + i] > 0}

    def local_means(self) -> dict[str, torch.Tensor]:
        """This rank's means as 0-dim device tensors (no reduction, no host copy)."""
        return {t: self._sums[t] / self._counts[t] for t in self.tags}

    def reset(self) -> None:
        """Start the next interval."""
        self._sums, self._counts = {}, {}

    def state_dict(self) -> dict:
        """Sums and counts for a checkpoint: a resumed interval mean equals the straight one."""
        return {"sums": dict(self._sums), "counts": dict(self._counts)}

    def load_state_dict(self, state: dict) -> None:
        self._sums = {str(k): v.to(torch.float64) for k, v in state.get("sums", {}).items()}
        self._counts = {str(k): float(v) for k, v in state.get("counts", {}).items()}
