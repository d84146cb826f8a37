"""The health config groups agree with the library's defaults (one source of truth for values)."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from diagnostics.health import DEFAULTS, resolve_config

CONF = Path(__file__).resolve().parents[1] / "conf"


@pytest.mark.parametrize("name", ["gan", "autoencoder"])
def test_health_yaml_matches_library_defaults(name):
    # As the script composes it: conf/health/autoencoder.yaml is gan.yaml plus three checks off.
    script = {"gan": "train_gan", "autoencoder": "train_autoencoder"}[name]
    with initialize_config_dir(config_dir=str(CONF / name), version_base="1.3"):
        cfg = OmegaConf.to_container(compose(config_name=script).health)
    for check, values in DEFAULTS.items():
        assert {k: v for k, v in cfg[check].items() if k != "enabled"} == values, check
    resolved = resolve_config(cfg)
    off = {c for c, v in resolved.items() if not v["enabled"]}
    assert off == (set() if name == "gan" else {"critic_overpowering", "mode_collapse", "spectrum"})
