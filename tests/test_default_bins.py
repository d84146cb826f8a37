"""Informative defaults: per-layer bins fitted at the first write, dead units, on real models."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from diagnostics.activations import AUTO_GRID, accumulate_log2, coarsen, fit_window
from diagnostics.core import Diagnostics
from diagnostics.stats import summarize
from diagnostics.writer import Writer
from experiments.models.dcgan import dcgan
from tests.gan_helpers import events, gan_cfg

MIN_BINS = 10  # the bar: each layer's colorful image uses at least this many bins


def occupied(ea, prefix: str) -> dict[str, int]:
    """Bins holding a value, over all writes, per ``act/...`` histogram tag (read back)."""
    out = {}
    for tag in ea.Tags()["histograms"]:
        if tag.startswith(prefix):
            used = set()  # bucket upper limits with a count, in any write (the image's rows)
            for e in ea.Histograms(tag):
                h = e.histogram_value
                used |= {lim for lim, c in zip(h.bucket_limit, h.bucket, strict=True) if c}
            out[tag] = len(used)
    return out


def test_fit_window_and_coarsen_exact_vs_numpy():
    # |a| = 2**(j/64 + 1/128) for j < 640, both signs, exact zeros, one +Inf and one NaN, through
    # the hooks' own accumulate_log2; the reference bins log2|a| in float64 on the same edges.
    rng = np.random.default_rng(0)
    logs = -10.0 + (rng.integers(0, 640, 5000) + 0.5) / 64  # 2**-10 .. 2**0
    x = np.concatenate([rng.choice([-1, 1], 5000) * 2.0**logs, np.zeros(7), [np.inf, np.nan]])
    buf2 = torch.zeros(AUTO_GRID.size, dtype=torch.float64)
    accumulate_log2(buf2, torch.from_numpy(x.astype(np.float32)))
    # a non-contiguous view (a transposed conv-like tensor) counts the same
    xt = torch.from_numpy(x[:5000].astype(np.float32)).view(50, 100)
    b1, b2 = (torch.zeros(AUTO_GRID.size, dtype=torch.float64) for _ in range(2))
    accumulate_log2(b1, xt.t())
    accumulate_log2(b2, xt.contiguous())
    nc = AUTO_GRID.n_counts
    assert torch.equal(b1[:nc], b2[:nc]) and b1[nc] == b2[nc]  # counts exact; sums in any order
    torch.testing.assert_close(b1[nc:], b2[nc:], rtol=1e-5, atol=0.0)
    s = summarize(buf2.numpy(), AUTO_GRID)
    assert s["n"] == 5009 and s["nan_count"] == 1 and s["inf_count"] == 1
    fine = s["counts"]
    j0, k = fit_window(fine, 40)
    coarse = coarsen(fine, j0, k, 40)
    edges = AUTO_GRID.bin_edges()[j0 : j0 + 40 * k + 1 : k]  # log2 units
    nz = np.log2(np.abs(x[np.isfinite(x) & (x != 0)]))
    ref, _ = np.histogram(nz, edges)
    np.testing.assert_array_equal(coarse[1:-1], ref)
    assert coarse[0] == 7 + np.count_nonzero(nz < edges[0])  # zeros are underflow
    assert coarse[-1] == 1 + np.count_nonzero(nz >= edges[-1])  # +Inf is overflow
    # data in fine bins 24 * 64 = 1536 .. 2175 (span 640); widened by 160 below and 320 above:
    # 1120 fine bins -> k = 28, a 1120-bin window from fine bin 1376 = 2**-13 * (1 + 32/64) to
    # fine bin 2496 = 2**5: |a| in [1.5 * 2**-13, 32)
    assert (j0, k) == (1376, 28)
    np.testing.assert_allclose(edges[[0, -1]], [np.log2(1.5 * 2.0**-13), 5.0], atol=1e-12)
    with pytest.raises(ValueError, match="a value"):
        fit_window(np.r_[5.0, np.zeros(AUTO_GRID.n_bins), 0.0], 40)


def run_default(model, batches, tmp_path, *, every=2, steps=6, opt=None):
    opt = opt or torch.optim.Adam(model.parameters(), 1e-3)
    cfg = {"every": every, "record_every": 1}
    with Diagnostics({"M": model}, {"M": opt}, Writer(tmp_path), cfg) as diag:
        for step in range(steps):
            opt.zero_grad()
            out = model(batches[step % len(batches)])
            out.square().mean().backward()
            opt.step()
            diag.step(step)
    return diag


def test_relu_fed_negatives_is_all_dead_healthy_small_init_is_not(tmp_path):
    torch.manual_seed(0)
    relu = nn.Sequential(nn.ReLU())
    d1 = Diagnostics({"M": relu}, None, None, {"every": 1, "record_every": 1})
    with d1:
        for step in range(3):
            relu(-torch.rand(8, 5) - 0.1)
            d1.step(step)
    assert d1.history["act/M/0/dead"] == [(0, 1.0), (1, 1.0), (2, 1.0)]

    # Healthy MLP and CNN with N(0, 0.02) weights (DCGAN init): small outputs, all units alive.
    mlp = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.LeakyReLU(0.2))
    cnn = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.Tanh())
    for net in (mlp, cnn):
        for m in net.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                nn.init.normal_(m.weight, 0.0, 0.02)
                nn.init.zeros_(m.bias)
    d2 = Diagnostics({"mlp": mlp, "cnn": cnn}, None, None, {"every": 1, "record_every": 1})
    with d2:
        mlp(torch.randn(64, 16))
        cnn(torch.randn(8, 3, 12, 12))
        d2.step(0)
    dead = {t: v[-1][1] for t, v in d2.history.items() if t.endswith("/dead")}
    assert len(dead) == 8 and all(v == 0.0 for v in dead.values()), dead
    # the legacy definition (share in the lowest |a| bin of [0, 10]) calls the same layers dead
    legacy = {"every": 1, "record_every": 1, "activations": {"lo": 0.0, "hi": 10.0, "dead_bins": 1}}
    d3 = Diagnostics({"mlp": mlp}, None, None, legacy)
    with d3:
        mlp(torch.randn(64, 16))
        d3.step(0)
    assert d3.history["act/mlp/1/dead"][-1][1] > 0.99


def test_dead_units_count_channels():
    # Conv output (B, C, H, W): channel 1 of 4 is always 0 -> 25 % dead, although most values
    # of the others are 0 too (ReLU of mostly negatives): units, not values.
    conv = nn.Conv2d(1, 4, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([1.0, 0.0, 1.0, 1.0]).view(4, 1, 1, 1))
        conv.bias.copy_(torch.tensor([-0.9, 0.0, -0.9, -0.9]))
    model = nn.Sequential(conv, nn.ReLU())
    diag = Diagnostics({"M": model}, None, None, {"every": 2, "record_every": 1})
    with diag:
        for step in range(2):
            model(torch.rand(4, 1, 5, 5))
            diag.step(step)
    assert diag.history["act/M/1/dead"][-1][1] == 0.25
    assert diag.history["act/M/0/dead"][-1][1] == 0.25  # the conv's channel 1 is exactly 0 too


def test_edges_frozen_at_first_write(tmp_path):
    lin = nn.Linear(4, 4)
    model = nn.Sequential(lin)
    diag = Diagnostics({"M": model}, None, None, {"every": 1, "record_every": 1})
    with diag:
        model(torch.randn(32, 4))
        diag.step(0)
        e0 = diag.act.edges(0).copy()
        with torch.no_grad():
            lin.weight.mul_(100.0)  # activations grow 100x
        model(torch.randn(32, 4))
        diag.step(1)
    np.testing.assert_array_equal(diag.act.edges(0), e0)
    snap = diag.snapshot_arrays()
    np.testing.assert_array_equal(snap["act_edges/M/0"], e0)
    assert snap["act_hist/M/0"].sum() == 2 * 32 * 4


@pytest.mark.slow
def test_dcgan_on_real_fields_uses_ten_bins_and_reads_alive(tmp_path):
    # Real inputs: HadCM3 air temperature fields (iris-sample-data), 32 x 32 crops in [-1, 1].
    from experiments.data.climate import load_climate

    data = load_climate(
        ["iris_sample_data:A1B_north_america.nc"], "air_temperature", val_every=10
    ).train[:, :32, :32]
    torch.manual_seed(0)
    G, D = dcgan(nz=16, ngf=16, ndf=16, size=32)
    og = torch.optim.Adam(G.parameters(), 2e-4, betas=(0.5, 0.999))
    od = torch.optim.Adam(D.parameters(), 2e-4, betas=(0.5, 0.999))
    bce = nn.BCELoss()
    cfg = {"every": 2, "record_every": 1}
    with Diagnostics({"G": G, "D": D}, {"G": og, "D": od}, Writer(tmp_path), cfg) as diag:
        for step in range(6):
            real = data[torch.randint(0, len(data), (16,))].unsqueeze(1)
            fake = G(torch.randn(16, 16, 1, 1))
            od.zero_grad()
            loss_d = bce(D(real).view(-1), torch.ones(16)) + bce(
                D(fake.detach()).view(-1), torch.zeros(16)
            )
            loss_d.backward()
            od.step()
            og.zero_grad()
            bce(D(fake).view(-1), torch.ones(16)).backward()
            og.step()
            diag.step(step)
    ea = events(tmp_path)
    occ = occupied(ea, "act/")
    assert len(occ) == 8 + 8  # G: 4 convT + 3 ReLU + Tanh; D: 4 conv + 3 LeakyReLU + Sigmoid
    assert min(occ.values()) >= MIN_BINS, occ
    dead = {t: ea.Scalars(t)[-1].value for t in ea.Tags()["scalars"] if t.endswith("/dead")}
    assert max(dead.values()) < 0.2, dead  # LeakyReLU never, Tanh never; ReLU: units


@pytest.mark.slow
def test_project_gan_uses_ten_bins(cache_dir, tmp_path):
    from experiments.train_gan import train

    cfg = gan_cfg(cache_dir, "train.steps=4", "diagnostics.every=2", "diagnostics.record_every=1")
    train(cfg, tmp_path)
    ea = events(tmp_path)
    occ = occupied(ea, "act/")
    assert any(t.startswith("act/G/") for t in occ) and any(t.startswith("act/D/") for t in occ)
    assert min(occ.values()) >= MIN_BINS, occ
    assert ea.Images(next(iter(occ)).removesuffix("/hist") + "/colorful")
    dead = {t: ea.Scalars(t)[-1].value for t in ea.Tags()["scalars"] if t.endswith("/dead")}
    g_dead = {t: v for t, v in dead.items() if t.startswith("act/G/")}
    assert g_dead and max(g_dead.values()) < 0.5, g_dead


@pytest.mark.slow
def test_project_autoencoder_uses_ten_bins(tmp_path):
    from experiments.train_autoencoder import train
    from tests.test_train_autoencoder import SHORT, make_cfg

    train(make_cfg(["+exp=small", *SHORT]), tmp_path)
    ea = events(tmp_path)
    occ = occupied(ea, "act/")
    assert len(occ) >= 4  # encoder, act, decoder, out_act
    assert min(occ.values()) >= MIN_BINS, occ
