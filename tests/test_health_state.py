"""Health state survives a checkpoint round trip: an alert's first step and the verdict are kept."""

from __future__ import annotations

import json

import torch

from diagnostics.health import HealthMonitor
from tests.gan_helpers import gan_cfg


def test_state_dict_round_trip_keeps_first_step_and_verdict(tmp_path):
    mon = HealthMonitor(None, total_steps=10)
    mon.report_nonfinite(3, "loss/D is nan at step 3")
    mon.update(4, {})
    before = mon.verdict()
    assert mon.alerts["nonfinite"].first_step == 3
    path = tmp_path / "h.pt"
    torch.save({"health": mon.state_dict()}, path)
    back = HealthMonitor(None, total_steps=10)
    back.load_state_dict(torch.load(path, weights_only=True)["health"])
    assert back.alerts["nonfinite"].first_step == 3
    assert back.verdict() == before
    assert not back.verdict().startswith("No health data")


# A skill threshold nothing meets: "skill" fires at the second skill write of any run (a
# deterministic alert to follow through a resume).
ALWAYS = ["health.skill.max=-1.0", "health.skill.hard_max=-1.0", "health.skill.improve=0.0"]
ALWAYS += ["health.skill.warmup_frac=0.0"]


def _health(run_dir):
    return json.loads((run_dir / "health.json").read_text())


def _first(run_dir, check):
    return {a["check"]: a["first_step"] for a in _health(run_dir)["alerts"]}[check]


def test_gan_alert_first_step_and_verdict_survive_resume_and_rerun(cache_dir, tmp_path):
    from experiments.train_gan import train

    common = [
        "diagnostics.every=2",
        "log.physics_every=2",
        "log.slices_every=100",
        "embed.enabled=false",
    ]
    common += ["checkpoint.every=4", *ALWAYS]
    straight = tmp_path / "straight"
    train(gan_cfg(cache_dir, "train.steps=8", *common), straight)
    part = tmp_path / "part"
    train(gan_cfg(cache_dir, "train.steps=4", *common), part)
    assert _first(part, "skill") == 4  # skill writes at 2 and 4
    train(gan_cfg(cache_dir, "train.steps=8", *common, f"resume={part}"), part)
    assert _first(part, "skill") == _first(straight, "skill") == 4
    verdict = _health(part)["verdict"]
    assert verdict.startswith("Unhealthy") and "skill first fired at step 4" in verdict
    # rerunning the finished run trains nothing and keeps the verdict
    train(gan_cfg(cache_dir, "train.steps=8", *common, f"resume={part}"), part)
    assert _health(part)["verdict"] == verdict
    assert json.loads((part / "summary.json").read_text())["health"] == verdict


def test_autoencoder_alert_first_step_and_verdict_survive_resume_and_rerun(tmp_path):
    from experiments.train_autoencoder import train
    from tests.test_train_autoencoder import SHORT, make_cfg

    straight = tmp_path / "straight"
    train(make_cfg(["+exp=small", *SHORT[1:], "train.n_epochs=3", *ALWAYS]), straight)
    part = tmp_path / "part"
    train(make_cfg(["+exp=small", *SHORT, *ALWAYS]), part)
    first = _first(part, "skill")
    train(make_cfg(["+exp=small", *SHORT[1:], "train.n_epochs=3", f"resume={part}", *ALWAYS]), part)
    assert _first(part, "skill") == _first(straight, "skill") == first
    verdict = _health(part)["verdict"]
    assert verdict.startswith("Unhealthy") and "skill/mse_ratio=" in verdict
    train(make_cfg(["+exp=small", *SHORT[1:], "train.n_epochs=3", f"resume={part}", *ALWAYS]), part)
    assert _health(part)["verdict"] == verdict
    assert not verdict.startswith("No health data")
