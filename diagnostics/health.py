"""Training health: early alerts that tell the user, in plain words, that a run is going wrong.

Two parts:

1. A non-finite guard for the training step. ``all_finite(loss, params)`` is one boolean device tensor;
   the loop syncs on it once per step (the one documented host sync of the step), skips the optimizer
   step when it is False, and only then asks :func:`nonfinite_report` which tensor went bad::

       loss_d.backward()
       ok = all_finite(loss_d, D.parameters())
       if not bool(ok):  # the single per-step host sync, on purpose
           msg = nonfinite_report({"loss/D": loss_d, **named_grads(D, "D")}, step=step)
           monitor.report_nonfinite(step, msg)
           break  # the last checkpoint written is the last good state
       opt_d.step()

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
        min: 1.0e-3         # diversity below this for n_writes consecutive writes ...
        n_writes: 2
        rising: 1.5         # ... and not growing by this factor over them (null: ignore the trend);
                            # learned noise scales start at 0, so a healthy run starts near 0 but rises
        warmup_frac: 0.1    # quiet for the first 10 % of the run, for the same reason
      spectrum:
        tags: ["spectrum/*/ratio_high"]
        low: 0.2            # generated/truth power at high k outside [low, high] ...
        high: 5.0
        n_writes: 3         # ... for n_writes consecutive writes after the warm-up
        warmup_frac: 0.5

Every check also takes ``enabled`` (default true), ``policy`` and ``warmup_frac`` (fraction of
``total_steps`` before which the check stays quiet; 0 without ``total_steps``). For an autoencoder,
disable ``critic_overpowering``, ``mode_collapse`` and ``spectrum`` (or leave them: with no matching tags
they stay quiet).
"""

from __future__ import annotations

import copy
import fnmatch
import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from . import tags
from .rundir import atomic_write_text

log = logging.getLogger(__name__)

DEFAULTS: dict[str, dict] = {
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
        "min": 1e-3,
        "n_writes": 2,
        "rising": 1.5,
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
}
_COMMON = {"enabled": True, "policy": "warn", "warmup_frac": 0.0}

HINTS = {
    "nonfinite": "lower the learning rate or check the data for NaN/Inf",
    "crash_cycles": "restart with a lower learning rate or a better initialisation: such runs rarely recover",
    "dead_layers": "check the initialisation (biases, gain) and the activation function",
    "critic_overpowering": "lower the critic's learning rate or its number of steps per generator step",
    "mode_collapse": "check the generator's noise injection and that its input varies",
    "spectrum": "the generator misses small-scale structure; train longer or revisit its upsampling",
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


# ------------------------------------------------------------------------------------ checks
def _series(history: History, patterns: Iterable[str]) -> dict[str, list[tuple[int, float]]]:
    pats = list(patterns)
    return {t: v for t, v in history.items() if v and any(fnmatch.fnmatchcase(t, p) for p in pats)}


def _last(values: list[tuple[int, float]], n: int, since: int) -> list[float] | None:
    """The last n values, or None when fewer than n were written at or after step ``since``."""
    vals = [v for s, v in values if s >= since]
    return vals[-n:] if len(vals) >= n else None


def _fmt(x: float) -> str:
    return f"{x:.3g}"


def check_nonfinite(history: History, cfg: Mapping, since: int) -> tuple[bool, str]:
    """Latest value of any loss or gradient-norm series is NaN or Inf, or a NaN/Inf count is positive."""
    bad = [
        f"{t}={v[-1][1]}"
        for t, v in _series(history, cfg["tags"]).items()
        if not math.isfinite(v[-1][1])
    ]
    bad += [
        f"{t}={v[-1][1]:g}" for t, v in _series(history, cfg["count_tags"]).items() if v[-1][1] > 0
    ]
    return bool(bad), ("non-finite " + ", ".join(sorted(bad))) if bad else ""


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


def check_crash_cycles(history: History, cfg: Mapping, since: int) -> tuple[bool, str]:
    """A layer's activation statistic rose and crashed at least ``n_cycles`` times."""
    hits = []
    excl = list(cfg["exclude"] or [])
    for tag, vals in _series(history, cfg["tags"]).items():
        if any(fnmatch.fnmatchcase(tag, p) for p in excl):
            continue
        series = [v for s, v in vals if s >= since]
        n = crash_cycles(series, cfg["rise"], cfg["drop"], cfg["floor"], cfg["smooth"])
        if n >= cfg["n_cycles"]:
            hits.append(f"{tag} ({n} cycles)")
    return bool(hits), ("rise-and-crash in " + ", ".join(sorted(hits))) if hits else ""


def check_dead_layers(history: History, cfg: Mapping, since: int) -> tuple[bool, str]:
    """Dead fraction above ``threshold`` for ``n_writes`` consecutive writes (and std below ``std_max``)."""
    hits = []
    n, std_max = cfg["n_writes"], cfg["std_max"]
    for tag, vals in _series(history, cfg["tags"]).items():
        last = _last(vals, n, since)
        if last is None or not all(v > cfg["threshold"] for v in last):
            continue
        if std_max is not None:
            # "Near zero" is relative to the histogram's first bin; small but varied outputs are alive.
            std = _last(history.get(tag.rsplit("/", 1)[0] + "/std", []), n, since)
            if std is None or not all(v <= std_max for v in std):
                continue
        hits.append(f"{tag}={_fmt(last[-1])}")
    return bool(hits), ("dead: " + ", ".join(sorted(hits))) if hits else ""


def _reference(vals: list[tuple[int, float]], n_ref: int) -> float | None:
    first = sorted(abs(v) for _, v in vals[:n_ref] if math.isfinite(v))
    if len(first) < n_ref:
        return None
    return first[len(first) // 2]


def check_critic_overpowering(history: History, cfg: Mapping, since: int) -> tuple[bool, str]:
    """Critic loss or gap running away from its early level, or generator gradients vanishing."""
    n, hits = cfg["n_writes"], []
    for tag, vals in _series(history, list(cfg["gap_tags"]) + list(cfg["loss_tags"])).items():
        ref = _reference(vals, cfg["n_ref"])
        last = _last(vals[cfg["n_ref"] :], n, since)
        if ref is None or last is None:
            continue
        limit = cfg["runaway"] * max(ref, cfg["floor"])
        if all(abs(v) > limit for v in last):
            hits.append(f"{tag}={_fmt(last[-1])} (early {_fmt(ref)})")
    for tag, vals in _series(history, cfg["g_grad_tags"]).items():
        ref = _reference(vals, cfg["n_ref"])
        last = _last(vals[cfg["n_ref"] :], n, since)
        if ref is None or last is None or ref <= 0:
            continue
        if all(abs(v) < cfg["vanish"] * ref for v in last):
            hits.append(f"{tag}={_fmt(last[-1])} vanishing (early {_fmt(ref)})")
    if cfg["gp_max"] is not None:
        for tag, vals in _series(history, cfg["gp_tags"]).items():
            last = _last(vals, n, since)
            if last is not None and all(v > cfg["gp_max"] for v in last):
                hits.append(f"{tag}={_fmt(last[-1])} (critic gradients far from 1)")
    return bool(hits), ("critic overpowering: " + ", ".join(sorted(hits))) if hits else ""


def check_mode_collapse(history: History, cfg: Mapping, since: int) -> tuple[bool, str]:
    """Diversity across noise draws below ``min`` for ``n_writes`` writes and not rising."""
    hits = []
    for tag, vals in _series(history, cfg["tags"]).items():
        last = _last(vals, cfg["n_writes"], since)
        if last is None or not all(v < cfg["min"] for v in last):
            continue
        if cfg["rising"] is not None and last[-1] > cfg["rising"] * last[0]:
            continue
        hits.append(f"{tag}={_fmt(last[-1])}")
    return bool(hits), ("no diversity: " + ", ".join(sorted(hits))) if hits else ""


def check_spectrum(history: History, cfg: Mapping, since: int) -> tuple[bool, str]:
    """Generated/truth power at high wavenumbers outside [low, high] for ``n_writes`` writes."""
    hits = []
    for tag, vals in _series(history, cfg["tags"]).items():
        last = _last(vals, cfg["n_writes"], since)
        if last is not None and all(not (cfg["low"] <= v <= cfg["high"]) for v in last):
            hits.append(f"{tag}={_fmt(last[-1])}")
    return bool(hits), ("spectrum mismatch: " + ", ".join(sorted(hits))) if hits else ""


CHECKS = {
    "nonfinite": check_nonfinite,
    "crash_cycles": check_crash_cycles,
    "dead_layers": check_dead_layers,
    "critic_overpowering": check_critic_overpowering,
    "mode_collapse": check_mode_collapse,
    "spectrum": check_spectrum,
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
        self.n_updates += 1
        self.last_step = step
        states: dict[str, bool] = {}
        for name in self.enabled:
            c = self.cfg[name]
            active, detail = (False, "")
            if step >= self._since(name):
                active, detail = CHECKS[name](history, c, self._since(name))
            if name == "nonfinite" and self._reported:
                active = True
                detail = "; ".join(self._reported.values()) + (f"; {detail}" if detail else "")
            states[name] = active
            self._transition(name, active, detail, step)
        self._reported.clear()
        if self.writer is not None:
            self.writer.scalars({tags.health(n): float(a) for n, a in states.items()}, step)
        self._save()
        return states

    def _where(self, step: int) -> str:
        if self.total_steps:
            return f"step {step} ({100.0 * step / self.total_steps:.0f} % of {self.total_steps})"
        return f"step {step}"

    def _transition(self, name: str, active: bool, detail: str, step: int) -> None:
        alert = self.alerts.get(name)
        policy = self.cfg[name]["policy"]
        if active and (alert is None or not alert.active):
            if alert is None:
                alert = self.alerts[name] = Alert(name, policy, step, step, detail)
            else:
                alert.active, alert.cleared_step, alert.message = True, None, detail
                alert.n_episodes += 1
                alert.last_step = step
            text = (
                f"{name} [{policy}] started at {self._where(step)}: {detail}. Hint: {HINTS[name]}."
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
        }

    def load_state_dict(self, state: Mapping) -> None:
        """Restore :meth:`state_dict` so an alert's first step and the verdict survive a resume."""
        self.alerts = {a["check"]: Alert(**a) for a in state.get("alerts", [])}
        self.should_stop = bool(state.get("should_stop", False))
        self.stop_reason = str(state.get("stop_reason", ""))
        self.n_updates = int(state.get("n_updates", 0))
        self.last_step = state.get("last_step")

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
        """One paragraph on the run's health."""
        checks = ", ".join(self.enabled)
        if self.n_updates == 0:
            return f"No health data: the monitor was never updated (checks enabled: {checks})."
        upto = self._where(self.last_step) if self.last_step is not None else "the end"
        if not self.alerts:
            return f"Healthy: {self.n_updates} health updates up to {upto} raised no alert (checks: {checks})."
        parts = []
        for a in sorted(self.alerts.values(), key=lambda a: a.first_step):
            state = "still active" if a.active else f"cleared at step {a.cleared_step}"
            parts.append(
                f"{a.check} first fired at {self._where(a.first_step)} ({state}; {a.message}); {HINTS[a.check]}"
            )
        head = (
            "Unhealthy"
            if self.should_stop or any(a.active for a in self.alerts.values())
            else "Recovered"
        )
        stop = f" The run was stopped: {self.stop_reason}." if self.should_stop else ""
        return (
            f"{head}: {len(self.alerts)} of {len(self.enabled)} checks fired in {self.n_updates} updates up to "
            f"{upto}. " + " ".join(p.rstrip(".") + "." for p in parts) + stop
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
