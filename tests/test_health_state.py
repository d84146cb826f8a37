"""Health state survives a checkpoint round trip: an alert's first step and the verdict are kept."""

from __future__ import annotations

import torch

from diagnostics.health import HealthMonitor


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
