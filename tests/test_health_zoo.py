"""A reduced health zoo (benchmarks/health.py): four real runs, one healthy and three failing.

Each row trains for real (the 3D GAN at tiny sizes, or the 2D DCGAN) with the zoo's overrides and
every health policy set to ``stop``; the row must meet the zoo's target (a failing run flagged in
its first 25 %, the healthy one silent), and its alert must be the failure it was made with.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("bench_health", ROOT / "benchmarks" / "health.py")
zoo = importlib.util.module_from_spec(_spec)
sys.modules["bench_health"] = zoo  # its dataclasses look their module up
_spec.loader.exec_module(zoo)

ROWS = {
    # shorter than in the zoo: 40 pretraining steps of the skilful recipe, then 40 adversarial
    "healthy_s0": dict(
        steps=80, overrides=[*zoo.SKILLED, "train.pretrain_steps=40", "log.physics_every=10"]
    ),
    "garbage_data": dict(steps=40),
    "g_blowup": dict(steps=80),
    "dcgan_d_wins": dict(steps=300),
}
EXPECT = {"garbage_data": "data", "g_blowup": None, "dcgan_d_wins": "discriminator_wins"}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(ROWS))
def test_reduced_zoo_row(name, cache_dir, tmp_path):
    e = dataclasses.replace(zoo.ZOO[name], **ROWS[name])
    row = zoo.worker(name, tmp_path, e, [f"data.cache_dir={cache_dir}"])
    health = json.loads((tmp_path / name / "health.json").read_text())
    assert row["alerts"] == health["alerts"]
    if e.label == "healthy":
        assert health["alerts"] == [] and health["verdict"].startswith("Healthy"), health["verdict"]
        assert health["last_step"] == e.steps
        return
    first = min(health["alerts"], key=lambda a: a["first_step"])
    assert row["ok"], (row["first"], row["share"], health["verdict"])
    assert first["first_step"] <= 0.25 * e.steps
    if EXPECT[name]:
        assert first["check"] == EXPECT[name]
    # the alert names its evidence and the verdict says what to do
    ev = first["evidence"][0]
    assert ev["tag"] and ev["picture"] and ev["step"] == first["first_step"]
    assert "What to do: (1)" in health["verdict"]
    if name == "garbage_data":
        assert "file spherical001, variable temperature" in ev["reference"]
