"""Training health: early alerts that tell the user, in plain words, that a run is going wrong.

Two parts:

1. A non-finite guard for the training step, :class:`StepGuard`: its verdict stays on the device
   (as ``GradScaler`` keeps ``found_inf``) and masks the optimizer step there, so the step has no
   host sync; the loop reads it at a write and stops with the last good checkpoint::

       guard = StepGuard({"D": (D, opt_d)})
       loss_d.backward()
       guard.check("D", loss_d, step)          # device only; a bad update is masked
       opt_d.step()
       ...                                     # at a write, before any checkpoint:
       bad = guard.verdict()                   # one host copy: None or (step, message)
       if bad is not None:
           monitor.report_nonfinite(*bad)
           raise StopTraining(bad[1])          # the last checkpoint written is the last good state

   ``all_finite`` and :func:`nonfinite_report` remain for loops that sync on the flag themselves.

2. :class:`HealthMonitor`, fed after each write with the host-side statistics stream ``history``
   (``{tag: [(step, value), ...]}``, e.g. the diagnostics core's ``diag.history``), runs the checks below.
   Every update writes a 0/1 scalar ``health/<check>`` per enabled check; an alert that starts or clears
   writes a text entry ``health/alerts`` and one console line (``logging``); ``RUN/health.json`` collects
   each alert with the step it first fired; a ``stop`` policy sets ``should_stop``; ``verdict()`` is a
   one-paragraph summary for the end of the run.

Wiring into a GAN loop (statistics reach the host only at a write, all through one stream)::

    monitor = HealthMonitor(cfg.health, writer, run_dir, total_steps=n_steps)
    balance = GanBalance(diag.scalars)                       # diagnostics.gan, into the stream
    ...                                                      # in the step, device-only:
    diag.report("loss/D", loss_d); balance.update(s_real, s_fake)
    ...
    if diag.step(step):                                      # it wrote: diag.history is fresh
        monitor.update(step, diag.history)
    if monitor.should_stop: ...                              # stop; the last checkpoint is kept
    ...
    monitor.finish(step)                                     # verdict: TensorBoard, health.json, log

Configuration (a plain Mapping; keys not given take the values in ``DEFAULTS``, unknown keys fail)::

    health:
      nonfinite:            # a non-finite loss or gradient (guard report, or a non-finite logged value)
        policy: stop        # warn | stop, every check has one
        tags: ["loss/*", "grad/*norm", "gan/grad_norm/*"]
        count_tags: ["act/*/nan_count", "act/*/inf_count", "grad/*/nan_count", "grad/*/inf_count"]  # > 0 fires
      crash_cycles:         # rise-and-crash cycles in a layer's activation statistics (fast.ai lesson 16)
        tags: ["act/*/std"] # fnmatch patterns; '*' also matches '/'
        exclude: ["act/D/*"]  # a WGAN-GP critic's healthy layers swing 5-10x between writes
                            # (benchmarks/health.py): its rise and fall is not a crash
        rise: 3.0           # a cycle: the value rises to >= rise x its last trough ...
        drop: 0.33          # ... then falls to <= drop x that peak (a WGAN critic's healthy layers
                            # swing by 2x between writes: benchmarks/health.py)
        n_cycles: 2         # cycles needed in one series ("repeatedly")
        floor: 1.0e-6       # values below count as this (no ratios of zeros)
        smooth: 3           # running median over this many writes first: a one-write spike is noise
      dead_layers:
        tags: ["act/*/dead"]
        threshold: 0.9      # dead fraction above this ...
        n_writes: 3         # ... for this many consecutive writes
        std_max: 1.0e-4     # the layer's <layer>/std must also stay <= this (outputs constant); null:
                            # dead fraction alone. With N(0, 0.02) init a healthy layer's |a| can sit
                            # entirely in the first bin (< 0.25) with std ~0.02: small, not dead
      critic_overpowering:
        gap_tags: ["gan/gap"]  # runaway: |value| > runaway x max(reference, floor) for n_writes
        loss_tags: ["loss/D"]
        runaway: 10.0
        floor: 1.0
        g_grad_tags: ["grad/G/norm", "gan/grad_norm/G"]  # vanishing: < vanish x reference for n_writes
        vanish: 0.01
        gp_tags: ["loss/gp"]  # WGAN-GP penalty mean((|grad D| - 1)^2), unscaled by lambda ...
        gp_max: 10.0        # ... above this for n_writes: the critic's gradients are > 4x off the
                            # Lipschitz target (its scores have run away); null disables
        n_ref: 3            # reference = median |value| of the first n_ref writes
        n_writes: 3
      mode_collapse:
        tags: ["gan/diversity"]
        min: 1.0e-4         # diversity below this for n_writes consecutive writes ...
        n_writes: 2
        rising: 1.5         # ... and not growing by this factor over them (null: ignore the trend);
                            # learned noise scales start at 0, so a healthy run starts near 0 but rises
        warmup_frac: 0.1    # quiet for the first 10 % of the run, for the same reason
        after_tags: ["loss/G"]  # only writes from the first adversarial loss on (pretraining
                            # with MSE ignores the noise by design)
      spectrum:
        tags: ["spectrum/*/ratio_high"]
        low: 0.2            # generated/truth power at high k outside [low, high] ...
        high: 5.0
        n_writes: 3         # ... for n_writes consecutive writes after the warm-up
        warmup_frac: 0.5
      value_range:          # generated values leaving the scaled data range [0, 1] (+-10 %)
        tags: ["gan/outside_range"]   # GanBalance.update_range on the probe draws, every write
        max: 0.02           # fraction outside above this for n_writes
        n_writes: 2
        picture: slices/G/probe0
      blowup:               # a loss far above its best so far (generator blow-up, lr spike)
        tags: ["loss/mse", "loss/G_mse", "loss/AE/train", "loss/AE/val"]
        factor: 10.0        # > factor x min of the earlier writes (>= n_ref of them) ...
        n_ref: 2
        n_writes: 2         # ... for n_writes
        floor: 1.0e-12
      skill:                # worse than the baseline AND getting worse
        tags: ["skill/mse_ratio"]  # GAN: MSE over trilinear's; autoencoder: over climatology's
        max: 1.0            # above the baseline for n_writes and rising, or ...
        hard_max: 10.0      # ... above this and not below improve x the first of those writes
        improve: 0.8
        n_writes: 2
        picture: skill/figure
        warmup_frac: 0.1
      critic_oscillation:   # the critic's real-fake score swinging
        tags: ["gan/gap"]
        window: 6           # over the last window writes ...
        n_flips: 3          # ... sign flips beyond +-floor, or
        floor: 1.0
        amplitude: 50.0     # ... a peak-to-peak range above this
      discriminator_wins:   # loss-type aware: bce (sigmoid D) | hinge | wgan (quiet) | auto
        loss: auto          # auto: loss/gp in the stream means WGAN-GP, else BCE
        real_tag: gan/score_real
        fake_tag: gan/score_fake
        p_max: 0.95         # bce: sigmoid(score_real) > p_max and sigmoid(score_fake) < 1 - p_max
        margin: 1.0         # hinge: score_real > margin and score_fake < -margin
        n_writes: 3
      data:                 # step 0: data that make the min-max scaling meaningless
        policy: stop
        tags: ["data/*/*/span"]  # experiments.data.plausibility.scaling_scalars
        min_span: 1.0e-3    # median file's 1-99 % span over the scaling range below this

Every alert records its evidence (``Evidence``: tag, step, value, the reference it was compared
with, and the TensorBoard tag of the picture that shows it) in health.json, the console line and
the ``health/alerts`` text; the verdict lists them and ends with "What to do: (1) ...".

Every check also takes ``enabled`` (default true), ``policy`` and ``warmup_frac`` (fraction of
``total_steps`` before which the check stays quiet; 0 without ``total_steps``). For an autoencoder,
disable the GAN checks (conf/health/autoencoder.yaml does; with no matching tags they stay quiet).
"""

from __future__ import annotations

import copy
import fnmatch
import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist

from . import tags
from .rundir import atomic_write_text

log = logging.getLogger(__name__)

DEFAULTS: dict[str, dict] = {
    "data": {
        "policy": "stop",
        "tags": ["data/*/*/span"],
        "min_span": 1e-3,
    },
    "nonfinite": {
        "policy": "stop",
        "tags": ["loss/*", "grad/*norm", "gan/grad_norm/*"],
        "count_tags": [
            "act/*/nan_count",
            "act/*/inf_count",
            "grad/*/nan_count",
            "grad/*/inf_count",
        ],
    },
    "crash_cycles": {
        "policy": "warn",
        "tags": ["act/*/std"],
        "exclude": ["act/D/*"],
        "rise": 3.0,
        "drop": 0.33,
        "n_cycles": 2,
        "floor": 1e-6,
        "smooth": 3,
    },
    "dead_layers": {
        "policy": "warn",
        "tags": ["act/*/dead"],
        "threshold": 0.9,
        "n_writes": 3,
        "std_max": 1e-4,
    },
    "critic_overpowering": {
        "policy": "warn",
        "gap_tags": ["gan/gap"],
        "loss_tags": ["loss/D"],
        "runaway": 10.0,
        "floor": 1.0,
        "g_grad_tags": ["grad/G/norm", "gan/grad_norm/G"],
        "vanish": 0.01,
        "gp_tags": ["loss/gp"],
        "gp_max": 10.0,
        "n_ref": 3,
        "n_writes": 3,
    },
    "mode_collapse": {
        "policy": "warn",
        "tags": ["gan/diversity"],
        # 1e-3 fired on a skilful run held by a content loss (diversity 3e-4 at step 120,
        # benchmarks/health.py healthy_s0); a generator that ignores its noise reads 0
        "min": 1e-4,
        "n_writes": 2,
        "rising": 1.5,
        # only writes from the first adversarial loss on: MSE pretraining ignores the noise by design
        "after_tags": ["loss/G"],
        # learned noise scales start at 0: diversity is ~0 at first in any run
        "warmup_frac": 0.1,
    },
    "spectrum": {
        "policy": "warn",
        "tags": ["spectrum/*/ratio_high"],
        "low": 0.2,
        "high": 5.0,
        "n_writes": 3,
        "warmup_frac": 0.5,
    },
    "value_range": {
        "policy": "warn",
        "tags": ["gan/outside_range"],
        "max": 0.02,
        "n_writes": 2,
        "picture": "slices/G/probe0",
    },
    "blowup": {
        "policy": "warn",
        "tags": ["loss/mse", "loss/G_mse", "loss/AE/train", "loss/AE/val"],
        "factor": 10.0,
        "n_ref": 2,
        "n_writes": 2,
        "floor": 1e-12,
    },
    "skill": {
        "policy": "warn",
        "tags": ["skill/mse_ratio"],
        "max": 1.0,
        "hard_max": 10.0,
        "improve": 0.8,
        "n_writes": 2,
        "picture": "skill/figure",
        "warmup_frac": 0.1,
    },
    "critic_oscillation": {
        "policy": "warn",
        "tags": ["gan/gap"],
        "window": 6,
        "n_flips": 3,
        "floor": 1.0,
        "amplitude": 50.0,
    },
    "discriminator_wins": {
        "policy": "warn",
        "loss": "auto",
        "real_tag": "gan/score_real",
        "fake_tag": "gan/score_fake",
        "p_max": 0.95,
        "margin": 1.0,
        "n_writes": 3,
    },
}
_COMMON = {"enabled": True, "policy": "warn", "warmup_frac": 0.0}

HINTS = {
    "nonfinite": "lower the learning rate or check the data for NaN/Inf",
    "crash_cycles": "restart with a lower learning rate or a better initialisation: such runs rarely recover",
    "dead_layers": "check the initialisation (biases, gain) and the activation function",
    "critic_overpowering": "lower the critic's learning rate or its number of steps per generator step",
    "mode_collapse": "check the generator's noise injection and that its input varies",
    "spectrum": "compare the generated and true spectra",  # the check's finding gives the direction
    "value_range": "the generator leaves the data range (saturated slices): lower its learning rate "
    "or add a content loss; if it happens at once, check the data scaling",
    "blowup": "a loss jumped far above its best: lower the learning rate (look for a schedule or "
    "a spike at the onset step) and resume from the checkpoint before it",
    "skill": "the generator is worse than trilinear upsampling and not improving: pretrain with MSE, "
    "add a content loss or lower the adversarial learning rate",
    "critic_oscillation": "the critic's scores swing: lower the critic's learning rate, raise "
    "lambda_gp, or use Adam betas (0, 0.9)",
    "discriminator_wins": "lower the discriminator's learning rate",
    "data": "fix the data before training: drop the named radial layer (data.drop_r) or the file; "
    "data.check=strict stops such data at load",
}

History = Mapping[str, list[tuple[int, float]]]


# --------------------------------------------------------------------------------- step guard
def _grads_or_values(items) -> list[torch.Tensor]:
    out: list[torch.Tensor] = []
    for item in items:
        if isinstance(item, torch.Tensor):
            out.append(item.detach())
        else:
            # An iterable of parameters (model.parameters()): their gradients are what the step applies.
            for p in item:
                if isinstance(p, torch.nn.Parameter) or (p.is_leaf and p.requires_grad):
                    if p.grad is not None:
                        out.append(p.grad.detach())
                else:
                    out.append(p.detach())
    return out


def all_finite(*items) -> torch.Tensor:
    """One 0-dim bool device tensor: every tensor given, and every gradient of the parameters given, is finite.

    Each argument is a tensor (its values are checked, e.g. the loss) or an iterable of parameters (their
    ``.grad`` is checked). No host sync: the caller decides where to sync on the flag.
    """
    tensors = _grads_or_values(items)
    if not tensors:
        return torch.ones((), dtype=torch.bool)
    # The max-abs norm propagates NaN and Inf and, unlike the 2-norm, cannot overflow on finite values.
    return torch.isfinite(torch.nn.utils.get_total_norm(tensors, norm_type=math.inf))


def named_grads(model: torch.nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    """``{grad/<prefix>/<parameter name>: grad}`` for every parameter with a gradient."""
    return {f"grad/{prefix}/{n}": p.grad for n, p in model.named_parameters() if p.grad is not None}


def nonfinite_report(
    named_tensors: Mapping[str, torch.Tensor | None], step: int | None = None
) -> str:
    """A message naming each non-finite tensor (call only after the guard fired: it syncs per tensor)."""
    bad = []
    for name, t in named_tensors.items():
        if t is None:
            continue
        t = t.detach()
        n_nan = int(torch.isnan(t).sum())
        n_inf = int(torch.isinf(t).sum())
        if n_nan or n_inf:
            parts = [f"{n_nan} NaN"] if n_nan else []
            parts += [f"{n_inf} Inf"] if n_inf else []
            bad.append(f"{name} ({' and '.join(parts)} of {t.numel()})")
    where = f"at step {step}" if step is not None else ""
    if not bad:
        return (
            f"non-finite values {where} in none of the {len(named_tensors)} named tensors".replace(
                "  ", " "
            )
        )
    head = f"non-finite values {where}: " if where else "non-finite values: "
    return head + "; ".join(bad) + ". The step was not applied."


# ------------------------------------------------------------------------ device-side guard
# Optimizers whose fused kernels take GradScaler's ``found_inf`` and skip the whole update
# (parameters, moments, step count) on the device when it is non-zero.
FUSED_FOUND_INF = (torch.optim.Adam, torch.optim.AdamW, torch.optim.SGD, torch.optim.Adagrad)


class StepGuard:
    """The non-finite step guard with its verdict kept on the device (GradScaler's ``found_inf``).

    ``check`` finds a non-finite loss or gradient without a host sync and latches a device flag;
    from then on every guarded optimizer step is masked on the device: Adam, AdamW, SGD and
    Adagrad are switched to their fused kernels, which skip the update when ``found_inf`` is set
    (as under ``GradScaler``); any other optimizer has its parameters put back after ``step()``
    by one ``torch.where`` on a flat copy. The host reads the flag only at a write
    (:meth:`verdict`, one host copy) and stops the run there; no checkpoint may be written before
    that read. The flag stays set, so no update after the first bad one is applied either::

        guard = StepGuard({"D": (D, opt_d), "G": (G, opt_g)})  # after loading a checkpoint
        loss_d.backward(); guard.check("D", loss_d, step); opt_d.step()   # device only
        ema_update(G_ema, G, guard.hold(decay))                 # an EMA frozen with the rest
        ...                                                     # at a write:
        bad = guard.verdict()                                   # None, or (step, message)

    Under ``torch.distributed`` the flag is reduced over ranks on the device (``all_reduce``
    MAX of one element, no host sync), so every rank masks the same steps.
    """

    def __init__(self, sites: Mapping[str, tuple[torch.nn.Module, torch.optim.Optimizer]]) -> None:
        if not sites:
            raise ValueError("StepGuard needs at least one (model, optimizer) site")
        self.names = list(sites)
        first = next(iter(sites.values()))[0]
        p0 = next(first.parameters(), None)
        device = p0.device if p0 is not None else torch.device("cpu")
        self.flag = torch.zeros((), device=device)  # 1.0 once any guarded step was non-finite
        self._step = torch.zeros((), dtype=torch.int64, device=device)  # first bad step
        self._site = torch.zeros((), dtype=torch.int64, device=device)  # its site index
        self._zero = torch.zeros((), device=device)
        self._params: dict[str, list[tuple[str, torch.nn.Parameter]]] = {}
        self._evidence: dict[str, torch.Tensor] = {}  # per site: max|x| of loss, each grad
        self._handles: list = []
        self._backup: dict[str, torch.Tensor | None] = {}
        for name, (module, opt) in sites.items():
            params = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
            self._params[name] = params
            self._evidence[name] = torch.zeros(1 + len(params), device=device)
            self._attach(name, opt)

    def _attach(self, name: str, opt: torch.optim.Optimizer) -> None:
        if isinstance(opt, FUSED_FOUND_INF) and not any(
            g.get("differentiable") for g in opt.param_groups
        ):
            # Also after load_state_dict, which restores the saved groups' "fused" setting.
            for g in opt.param_groups:
                g["fused"], g["foreach"] = True, False
            opt.found_inf = self.flag
            return
        params = [p for g in opt.param_groups for p in g["params"]]
        self._backup[name] = None

        def pre(o, args, kwargs):
            self._backup[name] = torch.cat([p.detach().reshape(-1) for p in params])

        def post(o, args, kwargs):
            with torch.no_grad():
                now = torch.cat([p.detach().reshape(-1) for p in params])
                keep = torch.where(self.flag > 0, self._backup[name], now)
                parts = keep.split([p.numel() for p in params])
                torch._foreach_copy_(
                    params, [v.view_as(p) for v, p in zip(parts, params, strict=True)]
                )
            self._backup[name] = None

        self._handles += [opt.register_step_pre_hook(pre), opt.register_step_post_hook(post)]

    def remove(self) -> None:
        """Remove the optimizer hooks of the put-back path."""
        for h in self._handles:
            h.remove()
        self._handles = []

    def check(self, name: str, loss: torch.Tensor, step: int) -> torch.Tensor:
        """Between ``backward()`` and ``step()``: latch a non-finite loss or gradient (device only).

        Returns the device flag (1.0 once any step was non-finite). A constant number of
        operations whatever the number of parameters (one ``_foreach_norm``).
        """
        params = self._params[name]
        with torch.no_grad():
            grads = [p.grad for _, p in params if p.grad is not None]
            norms = torch._foreach_norm([loss.detach().reshape(1), *grads], math.inf)
            if len(grads) < len(params):  # parameters without a gradient count as finite (0)
                it = iter(norms[1:])
                norms = [norms[0]] + [
                    next(it) if p.grad is not None else self._zero for _, p in params
                ]
            if any(n.dtype != torch.float32 for n in norms):  # bf16/fp16 losses or grads
                norms = [n.float() for n in norms]
            maxabs = torch.stack(norms)  # (1 + n_params,)
            bad = (~torch.isfinite(maxabs).all()).float()
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(bad, op=dist.ReduceOp.MAX)  # on the device: no host sync
        new = (bad > self.flag).reshape(())
        self._step.copy_(torch.where(new, step, self._step))
        self._site.copy_(torch.where(new, self.names.index(name), self._site))
        self._evidence[name].copy_(torch.where(new, maxabs, self._evidence[name]))
        self.flag.copy_(torch.maximum(self.flag, bad))
        return self.flag

    def hold(self, decay: float) -> torch.Tensor:
        """An EMA decay that is 1 (no change) once the flag is set, ``decay`` before (device)."""
        return torch.where(self.flag > 0, 1.0, decay)

    def verdict(self) -> tuple[int, str] | None:
        """At a write (one host copy): None, or the first bad step and a message naming its tensors."""
        bad, step, site = torch.stack(
            [self.flag.double(), self._step.double(), self._site.double()]
        ).tolist()
        if not bad:
            return None
        name = self.names[int(site)]
        ev = self._evidence[name].tolist()
        names = [f"loss/{name}"] + [f"grad/{name}/{n}" for n, _ in self._params[name]]
        found = [
            f"{t} ({'NaN' if math.isnan(v) else 'Inf'})"
            for t, v in zip(names, ev, strict=True)
            if not math.isfinite(v)
        ]
        return int(step), (
            f"non-finite values at step {int(step)}: {'; '.join(found)}. The step was not "
            "applied, nor any step after it (the update is masked on the device until this read)."
        )


# ------------------------------------------------------------------------------------ checks
@dataclass
class Evidence:
    """What an alert rests on: one value of one tag, its reference, and where to look at it."""

    tag: str
    step: int
    value: float
    reference: str  # what the value was compared with, e.g. "> 0.05" or "3x its best 0.001"
    picture: str  # the TensorBoard tag that shows it (a scalar chart's tag, an image, a figure)

    def text(self) -> str:
        return (
            f"{self.tag}={_fmt(self.value)} at step {self.step} (reference: {self.reference}; "
            f"TensorBoard: {self.picture})"
        )


@dataclass
class Finding:
    """A check's result: ``evidence`` (empty: not active), a short ``detail``, and a ``hint``
    overriding :data:`HINTS` where the right advice depends on the evidence (spectrum direction)."""

    evidence: list[Evidence]
    detail: str = ""
    hint: str | None = None

    @property
    def active(self) -> bool:
        return bool(self.evidence)


def _series(history: History, patterns: Iterable[str]) -> dict[str, list[tuple[int, float]]]:
    pats = list(patterns)
    return {t: v for t, v in history.items() if v and any(fnmatch.fnmatchcase(t, p) for p in pats)}


def _since_pairs(values: list[tuple[int, float]], since: int) -> list[tuple[int, float]]:
    return [(s, v) for s, v in values if s >= since]


def _last(values: list[tuple[int, float]], n: int, since: int) -> list[float] | None:
    """The last n values, or None when fewer than n were written at or after step ``since``."""
    vals = [v for s, v in values if s >= since]
    return vals[-n:] if len(vals) >= n else None


def _fmt(x: float) -> str:
    return f"{x:.3g}"


def _base(tag: str) -> str:
    return tag.rsplit("/", 1)[0]


def _ev(tag: str, vals: list[tuple[int, float]], reference: str, picture: str | None = None):
    s, v = vals[-1]
    return Evidence(tag, int(s), float(v), reference, picture or tag)


def check_nonfinite(history: History, cfg: Mapping, since: int) -> Finding:
    """Latest value of any loss or gradient-norm series is NaN or Inf, or a NaN/Inf count is positive."""
    ev = [
        _ev(t, v, "finite")
        for t, v in _series(history, cfg["tags"]).items()
        if not math.isfinite(v[-1][1])
    ]
    ev += [_ev(t, v, "0") for t, v in _series(history, cfg["count_tags"]).items() if v[-1][1] > 0]
    ev.sort(key=lambda e: e.tag)
    return Finding(ev, "non-finite " + ", ".join(f"{e.tag}={e.value:g}" for e in ev))


def running_median(values: list[float], width: int) -> list[float]:
    """Centred running median of odd ``width`` (shrinking at the ends); width 1 returns the values."""
    if width <= 1:
        return list(values)
    h = width // 2
    out = []
    for i in range(len(values)):
        w = sorted(values[max(0, i - h) : i + h + 1])
        out.append(w[len(w) // 2] if len(w) % 2 else 0.5 * (w[len(w) // 2 - 1] + w[len(w) // 2]))
    return out


def crash_cycles(
    values: list[float], rise: float, drop: float, floor: float, smooth: int = 1
) -> int:
    """Number of rise-and-crash cycles: up to >= rise x the last trough, then down to <= drop x that peak."""
    if not values:
        return 0
    vals = [max(abs(v), floor) if math.isfinite(v) else floor for v in values]
    vals = running_median(vals, smooth)
    trough = peak = vals[0]
    n = 0
    for v in vals[1:]:
        if v <= drop * peak and peak >= rise * trough:
            n += 1
            trough = peak = v
        elif v < trough:
            trough = peak = v
        elif v > peak:
            peak = v
    return n


def check_crash_cycles(history: History, cfg: Mapping, since: int) -> Finding:
    """A layer's activation statistic rose and crashed at least ``n_cycles`` times."""
    ev, hits = [], []
    excl = list(cfg["exclude"] or [])
    for tag, vals in _series(history, cfg["tags"]).items():
        if any(fnmatch.fnmatchcase(tag, p) for p in excl):
            continue
        series = [v for s, v in vals if s >= since]
        n = crash_cycles(series, cfg["rise"], cfg["drop"], cfg["floor"], cfg["smooth"])
        if n >= cfg["n_cycles"]:
            hits.append(f"{tag} ({n} cycles)")
            ref = f"{n} rise(>= {cfg['rise']}x)-and-crash(<= {cfg['drop']}x) cycles >= {cfg['n_cycles']}"
            ev.append(_ev(tag, vals, ref, f"{_base(tag)}/colorful"))
    return Finding(ev, "rise-and-crash in " + ", ".join(sorted(hits)))


def check_dead_layers(history: History, cfg: Mapping, since: int) -> Finding:
    """Dead fraction above ``threshold`` for ``n_writes`` consecutive writes (and std below ``std_max``)."""
    ev = []
    n, std_max = cfg["n_writes"], cfg["std_max"]
    for tag, vals in _series(history, cfg["tags"]).items():
        last = _last(vals, n, since)
        if last is None or not all(v > cfg["threshold"] for v in last):
            continue
        if std_max is not None:
            # "Near zero" is relative to the histogram's first bin; small but varied outputs are alive.
            std = _last(history.get(_base(tag) + "/std", []), n, since)
            if std is None or not all(v <= std_max for v in std):
                continue
        ref = f"> {cfg['threshold']} for {n} writes" + (
            f", {_base(tag)}/std <= {std_max:g}" if std_max is not None else ""
        )
        ev.append(_ev(tag, vals, ref, f"{_base(tag)}/dead_chart"))
    ev.sort(key=lambda e: e.tag)
    return Finding(ev, "dead: " + ", ".join(f"{e.tag}={_fmt(e.value)}" for e in ev))


def _reference(vals: list[tuple[int, float]], n_ref: int) -> float | None:
    first = sorted(abs(v) for _, v in vals[:n_ref] if math.isfinite(v))
    if len(first) < n_ref:
        return None
    return first[len(first) // 2]


def check_critic_overpowering(history: History, cfg: Mapping, since: int) -> Finding:
    """Critic loss or gap running away from its early level, or generator gradients vanishing."""
    n, hits, ev = cfg["n_writes"], [], []
    for tag, vals in _series(history, list(cfg["gap_tags"]) + list(cfg["loss_tags"])).items():
        ref = _reference(vals, cfg["n_ref"])
        last = _last(vals[cfg["n_ref"] :], n, since)
        if ref is None or last is None:
            continue
        limit = cfg["runaway"] * max(ref, cfg["floor"])
        if all(abs(v) > limit for v in last):
            hits.append(f"{tag}={_fmt(last[-1])} (early {_fmt(ref)})")
            ev.append(
                _ev(
                    tag,
                    vals,
                    f"|value| > {_fmt(limit)} (= {cfg['runaway']}x max(early {_fmt(ref)}, {cfg['floor']})) for {n} writes",
                )
            )
    for tag, vals in _series(history, cfg["g_grad_tags"]).items():
        ref = _reference(vals, cfg["n_ref"])
        last = _last(vals[cfg["n_ref"] :], n, since)
        if ref is None or last is None or ref <= 0:
            continue
        if all(abs(v) < cfg["vanish"] * ref for v in last):
            hits.append(f"{tag}={_fmt(last[-1])} vanishing (early {_fmt(ref)})")
            ev.append(_ev(tag, vals, f"< {cfg['vanish']} x early {_fmt(ref)} for {n} writes"))
    if cfg["gp_max"] is not None:
        for tag, vals in _series(history, cfg["gp_tags"]).items():
            last = _last(vals, n, since)
            if last is not None and all(v > cfg["gp_max"] for v in last):
                hits.append(f"{tag}={_fmt(last[-1])} (critic gradients far from 1)")
                ev.append(_ev(tag, vals, f"> {cfg['gp_max']} for {n} writes (target 0)"))
    return Finding(ev, "critic overpowering: " + ", ".join(sorted(hits)))


def check_mode_collapse(history: History, cfg: Mapping, since: int) -> Finding:
    """Diversity across noise draws below ``min`` for ``n_writes`` writes and not rising."""
    ev = []
    if cfg["after_tags"]:
        adv = [v[0][0] for v in _series(history, cfg["after_tags"]).values()]
        if not adv:
            return Finding([])
        since = max(since, min(adv))
    for tag, vals in _series(history, cfg["tags"]).items():
        last = _last(vals, cfg["n_writes"], since)
        if last is None or not all(v < cfg["min"] for v in last):
            continue
        if cfg["rising"] is not None and last[-1] > cfg["rising"] * last[0]:
            continue
        ev.append(
            _ev(
                tag,
                vals,
                f"< {cfg['min']:g} for {cfg['n_writes']} writes, not rising",
                "slices/G/probe0",
            )
        )
    ev.sort(key=lambda e: e.tag)
    return Finding(ev, "no diversity: " + ", ".join(f"{e.tag}={_fmt(e.value)}" for e in ev))


def _spectrum_picture(tag: str) -> str:
    head = tag.split("/", 1)[0]
    if head == "skill":
        return "skill/figure"
    return f"{head}/{'2d' if head.endswith('2d') else '3d'}"


def check_spectrum(history: History, cfg: Mapping, since: int) -> Finding:
    """Generated/truth power at high wavenumbers outside [low, high] for ``n_writes`` writes.

    The hint follows the evidence: below ``low`` the generator is too smooth, above ``high`` it
    makes small-scale power the truth does not have (noise, checkerboard artefacts).
    """
    ev, low, high = [], 0, 0
    for tag, vals in _series(history, cfg["tags"]).items():
        last = _last(vals, cfg["n_writes"], since)
        if last is None:
            continue
        if all(v < cfg["low"] for v in last):
            low += 1
            ev.append(
                _ev(
                    tag,
                    vals,
                    f"< {cfg['low']} (too little small-scale power) for {cfg['n_writes']} writes",
                    _spectrum_picture(tag),
                )
            )
        elif all(v > cfg["high"] for v in last):
            high += 1
            ev.append(
                _ev(
                    tag,
                    vals,
                    f"> {cfg['high']} (too much small-scale power) for {cfg['n_writes']} writes",
                    _spectrum_picture(tag),
                )
            )
    ev.sort(key=lambda e: e.tag)
    hints = []
    if high:
        hints.append(SPECTRUM_TOO_MUCH)
    if low:
        hints.append(SPECTRUM_TOO_LITTLE)
    return Finding(
        ev,
        "spectrum mismatch: " + ", ".join(f"{e.tag}={_fmt(e.value)}" for e in ev),
        "; ".join(hints) or None,
    )


def check_value_range(history: History, cfg: Mapping, since: int) -> Finding:
    """Generated values outside the training data's range: the fraction of the generator's probe
    output outside the scaled range [0, 1] widened by a margin (``gan/outside_range``, written by
    :meth:`diagnostics.gan.GanBalance.update_range`) above ``max`` for ``n_writes`` writes."""
    ev = []
    for tag, vals in _series(history, cfg["tags"]).items():
        last = _last(vals, cfg["n_writes"], since)
        if last is not None and all(v > cfg["max"] for v in last):
            ev.append(
                _ev(
                    tag,
                    vals,
                    f"> {cfg['max']:g} for {cfg['n_writes']} writes (data: 0)",
                    cfg["picture"],
                )
            )
    ev.sort(key=lambda e: e.tag)
    return Finding(
        ev,
        "generated values outside the data range: "
        + ", ".join(f"{e.tag}={_fmt(e.value)}" for e in ev),
    )


def check_blowup(history: History, cfg: Mapping, since: int) -> Finding:
    """A loss far above its best so far: ``factor`` x the minimum of the earlier writes (at least
    ``n_ref`` of them) for ``n_writes`` consecutive writes. Catches a generator that blows up and a
    learning-rate spike in mid-run; the best-so-far reference needs no warm-up."""
    ev = []
    n, n_ref = cfg["n_writes"], cfg["n_ref"]
    for tag, vals in _series(history, cfg["tags"]).items():
        vals_s = _since_pairs(vals, since)
        if len(vals_s) < n_ref + n:
            continue
        earlier = [v for _, v in vals_s[:-n] if math.isfinite(v)]
        if len(earlier) < n_ref:
            continue
        best = max(min(earlier), cfg["floor"])
        last = [v for _, v in vals_s[-n:]]
        if all(v > cfg["factor"] * best for v in last):
            ev.append(_ev(tag, vals, f"> {cfg['factor']} x its best {_fmt(best)} for {n} writes"))
    ev.sort(key=lambda e: e.tag)
    return Finding(ev, "loss blew up: " + ", ".join(f"{e.tag}={_fmt(e.value)}" for e in ev))


def check_skill(history: History, cfg: Mapping, since: int) -> Finding:
    """Skill worse than the baseline and getting worse: ``skill/mse_ratio`` (generator MSE over
    the trilinear baseline's; the autoencoder's over climatology's) above ``max`` for ``n_writes``
    writes and rising over them, or above ``hard_max`` and not falling below ``improve`` x the
    first of those writes (far worse and not catching up)."""
    ev = []
    n = cfg["n_writes"]
    for tag, vals in _series(history, cfg["tags"]).items():
        last = _last(vals, n, since)
        if last is None or not all(v > cfg["max"] for v in last):
            continue
        rising = last[-1] > last[0]
        stuck = (
            cfg["hard_max"] is not None
            and all(v > cfg["hard_max"] for v in last)
            and (last[-1] > cfg["improve"] * last[0])
        )
        if rising or stuck:
            why = (
                f"> {cfg['max']} (the baseline) for {n} writes and rising from {_fmt(last[0])}"
                if rising
                else f"> {cfg['hard_max']} x the baseline for {n} writes, not improving from {_fmt(last[0])}"
            )
            ev.append(_ev(tag, vals, why, cfg["picture"]))
    ev.sort(key=lambda e: e.tag)
    return Finding(
        ev, "worse than the baseline: " + ", ".join(f"{e.tag}={_fmt(e.value)}" for e in ev)
    )


def sign_flips(values: Sequence[float], floor: float) -> int:
    """Sign changes between consecutive values with ``|v| > floor`` (values within the floor skipped)."""
    signs = [1 if v > 0 else -1 for v in values if math.isfinite(v) and abs(v) > floor]
    return sum(a != b for a, b in zip(signs, signs[1:], strict=False))


def check_critic_oscillation(history: History, cfg: Mapping, since: int) -> Finding:
    """The critic's real-fake score swinging: over the last ``window`` writes of ``gan/gap`` (or
    the scores), at least ``n_flips`` sign changes beyond +-``floor``, or a peak-to-peak amplitude
    above ``amplitude``. A WGAN-GP critic's gap is bounded by its Lipschitz constraint and drifts
    slowly; one that flips between large positive and negative values is not tracking W1."""
    ev = []
    w = cfg["window"]
    for tag, vals in _series(history, cfg["tags"]).items():
        last = _last(vals, w, since)
        if last is None:
            continue
        flips = sign_flips(last, cfg["floor"])
        finite = [v for v in last if math.isfinite(v)]
        amp = (max(finite) - min(finite)) if finite else 0.0
        if flips >= cfg["n_flips"]:
            ev.append(
                _ev(
                    tag,
                    vals,
                    f"{flips} sign flips beyond +-{cfg['floor']} in {w} writes (>= {cfg['n_flips']}); range {_fmt(min(finite))}..{_fmt(max(finite))}",
                )
            )
        elif amp > cfg["amplitude"]:
            ev.append(
                _ev(
                    tag,
                    vals,
                    f"peak-to-peak {_fmt(amp)} in {w} writes > {cfg['amplitude']}; range {_fmt(min(finite))}..{_fmt(max(finite))}",
                )
            )
    ev.sort(key=lambda e: e.tag)
    return Finding(
        ev, "critic scores oscillate: " + ", ".join(f"{e.tag}={_fmt(e.value)}" for e in ev)
    )


LOSSES = ("auto", "wgan", "bce", "hinge")


def detect_loss(history: History) -> str:
    """The GAN loss from the stream: a gradient penalty (``loss/gp``) means WGAN-GP; else BCE."""
    return "wgan" if any(t.startswith("loss/gp") for t in history) else "bce"


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(min(x, 50.0), -50.0)))


def check_discriminator_wins(history: History, cfg: Mapping, since: int) -> Finding:
    """Loss-type-aware: the discriminator has won and the generator gets no useful gradient.

    - ``bce`` (non-saturating, sigmoid discriminator): D(real) = sigmoid(gan/score_real) above
      ``p_max`` and D(fake) below ``1 - p_max`` for ``n_writes`` writes;
    - ``hinge``: both margins met (score_real > ``margin``, score_fake < -``margin``): the
      discriminator's loss is 0 and stops teaching;
    - ``wgan``: a critic's scores have no fixed scale; its balance is ``critic_overpowering`` and
      ``critic_oscillation``, this check stays quiet.
    ``loss: auto`` takes :func:`detect_loss`.
    """
    loss = cfg["loss"] if cfg["loss"] != "auto" else detect_loss(history)
    if loss == "wgan":
        return Finding([])
    real, fake = history.get(cfg["real_tag"], []), history.get(cfg["fake_tag"], [])
    n = cfg["n_writes"]
    r, f = _last(real, n, since), _last(fake, n, since)
    if r is None or f is None:
        return Finding([])
    if loss == "bce":
        p = cfg["p_max"]
        won = all(_sigmoid(a) > p and _sigmoid(b) < 1 - p for a, b in zip(r, f, strict=True))
        ref_r = f"D(real) = sigmoid({_fmt(r[-1])}) = {_sigmoid(r[-1]):.3f} > {p} for {n} writes"
        ref_f = f"D(fake) = sigmoid({_fmt(f[-1])}) = {_sigmoid(f[-1]):.3g} < {1 - p:.3g}"
    else:
        m = cfg["margin"]
        won = all(a > m and b < -m for a, b in zip(r, f, strict=True))
        ref_r, ref_f = f"> {m} (hinge met) for {n} writes", f"< -{m} (hinge met)"
    if not won:
        return Finding([])
    ev = [_ev(cfg["real_tag"], real, ref_r), _ev(cfg["fake_tag"], fake, ref_f)]
    sep = history.get("gan/separation")
    if sep:
        ev.append(_ev("gan/separation", sep, "1 = the discriminator tells every pair apart"))
    return Finding(ev, f"the {loss} discriminator wins", HINT_D_WINS[loss])


def check_data(history: History, cfg: Mapping, since: int) -> Finding:
    """Data that make the min-max scaling meaningless (step 0, before training): the bulk of a
    variable's values spans less than ``min_span`` of the scaling range in the median file
    (``data/<file>/<var>/span`` of :func:`experiments.data.plausibility.scaling_scalars`). The
    evidence names the file that sets the range and its most extreme layer."""
    by_var: dict[str, list[tuple[str, list[tuple[int, float]]]]] = {}
    for tag, vals in _series(history, cfg["tags"]).items():
        parts = tag.split("/")
        if len(parts) >= 4:
            by_var.setdefault(parts[-2], []).append((tag, vals))
    ev = []
    for var, items in sorted(by_var.items()):
        spans = sorted(v[-1][1] for _, v in items)
        med = spans[len(spans) // 2]
        if not med < cfg["min_span"]:
            continue
        # The file whose own range is the scaling range: it holds the values that squash the rest.
        share = {t: history.get(_base(t) + "/range_share", [(0, 0.0)])[-1][1] for t, _ in items}
        worst = max(share, key=share.get)
        layer = history.get(_base(worst) + "/extreme_layer", [(0, float("nan"))])[-1][1]
        f = worst.split("/")[1]
        tag_med = min(items, key=lambda it: abs(it[1][-1][1] - med))[0]
        ev.append(
            _ev(
                tag_med,
                history[tag_med],
                f"< {cfg['min_span']:g}: median over files; the scale is set by file {f}, variable "
                f"{var}, radial layer {layer:.0f} ({_base(worst)}/range_share={_fmt(share[worst])})",
                f"{_base(worst)}/span",
            )
        )
    return Finding(ev, "data make the scaling meaningless: " + ", ".join(e.tag for e in ev))


SPECTRUM_TOO_LITTLE = (
    "the generator misses small-scale structure (too smooth); train longer, add adversarial weight "
    "or revisit its upsampling"
)
SPECTRUM_TOO_MUCH = (
    "the generator makes small-scale power the truth lacks (noise or checkerboard artefacts); lower "
    "its learning rate or noise, or use resize-convolutions instead of transposed convolutions"
)
HINT_D_WINS = {
    "bce": "the discriminator has won (the generator's gradient saturates): lower its learning rate, "
    "add label smoothing or instance noise, or switch to a WGAN-GP or hinge loss",
    "hinge": "the discriminator meets both margins: lower its learning rate or steps per generator step",
    "wgan": "",
}

CHECKS = {
    "data": check_data,
    "nonfinite": check_nonfinite,
    "crash_cycles": check_crash_cycles,
    "dead_layers": check_dead_layers,
    "critic_overpowering": check_critic_overpowering,
    "mode_collapse": check_mode_collapse,
    "spectrum": check_spectrum,
    "value_range": check_value_range,
    "blowup": check_blowup,
    "skill": check_skill,
    "critic_oscillation": check_critic_oscillation,
    "discriminator_wins": check_discriminator_wins,
}


def resolve_config(cfg: Mapping | None) -> dict[str, dict]:
    """Defaults merged with ``cfg`` (one level per check); unknown checks or keys raise ValueError."""
    out = {name: {**_COMMON, **copy.deepcopy(d)} for name, d in DEFAULTS.items()}
    for name, sub in dict(cfg or {}).items():
        if name not in out:
            raise ValueError(f"health: unknown check {name!r}; known: {sorted(out)}")
        if sub is None:
            continue
        if isinstance(sub, bool):
            out[name]["enabled"] = sub
            continue
        for key, value in dict(sub).items():
            if key not in out[name]:
                raise ValueError(f"health.{name}: unknown key {key!r}; known: {sorted(out[name])}")
            # Sequences (also OmegaConf's ListConfig) become plain lists for health.json.
            out[name][key] = (
                list(value) if isinstance(value, Sequence) and not isinstance(value, str) else value
            )
        if name == "discriminator_wins" and out[name]["loss"] not in LOSSES:
            raise ValueError(
                f"health.discriminator_wins.loss must be one of {list(LOSSES)}, got {out[name]['loss']!r}"
            )
        if out[name]["policy"] not in ("warn", "stop"):
            raise ValueError(
                f"health.{name}.policy must be 'warn' or 'stop', got {out[name]['policy']!r}"
            )
    return out


# ------------------------------------------------------------------------------------ monitor
@dataclass
class Alert:
    """One check's alert record, as stored in health.json."""

    check: str
    policy: str
    first_step: int
    last_step: int
    message: str
    active: bool = True
    cleared_step: int | None = None
    n_episodes: int = 1
    evidence: list[dict] = field(default_factory=list)  # Evidence as dicts, at the first firing
    hint: str = ""  # what to do


class HealthMonitor:
    """Runs the health checks on the statistics stream after each write.

    Args:
        cfg: health configuration (see the module docstring); None for the defaults.
        writer: a :class:`diagnostics.writer.Writer` or None (no TensorBoard output).
        run_dir: where ``health.json`` goes (None: not written).
        total_steps: planned steps of the run, for ``warmup_frac`` and run fractions in the verdict.
    """

    def __init__(
        self, cfg: Mapping | None, writer=None, run_dir=None, *, total_steps: int | None = None
    ) -> None:
        self.cfg = resolve_config(cfg)
        self.writer = writer
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.total_steps = total_steps
        self.alerts: dict[str, Alert] = {}
        self.should_stop = False
        self.stop_reason = ""
        self.n_updates = 0
        self.last_step: int | None = None
        self._reported: dict[int, str] = {}
        self._history: History = {}
        self.skill: tuple[int, float] | None = None  # the newest skill/mse_ratio: (step, value)

    @property
    def enabled(self) -> list[str]:
        """Names of the enabled checks."""
        return [n for n, c in self.cfg.items() if c["enabled"]]

    def _since(self, name: str) -> int:
        frac = float(self.cfg[name]["warmup_frac"])
        return int(frac * self.total_steps) if self.total_steps and frac > 0 else -(2**62)

    def report_nonfinite(self, step: int, message: str) -> None:
        """Record a non-finite step found by the loop's guard; fires the ``nonfinite`` alert at once."""
        self._reported[step] = message
        self.update(step, self._history)

    def update(self, step: int, history: History) -> dict[str, bool]:
        """Run every enabled check on ``history`` (the run's one scalar history, ``diag.history``);
        returns ``{check: active}``."""
        self._history = history
        if history.get(tags.SKILL_MSE_RATIO):
            step_s, value = history[tags.SKILL_MSE_RATIO][-1]
            self.skill = (int(step_s), float(value))
        self.n_updates += 1
        self.last_step = step
        states: dict[str, bool] = {}
        for name in self.enabled:
            c = self.cfg[name]
            found = Finding([])
            if step >= self._since(name):
                found = CHECKS[name](history, c, self._since(name))
            active, detail = found.active, found.detail if found.active else ""
            if name == "nonfinite" and self._reported:
                active = True
                detail = "; ".join(self._reported.values()) + (f"; {detail}" if detail else "")
            states[name] = active
            self._transition(name, active, detail, step, found)
        self._reported.clear()
        if self.writer is not None:
            self.writer.scalars({tags.health(n): float(a) for n, a in states.items()}, step)
        self._save()
        return states

    def _where(self, step: int) -> str:
        if self.total_steps:
            return f"step {step} ({100.0 * step / self.total_steps:.0f} % of {self.total_steps})"
        return f"step {step}"

    def _transition(
        self, name: str, active: bool, detail: str, step: int, found: Finding | None = None
    ) -> None:
        alert = self.alerts.get(name)
        policy = self.cfg[name]["policy"]
        evidence = [asdict(e) for e in found.evidence] if found is not None else []
        hint = (found.hint if found is not None and found.hint else None) or HINTS[name]
        if active and (alert is None or not alert.active):
            if alert is None:
                alert = self.alerts[name] = Alert(
                    name, policy, step, step, detail, evidence=evidence, hint=hint
                )
            else:
                alert.active, alert.cleared_step, alert.message = True, None, detail
                alert.n_episodes += 1
                alert.last_step = step
            ev = "; ".join(Evidence(**e).text() for e in evidence)
            text = (
                f"{name} [{policy}] started at {self._where(step)}: {detail}."
                + (f" Evidence: {ev}." if ev else "")
                + f" What to do: {hint}."
            )
            log.warning("health: %s", text)
            if self.writer is not None:
                self.writer.text(tags.HEALTH_ALERTS, text, step)
            if policy == "stop" and not self.should_stop:
                self.should_stop = True
                self.stop_reason = f"{name} at step {step}: {detail}"
        elif active:
            alert.last_step, alert.message = step, detail
        elif alert is not None and alert.active:
            alert.active, alert.cleared_step = False, step
            text = f"{name} cleared at {self._where(step)}"
            log.info("health: %s", text)
            if self.writer is not None:
                self.writer.text(tags.HEALTH_ALERTS, text, step)

    def state_dict(self) -> dict:
        """Plain-container state for a checkpoint (loads with ``torch.load(weights_only=True)``)."""
        return {
            "alerts": [asdict(a) for a in self.alerts.values()],
            "should_stop": self.should_stop,
            "stop_reason": self.stop_reason,
            "n_updates": self.n_updates,
            "last_step": self.last_step,
            "skill": list(self.skill) if self.skill is not None else None,
        }

    def load_state_dict(self, state: Mapping) -> None:
        """Restore :meth:`state_dict` so an alert's first step and the verdict survive a resume."""
        self.alerts = {a["check"]: Alert(**a) for a in state.get("alerts", [])}
        self.should_stop = bool(state.get("should_stop", False))
        self.stop_reason = str(state.get("stop_reason", ""))
        self.n_updates = int(state.get("n_updates", 0))
        self.last_step = state.get("last_step")
        skill = state.get("skill")
        self.skill = (int(skill[0]), float(skill[1])) if skill is not None else None

    def summary(self) -> dict:
        """The content of health.json."""
        return {
            "total_steps": self.total_steps,
            "last_step": self.last_step,
            "n_updates": self.n_updates,
            "checks": {n: dict(c) for n, c in self.cfg.items()},
            "alerts": [
                asdict(a)
                for a in sorted(self.alerts.values(), key=lambda a: (a.first_step, a.check))
            ],
            "should_stop": self.should_stop,
            "stop_reason": self.stop_reason,
            "verdict": self.verdict(),
        }

    def _save(self) -> None:
        if self.run_dir is None:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        path = self.run_dir / "health.json"
        atomic_write_text(json.dumps(self.summary(), indent=2, default=str), path)

    def verdict(self) -> str:
        """One paragraph on the run's health: each alert with its evidence, then what to do."""
        checks = ", ".join(self.enabled)
        if self.n_updates == 0:
            return f"No health data: the monitor was never updated (checks enabled: {checks})."
        upto = self._where(self.last_step) if self.last_step is not None else "the end"
        skill = self._skill_sentence()
        if not self.alerts:
            return (
                f"Healthy: {self.n_updates} health updates up to {upto} raised no alert "
                f"(checks: {checks}).{skill}"
            )
        parts, todo = [], []
        for a in sorted(self.alerts.values(), key=lambda a: (a.first_step, a.check)):
            state = "still active" if a.active else f"cleared at step {a.cleared_step}"
            ev = "; ".join(Evidence(**e).text() for e in a.evidence)
            parts.append(
                f"{a.check} first fired at {self._where(a.first_step)} ({state}): {a.message}"
                + (f" [evidence: {ev}]" if ev else "")
            )
            hint = a.hint or HINTS[a.check]
            if hint not in todo:
                todo.append(hint)
        head = (
            "Unhealthy"
            if self.should_stop or any(a.active for a in self.alerts.values())
            else "Recovered"
        )
        stop = f" The run was stopped: {self.stop_reason}." if self.should_stop else ""
        what = " What to do: " + " ".join(f"({i}) {t.rstrip('.')}." for i, t in enumerate(todo, 1))
        return (
            f"{head}: {len(self.alerts)} of {len(self.enabled)} checks fired in {self.n_updates} updates up to "
            f"{upto}. " + " ".join(p.rstrip(".") + "." for p in parts) + stop + skill + what
        )

    def _skill_sentence(self) -> str:
        # Every verdict states the newest skill against its baseline: a run that does not beat
        # its baseline says so even when no check fired (the skill check needs it to get worse).
        if self.skill is None:
            return ""
        step, r = self.skill
        side = "better than" if r < 1.0 else "NOT better than"
        return (
            f" Skill at step {step}: {tags.SKILL_MSE_RATIO}={_fmt(r)}, {side} the baseline "
            f"(TensorBoard: {tags.SKILL_MSE_RATIO})."
        )

    def finish(self, step: int | None = None) -> str:
        """Write the verdict (TensorBoard text ``health/verdict``, health.json, console) and return it."""
        if step is not None:
            self.last_step = step
        text = self.verdict()
        log.info("health verdict: %s", text)
        if self.writer is not None:
            self.writer.text(tags.HEALTH_VERDICT, text, self.last_step or 0)
        self._save()
        return text
