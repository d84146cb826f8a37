"""Attach diagnostics to any plain PyTorch loop in three lines.

::

    diag = Diagnostics(models={"G": G, "D": D}, optimizers={"G": opt_g, "D": opt_d},
                       writer=writer, cfg=cfg.diagnostics)
    with diag:                      # hooks on entry, removed in finally (also on exception)
        for step in range(diag.last_step + 1, n + 1):
            ...                     # any number of forward/backward/optimizer steps
            diag.report("loss/D", loss_d)   # any scalar, from anywhere: a device tensor or a float
            diag.step(step)         # cheap; writes at step % every == 0 and at total_steps

All statistics live in one flat float64 device buffer (views per layer and per parameter) plus
the scalar stream (:class:`diagnostics.stats.Scalars`: running means of everything reported with
:meth:`Diagnostics.report`). On a training step nothing leaves the device; at a write both are
summed over ranks in ONE ``all_reduce``, copied to the host ONCE, zeroed, turned into records by
each diagnostic, written in one ``Writer.scalars`` call and appended to ONE ``history`` (what
health reads): the pattern of stylegan2-ada's ``training_stats``.

Cadence lives here too: ``every`` is the period of every scalar (losses included) and of the
activation/weight/gradient records; :meth:`Diagnostics.due` answers for the slower periods a
loop registers (``periods=``), each a multiple of ``every`` so that whatever they report is
written, and seen by health, at the step it belongs to. ``total_steps`` makes the last step
due for everything.

Config keys (any Mapping, e.g. an OmegaConf DictConfig): ``enabled``, ``every`` (write period),
``record_every`` (activations and gradients are recorded at steps divisible by it; made a divisor
of ``every`` if it is not; default ``every``: the write step itself), ``image_every`` (period
of the colorful/dead-chart images; default 4 x ``every``, and always at a run's last write),
``activations`` (``enabled``, ``types``, ``names``, ``exclude``, ``lo``, ``hi``, ``n_bins``,
``transform``, ``edges``, ``dead_bins``), ``weights`` (``enabled``, ``n_bins``, ``range``) and
``grads`` (``enabled``, ``lo``, ``hi``, ``n_bins``, ``edges``).
"""

from __future__ import annotations

import contextlib
import math
import os
import time
import warnings
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from . import tags
from .activations import ActivationStats
from .hooks import is_compiled, unwrap
from .params import ParamStats
from .stats import Scalars, layout


def plain(cfg) -> dict:
    """A plain dict (recursively) from any Mapping, e.g. an OmegaConf DictConfig, without OmegaConf."""
    if cfg is None:
        return {}

    def conv(v):
        if isinstance(v, Mapping):
            return {str(k): conv(x) for k, x in v.items()}
        if isinstance(v, Sequence) and not isinstance(v, (str, bytes)):
            return [conv(x) for x in v]
        return v

    return conv(cfg)


# One default write period, the one conf/diagnostics/default.yaml states.
DEFAULT_EVERY = 50
IMAGE_WRITES = 4  # default image_every = IMAGE_WRITES x every
COUNT_SUFFIXES = ("/nan_count", "/inf_count")  # written to TensorBoard once non-zero

# Valid config keys per section; anything else is a typo and an error (``evry`` is not ignored).
CONFIG_KEYS: dict[str, frozenset[str]] = {
    "": frozenset(
        {"enabled", "every", "record_every", "image_every", "activations", "weights", "grads"}
    ),
    "activations": frozenset(
        {
            "enabled",
            "types",
            "names",
            "exclude",
            "lo",
            "hi",
            "n_bins",
            "transform",
            "edges",
            "dead_bins",
            "defer_mb",
        }
    ),
    "weights": frozenset({"enabled", "n_bins", "range"}),
    "grads": frozenset({"enabled", "lo", "hi", "n_bins", "edges"}),
}


def check_keys(c: Mapping) -> None:
    """Raise ValueError naming unknown config keys and listing the valid ones."""
    if not isinstance(c, Mapping):
        raise TypeError(f"diagnostics cfg: expected a mapping, got {type(c).__name__}")
    for section, valid in CONFIG_KEYS.items():
        sub = c if not section else c.get(section)
        if sub is None:
            continue
        if not isinstance(sub, Mapping):
            raise TypeError(
                f"diagnostics cfg: {section!r} must be a mapping, got {type(sub).__name__}"
            )
        bad = sorted(set(sub) - valid)
        if bad:
            where = f"diagnostics.{section}" if section else "diagnostics"
            raise ValueError(f"{where}: unknown config key(s) {bad}; valid keys: {sorted(valid)}")


def _check_models(models) -> dict[str, nn.Module]:
    if isinstance(models, nn.Module):
        return {"model": models}
    if not isinstance(models, Mapping) or not models:
        raise TypeError(
            "models: expected an nn.Module or a non-empty mapping name -> nn.Module, got "
            f"{type(models).__name__}"
        )
    for k, m in models.items():
        if not isinstance(k, str) or not isinstance(m, nn.Module):
            raise TypeError(f"models: expected str -> nn.Module, got {k!r} -> {type(m).__name__}")
    return dict(models)


def _check_optimizers(optimizers, models) -> dict[str, torch.optim.Optimizer] | None:
    if optimizers is None:
        return None
    if isinstance(optimizers, torch.optim.Optimizer):
        optimizers = {next(iter(models)): optimizers} if len(models) == 1 else {"0": optimizers}
    elif isinstance(optimizers, Sequence) and not isinstance(optimizers, (str, bytes)):
        optimizers = {str(i): o for i, o in enumerate(optimizers)}
    if not isinstance(optimizers, Mapping):
        raise TypeError(
            "optimizers: expected a torch.optim.Optimizer, a list of them, or a mapping name -> "
            f"optimizer, got {type(optimizers).__name__}"
        )
    for k, o in optimizers.items():
        if not isinstance(o, torch.optim.Optimizer):
            raise TypeError(
                f"optimizers: expected torch.optim.Optimizer for {k!r}, got {type(o).__name__}"
            )
    return dict(optimizers)


def _check_writer(writer):
    from torch.utils.tensorboard import SummaryWriter

    from .writer import Writer

    if writer is None or isinstance(writer, Writer):
        return writer
    if isinstance(writer, (str, os.PathLike)):
        return Writer(writer)
    if isinstance(writer, SummaryWriter):
        # Reuse the user's SummaryWriter (one event file): build a non-writing Writer, then hand
        # it this SummaryWriter (writer.py is not changed for this).
        w = Writer(writer.log_dir, rank=1)
        w.rank, w.is_writer, w._tb = 0, True, writer
        w._count_events()
        return w
    raise TypeError(
        "writer: expected a diagnostics.Writer, a torch SummaryWriter, a log directory path or "
        f"None, got {type(writer).__name__}"
    )


def _dist() -> tuple[bool, int]:
    if dist.is_available() and dist.is_initialized():
        return True, dist.get_world_size()
    return False, 1


class Diagnostics:
    """The scalar stream, the cadence and the activation, weight and gradient statistics of
    named models, written through a Writer.

    Args:
        models: name -> module (DDP modules are unwrapped), or one bare module (named ``model``).
            Compiled modules (``torch.compile``, ``Module.compile``) are watched through their
            eager module; their statistics equal eager ones (hooks run eagerly at graph breaks).
        optimizers: name -> optimizer, a list of optimizers, or one optimizer; gradients are
            measured right before each ``step()``.
        writer: a :class:`diagnostics.Writer`, an existing ``SummaryWriter`` (reused), a log
            directory path, or None to keep only ``history``.
        cfg: configuration mapping (see the module docstring).
        periods: name -> period of the loop's slower writes (e.g. ``{"physics": 200}``), asked
            with :meth:`due`; a period that is not a multiple of ``every`` is rounded up to one
            (with a warning). ``"scalars"`` is always ``every``.
        total_steps: the run's last step, due for every period (None: no such step).

    Steps may be numbered from 0 or 1: records are kept for steps divisible by
    ``record_every`` whatever the first step is (a resumed loop continues at ``last_step + 1``).
    """

    def __init__(
        self,
        models: Mapping[str, nn.Module],
        optimizers: Mapping[str, torch.optim.Optimizer] | None = None,
        writer=None,
        cfg: Mapping | None = None,
        *,
        periods: Mapping[str, int] | None = None,
        total_steps: int | None = None,
    ) -> None:
        c = plain(cfg)
        check_keys(c)
        models = _check_models(models)
        optimizers = _check_optimizers(optimizers, models)
        writer = _check_writer(writer)
        self.enabled = bool(c.get("enabled", True))
        self.every = int(c.get("every", DEFAULT_EVERY))
        # Defaults: record the write step itself (what is plotted at step s describes step s,
        # as Keras' and Lightning's histogram logging do), and draw the images at every 4th
        # write (each holds the whole history; the costliest part of a write).
        self.record_every = int(c.get("record_every") or self.every)
        self.image_every = int(c.get("image_every") or IMAGE_WRITES * self.every)
        if self.every < 1 or self.record_every < 1:
            raise ValueError(
                f"every and record_every must be >= 1, got {self.every}, {self.record_every}"
            )
        if self.every % self.record_every:
            # A write must fall on a recorded step, or it could report an empty interval; a
            # command-line override of `every` alone should still run, so sample more often.
            fixed = math.gcd(self.every, self.record_every)
            warnings.warn(
                f"diagnostics: every={self.every} is not a multiple of record_every="
                f"{self.record_every}; recording every {fixed} steps",
                stacklevel=2,
            )
            self.record_every = fixed
        self.total_steps = None if total_steps is None else int(total_steps)
        self.periods = {"scalars": self.every}
        for name, p in (periods or {}).items():
            self.periods[name] = self._multiple_of_every(name, int(p))
        self.writer = writer
        # A compiled graph traced before the hooks existed never calls them (dynamo skips hook
        # guards): attach resets the compile caches so the next call traces them in.
        self._compiled = any(is_compiled(m) for m in models.values())
        self.models = {k: unwrap(m) for k, m in models.items()}
        self.scalars = Scalars()
        self.history: dict[str, list[tuple[int, float]]] = defaultdict(list)
        self._counts_seen: set[str] = set()
        self.last: dict[str, float] = {}
        self.write_seconds: dict[str, float] = defaultdict(float)
        self.n_writes = 0
        self.last_step = 0
        self._entered = False
        self._pending = False
        self._images_step: int | None = None  # step of the newest activation images
        self._records_step: int | None = None  # step of the newest write with records
        self._last_step: int | None = None
        self.act = None
        self.params = None
        self._flat = None
        self._device = torch.device("cpu")
        for m in self.models.values():
            p = next(m.parameters(), None)
            if p is not None:
                self._device = p.device
                break
        if not self.enabled:
            return
        acfg = c.get("activations", {}) or {}
        if acfg.get("enabled", True):
            self.act = ActivationStats(models, acfg)  # wrapped: compiled ones keep hooks
        wcfg, gcfg = c.get("weights", {}) or {}, c.get("grads", {}) or {}
        if wcfg.get("enabled", True) or gcfg.get("enabled", True):
            self.params = ParamStats(self.models, optimizers, wcfg, gcfg)
        device = self._device
        sizes_a = self.act.sizes() if self.act else []
        sizes_p = self.params.sizes() if self.params else []
        self._spans = layout(sizes_a + sizes_p)
        self._n_act = len(sizes_a)
        self._flat = torch.zeros(sum(sizes_a) + sum(sizes_p), dtype=torch.float64, device=device)
        views = [self._flat[s] for s in self._spans]
        if self.act:
            self.act.bind(views[: self._n_act])
        if self.params:
            self.params.bind(views[self._n_act :])
        # The first step's number is not known before it ends: record it, and drop what it
        # recorded in step() if it is off the record_every grid (no start_step to get wrong).
        self._set_active(True)

    def _multiple_of_every(self, name: str, p: int) -> int:
        if p < 1:
            raise ValueError(f"period {name!r} must be >= 1, got {p}")
        if p % self.every == 0:
            return p
        fixed = -(-p // self.every) * self.every
        warnings.warn(
            f"diagnostics: the {name} period {p} is not a multiple of every={self.every}; "
            f"using {fixed} so that its scalars are written at their own step",
            stacklevel=3,
        )
        return fixed

    # ------------------------------------------------------------------------- stream, cadence
    def report(self, tag: str, value: torch.Tensor | float, n: float = 1.0) -> None:
        """Add a scalar (a device tensor or a float; the mean of ``n`` items) to the stream.

        Cheap on any step (no host copy, no sync); the interval's mean over all reports and all
        ranks is written at the next write and appended to :attr:`history`.
        """
        self.scalars.report(tag, value, n)

    def due(self, name: str | int, step: int) -> bool:
        """True if the period ``name`` (``scalars``, one given in ``periods``, or a plain period
        in steps for writes that report no scalars) falls on ``step``; always at ``total_steps``."""
        every = self.periods[name] if isinstance(name, str) else int(name)
        return step % every == 0 or step == self.total_steps

    def flush_scalars(self, step: int) -> None:
        """Write the stream alone now (e.g. the untrained model's losses at step 0, before the
        loop): the same one reduction, host copy, writer call and history as a full write."""
        self._write(step, records=False)

    def state_dict(self) -> dict:
        """The stream's interval sums, the history and the last step, for a checkpoint (plain
        containers and tensors: loads with ``weights_only=True``)."""
        return {
            "step": self.last_step,
            "scalars": self.scalars.state_dict(),
            "history": {
                t: torch.tensor(v, dtype=torch.float64).reshape(-1, 2)
                for t, v in self.history.items()
            },
        }

    def load_state_dict(self, state: Mapping) -> None:
        """Continue after ``state["step"]``: a resumed run writes the same means, feeds health
        the same history, and records the same steps as a straight one."""
        self.last_step = int(state.get("step", 0))
        self.scalars.load_state_dict(state.get("scalars", {}))
        self.history.clear()
        for t, v in state.get("history", {}).items():
            self.history[str(t)] = [(int(a), float(b)) for a, b in v.tolist()]
        self._counts_seen = {
            t
            for t, v in self.history.items()
            if t.endswith(COUNT_SUFFIXES) and any(b for _, b in v)
        }

    # ------------------------------------------------------------------------------ lifecycle
    def __enter__(self) -> Diagnostics:
        if self.enabled:
            if self._compiled:
                torch.compiler.reset()
            try:
                if self.act:
                    self.act.register()
                if self.params:
                    self.params.register()
            except BaseException:
                self._remove()
                raise
        self._entered = True
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        # A collective at exit is safe only when every rank got here normally.
        self._close(final_write=exc_type is None)

    def _close(self, *, final_write: bool) -> None:
        try:
            if final_write and self._pending and self._last_step is not None:
                self._write(self._last_step, final=True)
            elif (
                final_write
                and self._records_step is not None
                and self._images_step != self._records_step
            ):
                # the run ended on a write without images: draw them from the histories, so
                # the final picture is always there
                with self._timed("act"):
                    if self.act and self.writer is not None and self.writer.is_writer:
                        self.act.write_images(self.writer, self._records_step)
        finally:
            self._remove()
            self._entered = False
            if self.enabled and self.writer is not None and self.writer.is_writer:
                report = self.summary()
                self.writer.text(tags.DIAGNOSTICS_COST, _markdown_pre(report), self._last_step or 0)
                self.writer.flush()

    def keep_pending(self) -> None:
        """Leave the steps since the last write unwritten when the block ends: they are in a
        checkpoint (:meth:`state_dict`) and the resumed run writes them with its next write, so a
        preempted run logs the same points as a straight one."""
        self._pending = False

    def attach(self) -> Diagnostics:
        """Register the hooks outside a ``with`` block (idempotent); pair with :meth:`detach`."""
        if self._entered:
            return self
        return self.__enter__()

    def detach(self, *, final_write: bool = True) -> None:
        """Remove the hooks, as leaving the ``with`` block does: with ``final_write`` the steps
        since the last write are written first; pass False after an exception (no collective)."""
        if self._entered:
            self._close(final_write=final_write)

    def _remove(self) -> None:
        if self.act:
            self.act.remove()
        if self.params:
            self.params.remove()

    def _set_active(self, on: bool) -> None:
        self._active = on
        if self.act:
            self.act.active = on
        if self.params:
            self.params.active = on

    # -------------------------------------------------------------------------------- the step
    def step(self, step: int) -> bool:
        """End of training step ``step``: write when ``due("scalars", step)``; choose the next
        recording. Returns True if it wrote (then :attr:`last` and :attr:`history` are fresh)."""
        first = self._last_step is None
        self.last_step = self._last_step = int(step)
        self._pending = True
        if self.enabled and self.act:
            self.act.drain()  # the step's kept outputs (deferred recording)
        if self.enabled and self.params:
            self.params.on_step()
        if first and self._flat is not None and step % self.record_every:
            self._flat.zero_()
            if self.act:
                self.act.discard_units()
        wrote = self.due("scalars", step)
        if wrote:
            self._write(step)
        if self.enabled:  # the last step of a run is recorded too: the final write has data
            nxt = step + 1
            self._set_active(nxt % self.record_every == 0 or nxt == self.total_steps)
        return wrote

    @contextlib.contextmanager
    def _timed(self, name: str) -> Iterator[None]:
        ctx = self.writer.cost(name) if self.writer is not None and self.writer.is_writer else None
        t0 = time.perf_counter()
        try:
            if ctx is None:
                yield
            else:
                with ctx:
                    yield
        finally:
            self.write_seconds[name] += time.perf_counter() - t0

    def _reduce_max(self, t: torch.Tensor) -> np.ndarray:
        on, world = _dist()
        if on and world > 1:
            t = t.clone()
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return t.detach().to("cpu", copy=True).double().numpy()

    def _write(self, step: int, records: bool = True, final: bool = False) -> None:
        on, world = _dist()
        writer = self.writer if self.writer is not None and self.writer.is_writer else None
        full, records = records, records and self.enabled
        if records and self.params:
            with self._timed("params"):
                self.params.measure_weights(self._reduce_max)
        if records and self.act:
            self.act.pre_reduce()  # dead-unit counts into the flat buffer (a collective)
        with self._timed("reduce"):
            tags = self.scalars.tags
            flat = self._flat if records else None
            if flat is None:
                flat = torch.zeros(0, dtype=torch.float64, device=self._device)
            red = torch.cat([flat, self.scalars.vector(flat.device)])
            if on and world > 1:
                dist.all_reduce(red)  # the one reduction of this write
            host = red.to("cpu", copy=True).numpy()  # the one host copy of this write
            if records:
                self._flat.zero_()
            self.scalars.reset()
        n_flat = flat.numel()
        scalars = self.scalars.means(host[n_flat:], tags)
        if records:
            segs = [host[s] for s in self._spans]
            # and at the last write of a run, so its final picture is always there
            images = step % self.image_every == 0 or final or step == self.total_steps
            if self.act:
                with self._timed("act"):
                    self.act.emit(segs[: self._n_act], step, writer, scalars, images)
                self._images_step = step if images else self._images_step
            self._records_step = step
            if self.params:
                with self._timed("params"):
                    self.params.emit(segs[self._n_act :], step, writer, scalars, world)
        with self._timed("scalars"):
            for tag, v in scalars.items():
                self.history[tag].append((step, float(v)))
                if tag.endswith(COUNT_SUFFIXES) and v:
                    self._counts_seen.add(tag)
            self.last = scalars
            if writer is not None:
                # the one writer call for every scalar; NaN/Inf counts become charts only from
                # their first non-zero value on: a hundred flat-zero charts bury the ones that
                # matter (the history keeps every value)
                writer.scalars(
                    {
                        t: v
                        for t, v in scalars.items()
                        if not t.endswith(COUNT_SUFFIXES) or t in self._counts_seen
                    },
                    step,
                )
        if full:
            self.n_writes += 1
            self._pending = False

    # ---------------------------------------------------------------------------------- output
    def summary(self) -> str:
        """Cost report: per diagnostic, seconds on the training step, seconds writing, MB written
        (the writer's one table, :meth:`Writer.cost_report`, where this rank writes)."""
        rec = {
            "act": self.act.seconds if self.act else 0.0,
            "params": self.params.seconds if self.params else 0.0,
        }
        tail = f"writes: {self.n_writes}, every {self.every}, record_every {self.record_every}"
        if self.writer is not None and self.writer.is_writer:
            self.writer.record_seconds.update({k: v for k, v in rec.items() if v > 0})
            return self.writer.cost_report() + "\n" + tail
        names = [
            n for n in ("act", "params", "reduce", "scalars") if n in rec or n in self.write_seconds
        ]
        wb = self.writer.bytes if self.writer is not None else {}
        lines = [f"{'diagnostic':<12} {'record s':>10} {'write s':>10} {'MB written':>11}"]
        for n in names:
            lines.append(
                f"{n:<12} {rec.get(n, 0.0):>10.3f} {self.write_seconds.get(n, 0.0):>10.3f}"
                f" {wb.get(n, 0) / 1e6:>11.3f}"
            )
        lines.append(tail)
        return "\n".join(lines)

    def snapshot_arrays(self) -> dict[str, np.ndarray]:
        """``act_hist/<model>/<layer>`` int64 counts and ``act_dead/...`` since the previous call."""
        return self.act.snapshot_arrays() if self.act else {}

    def snapshot_meta(self) -> dict:
        """Run-wide facts for snapshots: ``act_edges`` and ``layers`` per model."""
        return self.act.meta() if self.act else {"act_edges": [], "layers": {}}


def _markdown_pre(text: str) -> str:
    """Markdown code block (4-space indent) so TensorBoard keeps the table's columns."""
    return "\n".join("    " + line for line in text.splitlines())
