"""Config schemas of the training scripts: the type and range of every numeric key.

A schema is a dataclass per config section; each field's type is checked by OmegaConf's own
typed nodes (``OmegaConf.structured``: ``"many"`` is not an int, ``True`` is not a number) and
its ``metadata`` holds a lower bound. Only the keys a schema names are checked, so a section
may carry more keys (Hydra's struct mode already refuses unknown ones). ``check`` reports every
bad key in one :class:`ConfigError` before any data is touched.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from omegaconf import MISSING, OmegaConf
from omegaconf.errors import ValidationError


class ConfigError(ValueError):
    """A bad configuration value (exit 2): the message names every bad key and what it expects."""


def _ge(lo: float, default=MISSING):
    return field(default=default, metadata={"min": lo})


@dataclass
class Run:
    seed: int = _ge(0)
    threads: int = _ge(1)


@dataclass
class Diagnostics:
    every: int = _ge(1)
    record_every: int = _ge(1)
    image_every: int = _ge(1)


@dataclass
class GanTrain:
    steps: int = _ge(1)
    batch_size: int = _ge(1)
    n_critic: int = _ge(1)
    pretrain_steps: int = _ge(0)
    lambda_gp: float = _ge(0.0)
    lr_g: float = _ge(0.0)
    lr_d: float = _ge(0.0)
    ema_decay: float = _ge(0.0)
    content_weight: float = _ge(0.0)


@dataclass
class GanFault:  # test-only fault injection (benchmarks/health.py); lr_spike_step may be null
    lr_spike_factor: float = _ge(0.0)


@dataclass
class GanData:
    factor: int = _ge(1)


@dataclass
class GanLog:
    slices_every: int = _ge(1)
    physics_every: int = _ge(1)
    n_probe: int = _ge(1)
    n_noise_draws: int = _ge(1)
    n_skill: int = _ge(1)


@dataclass
class Every:
    every: int = _ge(1)


@dataclass
class Checkpoint:
    every: int = _ge(1)
    n_keep: int = _ge(1)


@dataclass
class Embed:
    every: int = _ge(1)
    n_items: int = _ge(1)


@dataclass
class AeTrain:
    n_epochs: int = _ge(1)
    steps_per_epoch: int = _ge(1)
    batch_size: int = _ge(1)


GAN = {
    "": Run,
    "diagnostics": Diagnostics,
    "train": GanTrain,
    "train.fault": GanFault,
    "data": GanData,
    "log": GanLog,
    "snapshot": Every,
    "checkpoint": Checkpoint,
    "embed": Embed,
}
AUTOENCODER = {
    "": Run,
    "diagnostics": Diagnostics,
    "train": AeTrain,
    "snapshot": Every,
    "frames": Every,
    "checkpoint": Checkpoint,
}


def _expected(tp) -> str:
    return "an integer" if tp in (int, "int") else "a number"


def check(cfg, schema: dict[str, type]) -> None:
    """Raise :class:`ConfigError` listing every key of ``cfg`` that breaks ``schema``."""
    bad = []
    for section, cls in schema.items():
        node = cfg if not section else OmegaConf.select(cfg, section)
        if node is None:
            continue
        for f in dataclasses.fields(cls):
            key = f"{section}.{f.name}" if section else f.name
            if f.name not in node:
                continue
            v = OmegaConf.select(cfg, key)
            if v is None and section == "diagnostics":
                continue
            try:
                # OmegaConf's typed node; a bool passes OmegaConf's float/int nodes, not here.
                if isinstance(v, bool) or isinstance(v, str):
                    raise ValidationError("not a number")
                if f.type in (int, "int") and isinstance(v, float) and v.is_integer():
                    v = int(v)  # 2.0 is the integer 2
                typed = OmegaConf.structured(cls)
                setattr(typed, f.name, v)
                value = getattr(typed, f.name)
                if f.type in (int, "int") and float(v) != value:
                    raise ValidationError("not an integer")
            except ValidationError:
                bad.append(f"{key}={v!r} (expected {_expected(f.type)})")
                continue
            lo = f.metadata.get("min")
            if lo is not None and value < lo:
                bad.append(f"{key}={v!r} (expected >= {lo})")
    if bad:
        raise ConfigError("bad config values: " + "; ".join(bad))
