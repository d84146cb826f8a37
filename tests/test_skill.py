"""Skill against baselines (diagnostics/skill.py), the GAN's stabilisers and evaluate_gan.py."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from scipy.stats import wasserstein_distance

from diagnostics import skill
from diagnostics.hooks import probe_mode
from experiments import common
from experiments.evaluate_gan import evaluate, tile_starts, tile_windows
from experiments.losses import content_loss, trilinear_reference
from experiments.models.gan3d import Generator, ema_update, upsample
from experiments.train_gan import build_models, check_config, load_data, train
from tests.gan_helpers import ROOT, events, gan_cfg

VARS = ["a", "b"]


def _fields(seed: int = 0) -> torch.Tensor:
    # (B, C, D, H, W)
    return torch.randn(3, 2, 8, 8, 8, generator=torch.Generator().manual_seed(seed)).double()


def test_scalars_of_hand_made_predictions():
    truth = _fields()
    # A shift by c has MSE c^2 and W1 c; twice the field has 4x the power in every shell.
    s = skill.skill_stats(truth, truth + 0.1, truth + 0.2, regression=2 * truth)
    out = {k: float(v) for k, v in skill.skill_scalars(VARS, s).items()}
    assert out["skill/mse_ratio"] == pytest.approx(0.25)
    assert out["skill/a/mse_ratio"] == pytest.approx(0.25)
    assert out["skill/b/w1"] == pytest.approx(0.1)
    assert out["skill/b/w1_trilinear"] == pytest.approx(0.2)
    assert out["skill/a/spectrum_high_regression"] == pytest.approx(4.0)
    # A constant shift changes only k = 0, which the spectrum drops.
    assert out["skill/a/spectrum_high"] == pytest.approx(1.0)
    assert out["skill/a/spectrum_high_trilinear"] == pytest.approx(1.0)
    assert out["skill/mse_ratio_regression"] == pytest.approx(
        float(truth.square().mean()) / 0.04, rel=1e-9
    )
    want = {f"skill/{v}/{m}" for v in VARS for m in ("mse_ratio", "spectrum_high", "w1")}
    want |= {f"skill/{v}/{m}_trilinear" for v in VARS for m in ("spectrum_high", "w1")}
    assert want <= set(out)


def test_w1_and_mse_match_scipy_and_numpy():
    a, b = _fields(1), 0.5 * _fields(2) + 0.3
    w1 = skill.w1_per_var(a, b).numpy()
    mse = skill.mse_per_var(a, b).numpy()
    for c in range(2):
        x, y = a[:, c].numpy().ravel(), b[:, c].numpy().ravel()
        assert w1[c] == pytest.approx(wasserstein_distance(x, y), rel=1e-9)
        assert mse[c] == pytest.approx(np.mean((x - y) ** 2), rel=1e-12)


def test_summary_dict_and_table_and_figure():
    truth = _fields()
    s = skill.skill_stats(truth, truth + 0.1, truth + 0.2)
    host = {k: float(v) for k, v in skill.skill_scalars(VARS, s).items()}
    d = skill.summary_dict(7, VARS, host)
    assert d["step"] == 7 and d["mse_ratio"] == pytest.approx(0.25)
    assert d["a"]["w1_trilinear"] == pytest.approx(0.2)
    table = skill.skill_table(VARS, s)
    assert table["trilinear"]["b"]["mse"] == pytest.approx(0.04)
    text = skill.format_table(VARS, table)
    assert "generated" in text and "trilinear" in text
    fig = skill.skill_figure(VARS, s)
    assert len(fig.axes) == 4


def test_untrained_generator_is_trilinear():
    # The skip makes the generator trilinear when its residual is zero: the baseline to beat.
    G = Generator(2, 2, chan_base=8, chan_min=4, chan_max=8)
    torch.nn.init.zeros_(G.proj.weight)
    torch.nn.init.zeros_(G.proj.bias)
    x = torch.randn(1, 2, 4, 4, 4)
    truth = torch.randn(1, 2, 8, 8, 8)
    with torch.no_grad():
        s = skill.skill_stats(truth, G(x), upsample(x, 2))
    assert float(skill.skill_scalars(VARS, s)["skill/mse_ratio"]) == pytest.approx(1.0)


def test_ema_update_and_content_loss():
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    for p in a.parameters():
        p.data.zero_()
    for p in b.parameters():
        p.data.fill_(1.0)
    ema_update(a, b, 0.75)
    assert all(torch.allclose(p, torch.full_like(p, 0.25)) for p in a.parameters())
    ema_update(None, b, 0.5)  # off: nothing to do
    pred, truth = torch.zeros(1, 1, 2, 2, 2), torch.full((1, 1, 2, 2, 2), 2.0)
    assert float(content_loss(pred, truth, "mse")) == 4.0
    assert float(content_loss(pred, truth, "l1")) == 2.0
    with pytest.raises(ValueError, match="mse"):
        content_loss(pred, truth, "huber")


def test_normalised_content_loss():
    # Variable 0 misses by 2 everywhere, variable 1 by 4: MSE 4 and 16, L1 2 and 4.
    pred = torch.zeros(2, 2, 2, 2, 2)
    truth = torch.cat([torch.full((2, 1, 2, 2, 2), 2.0), torch.full((2, 1, 2, 2, 2), 4.0)], 1)
    assert float(content_loss(pred, truth, "mse")) == 10.0
    assert float(content_loss(pred, truth, "mse", torch.tensor([4.0, 16.0]))) == 1.0
    assert float(content_loss(pred, truth, "mse", torch.tensor([1.0, 32.0]))) == 2.25
    assert float(content_loss(pred, truth, "l1", torch.tensor([2.0, 1.0]))) == 2.5
    with pytest.raises(ValueError, match="one value per variable"):
        content_loss(pred, truth, "mse", torch.tensor([1.0, 1.0, 1.0]))


def _linear_up2(a: np.ndarray, axis: int) -> np.ndarray:
    """Factor-2 linear upsampling along one axis, half-pixel centres, edges clamped."""
    n = a.shape[axis]
    src = np.clip((np.arange(2 * n) + 0.5) / 2 - 0.5, 0, n - 1)
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, n - 1)
    w = (src - lo).reshape([-1 if i == axis else 1 for i in range(a.ndim)])
    return np.take(a, lo, axis) * (1 - w) + np.take(a, hi, axis) * w


def test_trilinear_reference_matches_numpy():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(5, 3, 4, 4, 4))
    y = rng.normal(size=(5, 3, 8, 8, 8)) * np.array([1.0, 0.1, 0.01])[None, :, None, None, None]
    up = _linear_up2(_linear_up2(_linear_up2(x, 2), 3), 4)
    xt, yt = torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)
    for kind, err in (("mse", (up - y) ** 2), ("l1", np.abs(up - y))):
        want = err.transpose(1, 0, 2, 3, 4).reshape(3, -1).mean(axis=1)
        got = trilinear_reference(xt, yt, 2, kind, chunk=2).numpy()
        np.testing.assert_allclose(got, want, rtol=1e-4)
    with pytest.raises(ValueError, match="> 0"):  # a variable trilinear gets exactly right
        trilinear_reference(xt, upsample(xt, 2), 2)


def test_content_norm_is_checked(cache_dir):
    with pytest.raises(ValueError, match="content_norm"):
        check_config(gan_cfg(cache_dir, "train.content_norm=variance"))


def test_tiling_covers_every_cell():
    assert tile_starts(9, 8) == [0, 1]
    assert tile_starts(16, 8, periodic=True) == [0, 8]
    assert len(tile_windows((2, 4, 9, 8, 16), (8, 8, 8))) == 2 * 2 * 1 * 2


STAB = [
    "train.steps=6",
    "train.pretrain_steps=3",
    "diagnostics.every=1",
    "log.physics_every=3",
    "train.ema_decay=0.9",
    "train.content_weight=10",
    "train.content_norm=trilinear",
    "train.lr_g=1e-3",
    "train.lr_g_adv=3e-5",
    "train.lr_d=2e-4",
    "embed.enabled=false",
    "checkpoint.every=3",
]


@pytest.fixture(scope="module")
def stab_run(cache_dir, tmp_path_factory):
    run = tmp_path_factory.mktemp("stab")
    summary = train(gan_cfg(cache_dir, *STAB), run)
    return run, summary


def test_stabilisers_are_in_the_checkpoint(stab_run):
    run, summary = stab_run
    state = common.load_checkpoint(common.latest_checkpoint(run))
    # Separate learning rates, and the generator's own after pretraining.
    assert state["opt_G"]["param_groups"][0]["lr"] == pytest.approx(3e-5)
    assert state["opt_D"]["param_groups"][0]["lr"] == pytest.approx(2e-4)
    # The EMA lags the weights; the regression copy is the EMA at the end of pretraining.
    assert any(not torch.equal(state["G"][k], state["G_ema"][k]) for k in state["G"])
    first = common.load_checkpoint(run / "checkpoints" / "ckpt_00000003.pt")
    for k in state["G_regression"]:
        assert torch.equal(state["G_regression"][k], first["G_ema"][k])
    tags = events(run).Tags()
    assert "loss/G_content" in tags["scalars"]
    assert summary["skill"]["step"] == 6


def test_content_reference_in_summary_and_used_by_pretraining(stab_run, cache_dir):
    """train.content_norm=trilinear: the reference against numpy on the same training crops, and
    the content loss is in units of it (~1 this close to the trilinear start)."""
    run, summary = stab_run
    cfg = gan_cfg(cache_dir, *STAB)
    _, train_ds, _, _, _, _ = load_data(cfg, run, write=False)
    x, y, _ = train_ds.probe_samples(256, seed=int(cfg.log.probe_seed) + 3)
    up = _linear_up2(_linear_up2(_linear_up2(x.numpy().astype(np.float64), 2), 3), 4)
    want = ((up - y.numpy()) ** 2).transpose(1, 0, 2, 3, 4).reshape(len(cfg.data.variables), -1)
    ref = summary["content_reference"]
    assert list(ref) == list(cfg.data.variables)
    np.testing.assert_allclose(list(ref.values()), want.mean(axis=1), rtol=1e-4)
    first = events(run).Scalars("loss/G_content")[0]
    assert first.step == 4
    assert 0.3 < first.value < 3.0  # unnormalised it is ~1e-4 (scaled units)


def test_skill_tags_and_summary(stab_run):
    run, summary = stab_run
    acc = events(run)
    tags = set(acc.Tags()["scalars"])
    for v in ("temperature", "vx", "vy", "vz"):
        for t in ("mse_ratio", "spectrum_high", "spectrum_high_trilinear", "w1", "w1_trilinear"):
            assert f"skill/{v}/{t}" in tags
            assert [e.step for e in acc.Scalars(f"skill/{v}/{t}")] == [3, 6]
        assert f"skill/{v}/mse_ratio_regression" in tags
    assert "skill/figure" in acc.Tags()["images"]
    last = acc.Scalars("skill/mse_ratio")[-1].value
    assert summary["skill"]["mse_ratio"] == pytest.approx(last, rel=1e-6)
    on_disk = json.loads((run / "summary.json").read_text())["skill"]
    assert on_disk["vx"]["w1"] == pytest.approx(summary["skill"]["vx"]["w1"])


@pytest.mark.slow
def test_skill_scalars_match_a_recomputation_from_the_checkpoint(stab_run, cache_dir):
    """The written scalars against numpy/scipy on the checkpoint's generator and the same crops."""
    run, summary = stab_run
    cfg = gan_cfg(cache_dir, *STAB)
    _, _, val_ds, _, _, (train_steps, val_steps) = load_data(cfg, run, write=False)
    assert val_steps and not set(train_steps) & set(val_steps)
    x, y, _ = val_ds.probe_samples(int(cfg.log.n_skill), seed=int(cfg.log.probe_seed) + 2)
    state = common.load_checkpoint(common.latest_checkpoint(run))
    variables = list(cfg.data.variables)
    G, _ = build_models(cfg, len(variables), torch.device("cpu"))
    G.load_state_dict(state["G_ema"])
    with probe_mode(G, seed=int(cfg.log.probe_seed)):
        gen = skill.predict(G, x, int(cfg.train.batch_size), torch.device("cpu")).numpy()
    tri = torch.nn.functional.interpolate(x, scale_factor=2, mode="trilinear").numpy()
    truth = y.numpy()
    acc = events(run)
    ratios = []
    for c, v in enumerate(variables):
        m_gen = np.mean((gen[:, c].astype(np.float64) - truth[:, c]) ** 2)
        m_tri = np.mean((tri[:, c].astype(np.float64) - truth[:, c]) ** 2)
        ratios.append(m_gen / m_tri)
        logged = acc.Scalars(f"skill/{v}/mse_ratio")[-1].value
        assert math.isfinite(logged)
        assert logged == pytest.approx(m_gen / m_tri, rel=1e-4)
        w1 = wasserstein_distance(gen[:, c].ravel(), truth[:, c].ravel())
        assert acc.Scalars(f"skill/{v}/w1")[-1].value == pytest.approx(w1, rel=1e-4, abs=1e-7)
        w1t = wasserstein_distance(tri[:, c].ravel(), truth[:, c].ravel())
        assert acc.Scalars(f"skill/{v}/w1_trilinear")[-1].value == pytest.approx(
            w1t, rel=1e-4, abs=1e-7
        )
    assert acc.Scalars("skill/mse_ratio")[-1].value == pytest.approx(np.mean(ratios), rel=1e-4)


def test_evaluate_writes_eval_json(stab_run):
    run, _ = stab_run
    out = evaluate(run)
    data = json.loads((run / "eval.json").read_text())
    assert data["step"] == 6 and data["generator_weights"] == "G_ema"
    # tiny data: (r, lat, lon) = (9, 8, 16), crop 8: r starts [0, 1], lat [0], lon [0, 8]; 1 val file.
    assert data["n_crops"] == 4 == out["n_crops"]
    assert set(data["table"]) == {"generated", "trilinear", "regression"}
    for v in ("temperature", "vz"):
        row = data["table"]["trilinear"][v]
        assert {"mse", "spectrum_low", "spectrum_mid", "spectrum_high", "w1"} <= set(row)
    assert data["skill"]["skill/mse_ratio"] == pytest.approx(
        np.mean(
            [
                data["table"]["generated"][v]["mse"] / data["table"]["trilinear"][v]["mse"]
                for v in ("temperature", "vx", "vy", "vz")
            ]
        )
    )


def _cli(*args):
    env = {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [sys.executable, str(ROOT / "experiments" / "evaluate_gan.py"), *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
    )


def test_evaluate_bad_input_exits_2_writing_nothing(stab_run, tmp_path):
    run, _ = stab_run
    # No checkpoints.
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "config.yaml").write_text((run / "config.yaml").read_text())
    r = _cli(bare)
    assert r.returncode == 2 and "no complete checkpoint" in r.stderr
    # A checkpoint of another script (the autoencoder's keys).
    other = tmp_path / "other"
    (other / "checkpoints").mkdir(parents=True)
    (other / "config.yaml").write_text((run / "config.yaml").read_text())
    common.save_checkpoint(other / "checkpoints", 5, {"model": {}, "opt": {}, "step": 5})
    r = _cli(other)
    assert r.returncode == 2 and "not a checkpoint of experiments/train_gan.py" in r.stderr
    # A run of another script.
    ae = tmp_path / "ae"
    ae.mkdir()
    (ae / "config.yaml").write_text("experiment: autoencoder\n")
    r = _cli(ae)
    assert r.returncode == 2 and "expected 'gan'" in r.stderr
    assert not any((d / "eval.json").exists() for d in (bare, other, ae))
