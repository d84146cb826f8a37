"""Shared helpers for tests that run the GAN experiment: compose its config without Hydra's CLI."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from experiments.presets import GAN_TINY as _TINY

ROOT = Path(__file__).resolve().parents[1]
GAN_CONF = ROOT / "conf" / "gan"

# Tiny enough for a few seconds per run on one thread.
TINY = [
    *_TINY,
]


def gan_cfg(cache_dir: Path, *overrides: str, exp: str | None = "small") -> DictConfig:
    """Compose ``train_gan`` with ``+exp=<exp>``, the tiny sizes, the cache dir and overrides."""
    ov = ([f"+exp={exp}"] if exp else []) + TINY + [f"data.cache_dir={cache_dir}", *overrides]
    with initialize_config_dir(config_dir=str(GAN_CONF), version_base="1.3"):
        return compose(config_name="train_gan", overrides=ov)


def events(run_dir) -> EventAccumulator:
    """A run's event file through TensorBoard's reader, keeping every record (size_guidance 0)."""
    acc = EventAccumulator(
        str(run_dir), size_guidance={k: 0 for k in ("scalars", "images", "histograms", "tensors")}
    )
    acc.Reload()
    return acc


def poison_critic_at(monkeypatch, k: int, n_critic: int) -> dict:
    """Make the critic's loss NaN in the first critic update of step ``k`` (``n_critic`` updates
    per step); returns a dict that receives the built ``G`` and ``D`` for inspection."""
    import experiments.train_gan as tg

    calls = {"n": 0}
    real_loss, real_build = tg.critic_loss, tg.build_models

    def poisoned(s_real, s_fake):
        calls["n"] += 1
        loss = real_loss(s_real, s_fake)
        return loss * float("nan") if calls["n"] == n_critic * (k - 1) + 1 else loss

    built: dict = {}

    def observed(*a, **kw):
        built["G"], built["D"] = real_build(*a, **kw)
        return built["G"], built["D"]

    monkeypatch.setattr(tg, "critic_loss", poisoned)
    monkeypatch.setattr(tg, "build_models", observed)
    return built
