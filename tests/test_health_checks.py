"""The failure-mode checks of diagnostics.health on hand-made histories, and the statistics they read."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diagnostics.gan import GanBalance
from diagnostics.health import (
    DEFAULTS,
    SPECTRUM_TOO_LITTLE,
    SPECTRUM_TOO_MUCH,
    HealthMonitor,
    check_blowup,
    check_critic_oscillation,
    check_data,
    check_discriminator_wins,
    check_mode_collapse,
    check_skill,
    check_spectrum,
    check_value_range,
    detect_loss,
    sign_flips,
)

NEVER = -(2**62)


def hist(**series: list[float]) -> dict[str, list[tuple[int, float]]]:
    """``{tag: [(10, v0), (20, v1), ...]}``; ``__`` in a keyword stands for ``/``."""
    return {
        k.replace("__", "/"): [(10 * (i + 1), float(v)) for i, v in enumerate(vs)]
        for k, vs in series.items()
    }


def cfg(name: str, **kw) -> dict:
    return {**DEFAULTS[name], **kw}


def test_value_range_needs_n_writes_above_max():
    h = hist(gan__outside_range=[0.0, 0.001, 0.3, 0.01, 0.4])
    assert not check_value_range(h, cfg("value_range"), NEVER).active  # 0.01 breaks the run
    h = hist(gan__outside_range=[0.0, 0.3, 0.5])
    f = check_value_range(h, cfg("value_range"), NEVER)
    assert f.active
    (e,) = f.evidence
    assert (e.tag, e.step, e.value, e.picture) == ("gan/outside_range", 30, 0.5, "slices/G/probe0")


def test_value_range_statistic_against_numpy():
    g = torch.tensor([[-0.5, -0.1, 0.0, 0.5], [1.0, 1.09, 1.11, float("nan")]])
    bal = GanBalance()
    bal.update_range(g)  # inside: [-0.1, 1.1]
    a = g.numpy()
    want = 1.0 - np.mean((a >= -0.1) & (a <= 1.1))  # NaN compares False: outside
    assert float(bal.compute()["gan/outside_range"]) == pytest.approx(want)
    assert want == pytest.approx(3 / 8)


def test_blowup_against_best_so_far():
    c = cfg("blowup")
    # 4e-4 down to 3e-4, then 0.14: the generator that blew up.
    h = hist(loss__mse=[4e-4, 3e-4, 3.5e-4, 0.01, 0.14])
    f = check_blowup(h, c, NEVER)
    assert f.active and f.evidence[0].value == 0.14 and "best 0.0003" in f.evidence[0].reference
    # a single spike that recovers is not a blow-up
    assert not check_blowup(hist(loss__mse=[4e-4, 3e-4, 0.01, 3e-4]), c, NEVER).active
    # slow rise (GAN adding small-scale power): 3x, below the factor 10
    assert not check_blowup(hist(loss__mse=[4e-4, 3e-4, 6e-4, 9e-4, 9e-4]), c, NEVER).active


def test_skill_worse_and_getting_worse():
    c = cfg("skill")
    # improving from far above the baseline (an untrained start): quiet
    assert not check_skill(hist(skill__mse_ratio=[300, 40, 12, 3.0, 1.4]), c, NEVER).active
    # worse than trilinear and rising
    f = check_skill(hist(skill__mse_ratio=[3.0, 1.4, 1.6, 2.5]), c, NEVER)
    assert f.active and "rising from 1.6" in f.evidence[0].reference
    assert f.evidence[0].picture == "skill/figure"
    # 18.7x worse and not improving (falls by < 20 %): the 1000-step run
    f = check_skill(hist(skill__mse_ratio=[19.5, 18.7]), c, NEVER)
    assert f.active and "not improving" in f.evidence[0].reference
    # better than the baseline: quiet even when rising
    assert not check_skill(hist(skill__mse_ratio=[0.5, 0.7, 0.9]), c, NEVER).active


def test_critic_oscillation_flips_and_amplitude():
    c = cfg("critic_oscillation")
    assert sign_flips([5, -3, 0.5, -4, 6], 1.0) == 2  # 0.5 is within the floor: + - - +
    swing = hist(gan__gap=[1, 2, 60, -86, 40, -30, 55, -70])
    f = check_critic_oscillation(swing, c, NEVER)
    # the last 6 writes: 60, -86, 40, -30, 55, -70 (the issue's -86..+60 swing)
    assert f.active and f.evidence[0].reference.startswith("5 sign flips")
    assert "range -86..60" in f.evidence[0].reference
    # a slowly drifting, noisy but positive gap: quiet
    drift = hist(gan__gap=[1.0, 1.5, 0.8, 2.0, 1.7, 2.2, 1.9, 2.5])
    assert not check_critic_oscillation(drift, c, NEVER).active
    # small flips around zero (a critic near its start): within the floor, quiet
    assert not check_critic_oscillation(
        hist(gan__gap=[0.3, -0.2, 0.4, -0.5, 0.2, -0.1]), c, NEVER
    ).active
    # no flips but a huge swing
    f = check_critic_oscillation(hist(gan__gap=[1, 5, 80, 2, 90, 3]), c, NEVER)
    assert f.active and "peak-to-peak 89" in f.evidence[0].reference


def test_discriminator_wins_by_loss_type():
    won = hist(
        gan__score_real=[1.0, 4.0, 5.0, 6.0],
        gan__score_fake=[-1.0, -4.0, -5.0, -7.0],
        gan__separation=[0.8, 1.0, 1.0, 1.0],
    )
    f = check_discriminator_wins(won, cfg("discriminator_wins", loss="bce"), NEVER)
    assert f.active and "bce" in f.detail and "label smoothing" in f.hint
    assert {e.tag for e in f.evidence} == {"gan/score_real", "gan/score_fake", "gan/separation"}
    # sigmoid(2) = 0.88 < 0.95: not yet won
    near = hist(gan__score_real=[2.0] * 4, gan__score_fake=[-2.0] * 4)
    assert not check_discriminator_wins(near, cfg("discriminator_wins", loss="bce"), NEVER).active
    # hinge: both margins (1) met for 3 writes; bce would not fire on the same scores
    hinge = hist(gan__score_real=[1.5] * 3, gan__score_fake=[-1.2] * 3)
    assert check_discriminator_wins(hinge, cfg("discriminator_wins", loss="hinge"), NEVER).active
    assert not check_discriminator_wins(hinge, cfg("discriminator_wins", loss="bce"), NEVER).active
    # a WGAN critic's scores have no scale: quiet whatever they are
    assert not check_discriminator_wins(won, cfg("discriminator_wins", loss="wgan"), NEVER).active
    # auto: a gradient penalty means WGAN-GP
    assert detect_loss({**won, "loss/gp": [(10, 0.1)]}) == "wgan" and detect_loss(won) == "bce"
    assert not check_discriminator_wins(
        {**won, "loss/gp": [(10, 0.1)]}, cfg("discriminator_wins"), NEVER
    ).active


def test_spectrum_hint_follows_the_direction():
    c = cfg("spectrum")
    f = check_spectrum(hist(spectrum__vx__ratio_high=[30, 40, 50]), c, NEVER)
    assert f.active and f.hint == SPECTRUM_TOO_MUCH and "too much" in f.evidence[0].reference
    assert f.evidence[0].picture == "spectrum/3d"
    c2 = {**c, "tags": ["spectrum2d/*/ratio_high"]}
    f = check_spectrum(hist(spectrum2d__vx__ratio_high=[0.01] * 3), c2, NEVER)
    assert f.hint == SPECTRUM_TOO_LITTLE and f.evidence[0].picture == "spectrum2d/2d"
    mon = HealthMonitor({"spectrum": {"warmup_frac": 0.0}})
    h: dict = {}
    for i, v in enumerate([30, 40, 50]):
        h["spectrum/vx/ratio_high"] = [*h.get("spectrum/vx/ratio_high", []), (10 * i + 10, v)]
        mon.update(10 * i + 10, h)
    assert "misses small-scale" not in mon.verdict() and "power the truth lacks" in mon.verdict()


def test_mode_collapse_waits_for_the_adversarial_phase():
    c = cfg("mode_collapse")
    h = hist(gan__diversity=[0.0, 0.0, 0.0, 0.0])  # MSE pretraining: the noise is unused
    assert not check_mode_collapse(h, c, NEVER).active
    h["loss/G"] = [(30, 1.0), (40, 1.0)]  # adversarial from step 30: diversity 0 at 30 and 40
    assert check_mode_collapse(h, c, NEVER).active


def test_data_check_names_file_variable_and_layer():
    h = {
        "data/spherical001/temperature/span": [(0, 1e-27)],
        "data/spherical001/temperature/range_share": [(0, 1.0)],
        "data/spherical001/temperature/extreme_layer": [(0, 8.0)],
        "data/spherical002/temperature/span": [(0, 2e-27)],
        "data/spherical002/temperature/range_share": [(0, 1e-27)],
        "data/spherical002/temperature/extreme_layer": [(0, 0.0)],
        "data/spherical001/vx/span": [(0, 0.4)],
        "data/spherical002/vx/span": [(0, 0.5)],
    }
    f = check_data(h, cfg("data"), NEVER)
    (e,) = f.evidence
    assert "file spherical001, variable temperature, radial layer 8" in e.reference
    assert e.step == 0 and e.value < 1e-3


def test_scaling_scalars_against_numpy(tmp_path):
    from experiments.data import plausibility

    rng = np.random.default_rng(0)
    a = rng.uniform(300, 3000, size=(4, 6, 10))  # (V=1 stacked later) (lat, r, lon)
    b = rng.uniform(300, 3000, size=(4, 6, 10))
    a[:, 5, :] = np.logspace(20, 30, 40).reshape(4, 10)  # garbage in layer 5 of file 1
    import xarray as xr

    paths = []
    for i, x in enumerate((a, b), 1):
        p = tmp_path / f"spherical{i:03d}.nc"
        xr.Dataset({"temperature": (("lat", "r", "lon"), x)}).to_netcdf(p)
        paths.append(p)
    stats = plausibility.scan(paths, ["temperature"])
    vmin, vmax = plausibility.scaling(stats, [])
    out = plausibility.scaling_scalars(stats, ["temperature"], [], vmin, vmax)
    rngs = vmax[0] - vmin[0]
    assert rngs == pytest.approx(1e30 - min(a.min(), b.min()))
    want_b = np.median([np.ptp(np.percentile(b[:, r, :], [1, 99])) for r in range(6)]) / rngs
    assert out["data/spherical002/temperature/span"] == pytest.approx(want_b)
    assert out["data/spherical001/temperature/range_share"] == pytest.approx(1.0)
    assert out["data/spherical001/temperature/extreme_layer"] == 5.0
    # dropping the garbage layer gives a meaningful scale again
    vmin, vmax = plausibility.scaling(stats, [5])
    out = plausibility.scaling_scalars(stats, ["temperature"], [5], vmin, vmax)
    assert out["data/spherical002/temperature/span"] > 0.5
    mon = HealthMonitor(None)
    sc = plausibility.scaling_scalars(stats, ["temperature"], [], *plausibility.scaling(stats, []))
    mon.update(0, {k: [(0, v)] for k, v in sc.items()})
    assert mon.should_stop and "spherical001" in mon.stop_reason


def test_alert_and_verdict_carry_evidence_and_what_to_do(tmp_path):
    mon = HealthMonitor(None, run_dir=tmp_path, total_steps=100)
    h: dict = {}
    for i, v in enumerate([4e-4, 3e-4, 0.05, 0.14]):
        h["loss/mse"] = [*h.get("loss/mse", []), (10 * (i + 1), v)]
        mon.update(10 * (i + 1), h)
    a = mon.alerts["blowup"]
    assert a.first_step == 40 and a.evidence[0]["tag"] == "loss/mse"
    assert a.evidence[0]["step"] == 40 and a.evidence[0]["value"] == 0.14
    v = mon.verdict()
    assert v.startswith("Unhealthy") and "loss/mse=0.14 at step 40" in v and "What to do: (1)" in v
    assert "TensorBoard: loss/mse" in v
    # the state round trip keeps the evidence
    back = HealthMonitor(None, total_steps=100)
    back.load_state_dict(mon.state_dict())
    assert back.verdict() == v
