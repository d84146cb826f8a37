"""The health config groups agree with the library's defaults (one source of truth for values)."""

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from diagnostics.health import DEFAULTS, resolve_config

CONF = Path(__file__).resolve().parents[1] / "conf" / "health"
# Keys an experiment declares for itself: the GAN's loss is WGAN-GP; the autoencoder's skill
# picture is its summary frame.
DECLARED = {
    "gan": {("discriminator_wins", "loss"): "wgan"},
    "autoencoder": {("skill", "picture"): "frames/AE/summary"},
}
AE_OFF = {
    "critic_overpowering",
    "mode_collapse",
    "spectrum",
    "value_range",
    "critic_oscillation",
    "discriminator_wins",
    "data",
}


@pytest.mark.parametrize("name", ["gan", "autoencoder"])
def test_health_yaml_matches_library_defaults(name):
    cfg = OmegaConf.to_container(OmegaConf.load(CONF / f"{name}.yaml"))
    assert set(cfg) == set(DEFAULTS)
    for check, values in DEFAULTS.items():
        want = {k: DECLARED[name].get((check, k), v) for k, v in values.items()}
        assert {k: v for k, v in cfg[check].items() if k != "enabled"} == want, check
    resolved = resolve_config(cfg)
    off = {c for c, v in resolved.items() if not v["enabled"]}
    assert off == (set() if name == "gan" else AE_OFF)
