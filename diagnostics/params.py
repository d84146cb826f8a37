"""Weight and gradient statistics per parameter tensor, on the device.

Weights are measured at each write (they are state, not a stream). Gradients are measured right
before each ``optimizer.step`` through ``Optimizer.register_step_pre_hook``, so in a GAN both the
generator's and the critic's gradients are seen exactly as applied: the generator's backward also
fills the critic's ``.grad``, but the critic's own pre-step hook runs after its ``zero_grad`` and
backward. A model without an optimizer has its ``.grad`` read at ``Diagnostics.step`` instead.

All parameter tensors of one optimizer step (and all weights at a write) are binned together:
one flat view, per-tensor count offsets and one ``bincount`` (:func:`diagnostics.stats.segment_stats`),
so the number of operations does not grow with the number of tensors.

Records: ``weights/<model>/<param>/{hist,norm}``; ``grad/<model>/<param>/{hist,norm}`` (histogram
of log10|g|, norm = root mean square over the optimizer steps since the last write) and per network
``grad/<model>/{norm,nan_count,inf_count}``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from . import tags
from .hooks import unwrap
from .stats import HistSpec, Segments, accumulate, make_spec, segment_stats, summarize


class ParamStats:
    """Device buffers and optimizer hooks for weight and gradient statistics of several models."""

    name = "params"

    def __init__(
        self,
        models: Mapping[str, nn.Module],
        optimizers: Mapping[str, torch.optim.Optimizer] | None = None,
        weights_cfg: Mapping | None = None,
        grads_cfg: Mapping | None = None,
    ) -> None:
        wcfg, gcfg = dict(weights_cfg or {}), dict(grads_cfg or {})
        self.weights_on = bool(wcfg.get("enabled", True))
        self.grads_on = bool(gcfg.get("enabled", True))
        self.w_bins = int(wcfg.get("n_bins", 40))
        # Range of the signed weight histogram: a number, or "auto" = 2 x max|w| at the first write.
        self.w_range = wcfg.get("range", "auto")
        self.w_specs: list[HistSpec] | None = None
        self.g_spec = make_spec(gcfg, lo=-12.0, hi=2.0, n_bins=56, transform="log10abs")
        self.models = {k: unwrap(m) for k, m in models.items()}
        self.model_names = list(self.models)
        self.params: list[tuple[str, str, nn.Parameter]] = []
        for mname, m in self.models.items():
            for pname, p in m.named_parameters():
                if p.requires_grad and p.numel() > 0:
                    self.params.append((mname, pname, p))
        self._index = {id(p): i for i, (_, _, p) in enumerate(self.params)}
        self._model_of = [self.model_names.index(m) for m, _, _ in self.params]
        self.optimizers = dict(optimizers or {})
        owned = set()
        for opt in self.optimizers.values():
            for g in opt.param_groups:
                owned.update(id(p) for p in g["params"])
        # Models with parameters no optimizer holds: their grads are read at Diagnostics.step.
        self._fallback = [i for i, (_, _, p) in enumerate(self.params) if id(p) not in owned]
        self.active = False
        self.seconds = 0.0
        self.w_bufs: list[torch.Tensor] = []
        self.g_bufs: list[torch.Tensor] = []
        self.n_steps: torch.Tensor | None = None
        self.w_mat: torch.Tensor | None = None  # (n_params, size) views of the shared buffer
        self.g_mat: torch.Tensor | None = None
        self._segs: dict[tuple[int, ...], tuple[Segments, torch.Tensor, torch.Tensor]] = {}
        self._w_affine: tuple[torch.Tensor | list[float], torch.Tensor | float] | None = None
        self._handles: list = []

    def sizes(self) -> list[int]:
        """Buffer lengths: weights per param, grads per param, one optimizer-step counter per model."""
        w = (
            [HistSpec(-1.0, 1.0, self.w_bins, "none").size] * len(self.params)
            if self.weights_on
            else []
        )
        g = [self.g_spec.size] * len(self.params) if self.grads_on else []
        return w + g + [len(self.model_names)]

    def bind(self, views: list[torch.Tensor]) -> None:
        """Use these views of the shared flat buffer (order of :meth:`sizes`)."""
        n = len(self.params)
        k = 0
        if self.weights_on:
            self.w_bufs, k = views[:n], n
            self.w_mat = _rows(self.w_bufs)
        if self.grads_on:
            self.g_bufs, k = views[k : k + n], k + n
            self.g_mat = _rows(self.g_bufs)
        self.n_steps = views[k]

    def register(self) -> None:
        """Register the optimizer step pre-hooks."""
        if self._handles or not self.grads_on:
            return
        for opt in self.optimizers.values():
            self._handles.append(opt.register_step_pre_hook(self._pre_step))
            # The layout of all the optimizer's parameters, built here: on the step path its
            # index tensors would be host-to-device copies.
            idx = [
                self._index[id(p)]
                for g in opt.param_groups
                for p in g["params"]
                if id(p) in self._index
            ]
            if idx and self.n_steps is not None:
                self._layout(tuple(idx))
        if self._fallback and self.n_steps is not None:
            self._layout(tuple(self._fallback))

    def remove(self) -> None:
        """Remove the optimizer hooks."""
        for h in self._handles:
            h.remove()
        self._handles = []

    def _layout(self, idx: tuple[int, ...]) -> tuple[Segments, torch.Tensor, torch.Tensor]:
        """Segments of these parameters, their buffer rows and their models' counter rows (cached)."""
        if idx not in self._segs:
            dev = self.n_steps.device
            segs = Segments([self.params[i][2].numel() for i in idx], dev)
            rows = torch.tensor(idx, dtype=torch.int64, device=dev)
            models = sorted({self._model_of[i] for i in idx})
            self._segs[idx] = (segs, rows, torch.tensor(models, dtype=torch.int64, device=dev))
        return self._segs[idx]

    def _grads(self, indices) -> None:
        dev = self.n_steps.device
        idx, odd = [], []
        for i in indices:
            g = self.params[i][2].grad
            if g is None or g.is_sparse:
                continue
            (odd if g.device != dev else idx).append(i)  # elsewhere: one tensor at a time
        for i in odd:
            accumulate(self.g_bufs[i], self.params[i][2].grad, self.g_spec)
        if idx:
            segs, rows, models = self._layout(tuple(idx))
            grads = [self.params[i][2].grad for i in idx]
            self.g_mat.index_add_(0, rows, segment_stats(grads, self.g_spec, segs))
        touched = sorted({self._model_of[i] for i in idx + odd})
        if touched:
            if odd:
                for j in touched:
                    self.n_steps[j] += 1
            else:
                self.n_steps.index_add_(0, self._layout(tuple(idx))[2], self._one(len(touched)))

    def _one(self, n: int) -> torch.Tensor:
        return torch.ones((), dtype=self.n_steps.dtype, device=self.n_steps.device).expand(n)

    def _pre_step(self, opt: torch.optim.Optimizer, args, kwargs):
        if not self.active:
            return
        t0 = time.perf_counter()
        idx = [
            self._index[id(p)]
            for g in opt.param_groups
            for p in g["params"]
            if id(p) in self._index
        ]
        closure = kwargs.get(
            "closure", args[1] if len(args) > 1 else None
        )  # args[0]: the optimizer
        if closure is None:
            self._grads(idx)
            self.seconds += time.perf_counter() - t0
            return None
        # step(closure) (LBFGS, Lightning): .grad now is the previous step's; measure it right
        # after the closure's first backward in this step, the gradient at this step's weights.
        done = []

        def measured_closure():
            loss = closure()
            if not done:
                done.append(True)
                t1 = time.perf_counter()
                self._grads(idx)
                self.seconds += time.perf_counter() - t1
            return loss

        self.seconds += time.perf_counter() - t0
        if "closure" in kwargs:
            return args, {**kwargs, "closure": measured_closure}
        return (args[0], measured_closure, *args[2:]), kwargs

    def on_step(self) -> None:
        """At a recorded training step: read ``.grad`` of parameters no optimizer holds."""
        if self.active and self.grads_on and self._fallback:
            t0 = time.perf_counter()
            self._grads(self._fallback)
            self.seconds += time.perf_counter() - t0

    def measure_weights(self, reduce_max) -> None:
        """Add the weights' statistics into their buffers (at a write, before the reduction).

        Args:
            reduce_max: function making a host float64 array equal on all ranks (max over ranks).
        """
        if not self.weights_on or not self.params:
            return
        if self.w_specs is None:
            if self.w_range == "auto":
                # One host copy, at the first write only: the edges stay fixed for the run.
                with torch.no_grad():
                    m = torch.stack([p.detach().abs().amax().float() for _, _, p in self.params])
                r = [2.0 * v if math.isfinite(v) and v > 0 else 1.0 for v in reduce_max(m).tolist()]
            else:
                r = [float(self.w_range)] * len(self.params)
            self.w_specs = [HistSpec(-x, x, self.w_bins, "none") for x in r]
        dev = self.w_mat.device
        if any(p.device != dev or p.is_sparse for _, _, p in self.params):
            with torch.no_grad():
                for (_, _, p), b, spec in zip(self.params, self.w_bufs, self.w_specs, strict=True):
                    accumulate(b, p.detach(), spec)
            return
        if self._w_affine is None:
            # Each tensor's own edges [-r, r] as position = w * scale + shift, in float32 as the
            # single-tensor path computes them (so the counts are the same). The shift,
            # 1 + n_bins / 2, is the same for every tensor: one number, no per-element gather.
            widths = [(sp.hi - sp.lo) / sp.n_bins for sp in self.w_specs]
            shifts = [1.0 - sp.lo / w for sp, w in zip(self.w_specs, widths, strict=True)]
            # float32 values as host floats (built on the host: no device sync); on CPU one
            # multiply per tensor slice beats a per-element gather of the scales
            scale = torch.tensor([1.0 / w for w in widths], dtype=torch.float32).tolist()
            shift = torch.tensor(shifts, dtype=torch.float32).tolist()
            if dev.type != "cpu":
                scale = torch.tensor(scale, device=dev)
            shift = shift[0] if len(set(shift)) == 1 else torch.tensor(shift, device=dev)
            self._w_affine = (scale, shift)
        segs, _, _ = self._layout(tuple(range(len(self.params))))
        spec = HistSpec(-1.0, 1.0, self.w_bins, "none")  # the layout; edges come from the affine
        self.w_mat += segment_stats([p for _, _, p in self.params], spec, segs, *self._w_affine)

    def emit(self, host: list[np.ndarray], step: int, writer, scalars: dict, world: int) -> None:
        """Records from host buffers (order of :meth:`sizes`); scalars go into ``scalars``."""
        n = len(self.params)
        k = 0
        if self.weights_on and self.w_specs is not None:
            # Every rank measured the same weights: the sum over ranks is world x one rank.
            for (mname, pname, _), b, spec in zip(self.params, host[:n], self.w_specs, strict=True):
                s = summarize(b / world, spec)
                tag = tags.weights(mname, pname)
                scalars[f"{tag}/norm"] = math.sqrt(max(b[spec.n_counts + 2] / world, 0.0))
                if writer is not None:
                    writer.histogram(f"{tag}/hist", s["counts"], spec.bin_edges(), step)
        if self.weights_on:
            k = n
        if not self.grads_on:
            return
        # Gradients are equal across ranks under DDP, so divide by world as for weights.
        steps = host[-1] / world
        g_edges = self.g_spec.bin_edges()
        sq = {m: 0.0 for m in self.model_names}
        bad = {m: [0.0, 0.0] for m in self.model_names}
        for (mname, pname, _), b in zip(self.params, host[k : k + n], strict=True):
            b = b / world
            ns = steps[self.model_names.index(mname)]
            if ns <= 0 or b[: self.g_spec.n_counts + 1].sum() == 0:
                continue
            s = summarize(b, self.g_spec)
            ss = b[self.g_spec.n_counts + 2]
            tag = tags.grad(mname, pname)
            scalars[f"{tag}/norm"] = math.sqrt(max(ss / ns, 0.0))
            sq[mname] += ss / ns
            bad[mname][0] += s["nan_count"]
            bad[mname][1] += s["inf_count"]
            if writer is not None:
                writer.histogram(f"{tag}/hist", s["counts"], g_edges, step)
        for j, mname in enumerate(self.model_names):
            if steps[j] <= 0:
                continue
            scalars[tags.grad(mname, what="norm")] = math.sqrt(max(sq[mname], 0.0))
            scalars[tags.grad(mname, what="nan_count")] = bad[mname][0]
            scalars[tags.grad(mname, what="inf_count")] = bad[mname][1]


def _rows(views: list[torch.Tensor]) -> torch.Tensor | None:
    """The (n, size) matrix of n equal, consecutive views of one flat buffer."""
    if not views:
        return None
    v0, size = views[0], views[0].numel()
    if any(
        v.numel() != size or v.data_ptr() != v0.data_ptr() + i * size * v0.element_size()
        for i, v in enumerate(views)
    ):
        raise ValueError("parameter buffers must be equal, consecutive views of one buffer")
    return v0.as_strided((len(views), size), (size, 1))
