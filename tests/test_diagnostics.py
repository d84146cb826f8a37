"""Diagnostics on plain training loops: hand-derived records, read back from the event file."""

import io
import math
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

from diagnostics import Diagnostics, Writer
from diagnostics.render import AX_LEFT, AX_RIGHT, AX_TITLE, AXIS_RGB, colormap_lut

KEEP_ALL = {"scalars": 0, "histograms": 0, "images": 0, "tensors": 0, "compressedHistograms": 0}


def read(run_dir):
    ea = EventAccumulator(str(run_dir), size_guidance=KEEP_ALL)
    ea.Reload()
    return ea


def toy_gan(seed=0):
    torch.manual_seed(seed)
    G = nn.Sequential(nn.Linear(4, 8), nn.LeakyReLU(0.2), nn.Linear(8, 3))
    D = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 1))
    return G, D, torch.optim.SGD(G.parameters(), lr=0.05), torch.optim.SGD(D.parameters(), lr=0.05)


def train(G, D, opt_g, opt_d, diag=None, steps=6, n_critic=2, seed=0, raise_at=None):
    g = torch.Generator().manual_seed(seed)
    for step in range(steps):
        if step == raise_at:
            raise RuntimeError("training blew up")
        for _ in range(n_critic):
            z, real = torch.randn(16, 4, generator=g), torch.randn(16, 3, generator=g)
            with torch.no_grad():
                fake = G(z)
            loss_d = D(fake).mean() - D(real).mean()
            opt_d.zero_grad()
            loss_d.backward()
            opt_d.step()
        loss_g = -D(G(torch.randn(16, 4, generator=g))).mean()
        opt_g.zero_grad()
        loss_g.backward()
        opt_g.step()
        if diag is not None:
            diag.step(step)


def no_hooks(*modules_and_opts):
    for x in modules_and_opts:
        if isinstance(x, nn.Module):
            assert all(len(m._forward_hooks) == 0 for m in x.modules())
        else:
            assert len(x._optimizer_step_pre_hooks) == 0


CFG = {"every": 2, "record_every": 1}
# fast.ai's course grid (40 bins of |a| on [0, 10], dead = lowest bin) for tests that check bins by
# hand; the default per-layer bins and dead units are tested in test_default_bins.py
FASTAI_GRID = {"transform": "abs", "lo": 0.0, "hi": 10.0, "n_bins": 40, "dead_bins": 1}


def test_weights_grads_and_mode_unchanged(tmp_path):
    ref = toy_gan()
    train(*ref)
    G, D, og, od = toy_gan()
    D[1].eval()  # a submodule left in eval mode stays so
    with Diagnostics({"G": G, "D": D}, {"G": og, "D": od}, Writer(tmp_path), CFG) as diag:
        train(G, D, og, od, diag)
    for a, b in zip(
        [*ref[0].parameters(), *ref[1].parameters()],
        [*G.parameters(), *D.parameters()],
        strict=True,
    ):
        assert torch.equal(a, b) and torch.equal(a.grad, b.grad)
    assert G.training and D.training and not D[1].training
    assert "act/D/1/mean" not in diag.history  # eval-mode layers are not recorded
    no_hooks(G, D, og, od)


def test_hooks_gone_after_exception(tmp_path):
    G, D, og, od = toy_gan()
    diag = Diagnostics({"G": G, "D": D}, {"G": og, "D": od}, Writer(tmp_path), CFG)
    with pytest.raises(RuntimeError, match="blew up"):
        with diag:
            assert len(G[0]._forward_hooks) == 1 and len(od._optimizer_step_pre_hooks) == 1
            train(G, D, og, od, diag, raise_at=3)
    no_hooks(G, D, og, od)


def test_same_seed_same_records(tmp_path):
    runs = []
    for name in ("a", "b"):
        G, D, og, od = toy_gan()
        with Diagnostics(
            {"G": G, "D": D}, {"G": og, "D": od}, Writer(tmp_path / name), CFG
        ) as diag:
            train(G, D, og, od, diag)
        ea = read(tmp_path / name)
        hists = {
            t: [(e.step, list(e.histogram_value.bucket)) for e in ea.Histograms(t)]
            for t in ea.Tags()["histograms"]
        }
        runs.append((dict(diag.history), hists))
    assert runs[0][0] == runs[1][0] and runs[0][1] == runs[1][1]
    assert len(runs[0][1]) == 6 + 8 + 8  # act layers (3 + 3), weight and grad tensors (4 + 4 each)
    assert [s for s, _ in runs[0][0]["act/G/0/mean"]] == [0, 2, 4, 5]  # 5: the final flush


def test_known_values_read_back(tmp_path):
    # Linear(1, 1) with weight 1, bias 0 passes [-5, .1, .1, 9] through; lr 0 keeps it so.
    lin = nn.Linear(1, 1)
    with torch.no_grad():
        lin.weight.fill_(1.0)
        lin.bias.zero_()
    model = nn.Sequential(lin)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    x = torch.tensor([[-5.0], [0.1], [0.1], [9.0]])
    cfg = {"every": 1, "record_every": 1, "activations": FASTAI_GRID}
    with Diagnostics({"M": model}, {"M": opt}, Writer(tmp_path), cfg) as diag:
        opt.zero_grad()
        model(x).sum().backward()  # d/dw = sum(x) = 4.2, d/db = 4
        opt.step()
        diag.step(0)
    ea = read(tmp_path)
    sc = {t: ea.Scalars(t)[0].value for t in ea.Tags()["scalars"]}
    # mean 1.05; deviations -6.05, -.95, -.95, 7.95 -> sum of squares 101.61, /3 -> std 5.8198
    assert sc["act/M/0/mean"] == pytest.approx(1.05, rel=1e-6)
    assert sc["act/M/0/std"] == pytest.approx(math.sqrt(101.61 / 3), rel=1e-6)
    assert sc["act/M/0/dead"] == pytest.approx(0.5)  # |.1| twice in [0, .25) of 4 values
    # zero-only NaN/Inf counts stay in the history but are not written as charts
    assert "act/M/0/nan_count" not in sc and "act/M/0/inf_count" not in sc
    assert diag.history["act/M/0/nan_count"] == [(0, 0.0)]
    assert diag.history["act/M/0/inf_count"] == [(0, 0.0)]
    assert sc["weights/M/0.weight/norm"] == pytest.approx(1.0)
    assert sc["grad/M/0.weight/norm"] == pytest.approx(4.2, rel=1e-6)
    assert sc["grad/M/0.bias/norm"] == pytest.approx(4.0)
    assert sc["grad/M/norm"] == pytest.approx(math.hypot(4.2, 4.0), rel=1e-6)
    (h,) = ea.Histograms("act/M/0/hist")
    counts = dict(zip(h.histogram_value.bucket_limit, h.histogram_value.bucket, strict=True))
    # |a| bins of 0.25: .1 -> [0, .25), 5 -> [5, 5.25), 9 -> [9, 9.25); each stored at its upper limit.
    assert {k: v for k, v in counts.items() if v} == {0.25: 2.0, 5.25: 1.0, 9.25: 1.0}
    (g,) = ea.Histograms("grad/M/0.weight/hist")
    # log10(4.2) = 0.623 lies in [0.5, 0.75) of the 0.25-decade bins from -12.
    assert {
        k: v
        for k, v in zip(g.histogram_value.bucket_limit, g.histogram_value.bucket, strict=True)
        if v
    } == {0.75: 1.0}
    (w,) = ea.Histograms("weights/M/0.weight/hist")
    assert w.histogram_value.num == 1
    (t,) = ea.Tensors("diagnostics/cost/text_summary")
    assert b"act" in t.tensor_proto.string_val[0] and b"MB written" in t.tensor_proto.string_val[0]
    assert "record s" in diag.summary()


def test_relu_of_negatives_is_dead_and_colorful_image(tmp_path):
    model = nn.Sequential(nn.ReLU())
    cfg = {"every": 1, "record_every": 1, "image_every": 1, "activations": FASTAI_GRID}
    with Diagnostics({"M": model}, None, Writer(tmp_path), cfg) as diag:
        for step in range(3):
            model(-torch.rand(8, 5) - 0.1)
            diag.step(step)
    assert diag.history["act/M/0/dead"] == [(0, 1.0), (1, 1.0), (2, 1.0)]
    ea = read(tmp_path)
    assert [e.value for e in ea.Scalars("act/M/0/dead")] == [1.0, 1.0, 1.0]
    ims = ea.Images("act/M/0/colorful")
    assert [e.step for e in ims] == [0, 1, 2]
    img = np.asarray(Image.open(io.BytesIO(ims[-1].encoded_image_string)).convert("RGB"))
    # plot area at (AX_TITLE, AX_LEFT): 42 rows (under, 40 bins, over) x 4 px (168 // 42) high,
    # 3 writes x 106 px (320 // 3) wide. All values sit in bin 0, the second row from the bottom:
    # the brightest colour there, the darkest everywhere else.
    lut = colormap_lut("viridis")
    plot = img[AX_TITLE : AX_TITLE + 168, AX_LEFT : AX_LEFT + 318]
    np.testing.assert_array_equal(plot[-5], np.tile(lut[-1], (318, 1)))
    np.testing.assert_array_equal(plot[0], np.tile(lut[0], (318, 1)))
    np.testing.assert_array_equal(plot[-1], np.tile(lut[0], (318, 1)))
    assert (img[AX_TITLE : AX_TITLE + 168, AX_LEFT - 1] == AXIS_RGB).all()  # the y axis
    chart = Image.open(io.BytesIO(ea.Images("act/M/0/dead_chart")[-1].encoded_image_string))
    chart = np.asarray(chart.convert("RGB"))
    # dead 1 at every write: the 64 px plot area is red from top to bottom
    area = chart[AX_TITLE : AX_TITLE + 64, AX_LEFT + 1 : AX_LEFT + 318]
    assert (area[0] == (120, 24, 24)).all() and (area[1:] == (200, 40, 40)).all()  # edge, fill


def test_nan_counts_written_from_their_first_non_zero_value(tmp_path):
    model = nn.Sequential(nn.ReLU())  # ReLU(NaN) is NaN
    with Diagnostics({"M": model}, None, Writer(tmp_path), {"every": 1, "record_every": 1}) as diag:
        for step, bad in enumerate([0, 0, 2, 0]):
            x = torch.ones(4, 3)
            x[0, :bad] = float("nan")
            model(x)
            diag.step(step)
    ea = read(tmp_path)
    assert [(e.step, e.value) for e in ea.Scalars("act/M/0/nan_count")] == [(2, 2.0), (3, 0.0)]
    assert "act/M/0/inf_count" not in ea.Tags()["scalars"]
    assert [v for _, v in diag.history["act/M/0/nan_count"]] == [0, 0, 2, 0]


def test_gan_gradients_seen_as_applied():
    # D(x) = d x, G(z) = g z with d = 2, g = 3 and lr 0. Critic steps use losses 3 d and 4 d,
    # so D's applied gradients are 3 and 4 (RMS sqrt(12.5)). The G step's backward of D(G(1))
    # gives G the gradient d = 2 and adds g = 3 to D's .grad, which no optimizer applies.
    G, D = nn.Linear(1, 1, bias=False), nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        G.weight.fill_(3.0)
        D.weight.fill_(2.0)
    og, od = torch.optim.SGD(G.parameters(), lr=0.0), torch.optim.SGD(D.parameters(), lr=0.0)
    one = torch.ones(1, 1)
    cfg = {"every": 1, "record_every": 1, "activations": {"enabled": False}}
    with Diagnostics({"G": G, "D": D}, {"G": og, "D": od}, None, cfg) as diag:
        for c in (3.0, 4.0):
            od.zero_grad()
            (c * D(one)).sum().backward()
            od.step()
        og.zero_grad()
        D(G(one)).sum().backward()
        og.step()
        assert D.weight.grad.item() == 4.0 + 3.0  # what a read of .grad at step() would see
        diag.step(0)
    assert diag.history["grad/D/norm"] == [(0, pytest.approx(math.sqrt(12.5)))]
    assert diag.history["grad/G/norm"] == [(0, 2.0)]
    assert diag.history["grad/D/weight/norm"] == [(0, pytest.approx(math.sqrt(12.5)))]


def test_model_without_optimizer_reads_grad_at_step():
    m = nn.Linear(1, 1, bias=False)
    cfg = {"every": 1, "record_every": 1, "activations": {"enabled": False}}
    with Diagnostics({"M": m}, None, None, cfg) as diag:
        m.zero_grad()
        (5.0 * m(torch.ones(1, 1))).sum().backward()
        diag.step(0)
    assert diag.history["grad/M/norm"] == [(0, 5.0)]


def test_sampling_every_and_record_every():
    # One forward of 3 values per step; record_every 2, every 4: the write at 0 holds step 0,
    # the write at 4 holds steps 2 and 4 (6 values), the final flush at 7 holds step 6.
    m = nn.Sequential(nn.Linear(1, 1))
    diag = Diagnostics({"M": m}, None, None, {"every": 4, "record_every": 2})
    totals = []
    with diag:
        for step in range(8):
            m(torch.ones(3, 1))
            diag.step(step)
            if step % 4 == 0:
                totals.append(int(diag.snapshot_arrays()["act_hist/M/0"].sum()))
    totals.append(int(diag.snapshot_arrays()["act_hist/M/0"].sum()))
    assert totals == [3, 6, 3]
    assert [s for s, _ in diag.history["act/M/0/mean"]] == [0, 4, 7]


def test_defaults_record_the_write_step_and_draw_images_every_4th_write_and_at_the_end(tmp_path):
    # Defaults: record_every = every (the write step's own forwards), image_every = 4 x every;
    # with total_steps the last step is recorded and the last write draws its images.
    m = nn.Sequential(nn.Linear(1, 4), nn.ReLU())
    diag = Diagnostics({"M": m}, None, Writer(tmp_path), {"every": 2}, total_steps=11)
    assert (diag.record_every, diag.image_every) == (2, 8)
    totals = []
    with diag:
        for step in range(1, 12):
            m(torch.ones(3, 1))
            if diag.step(step):
                totals.append((step, int(diag.snapshot_arrays()["act_hist/M/1"].sum())))
    # 3 forwards x 4 units per recorded step: one recorded step per write (odd steps unrecorded)
    assert totals == [(2, 12), (4, 12), (6, 12), (8, 12), (10, 12), (11, 12)]
    acc = EventAccumulator(str(tmp_path), size_guidance={"images": 0})
    acc.Reload()
    assert [e.step for e in acc.Images("act/M/1/colorful")] == [8, 11]
    # without total_steps, a run that ends on a write without images still gets them at close
    other = tmp_path / "b"
    with Diagnostics({"M": m}, None, Writer(other), {"every": 2}) as diag:
        for step in range(1, 7):
            m(torch.ones(3, 1))
            diag.step(step)
    acc = EventAccumulator(str(other), size_guidance={"images": 0})
    acc.Reload()
    assert [e.step for e in acc.Images("act/M/1/colorful")] == [6]
    assert [e.step for e in acc.Images("act/M/1/dead_chart")] == [6]


def test_snapshot_arrays_and_meta():
    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU())
    cfg = {"every": 1, "record_every": 1, "activations": FASTAI_GRID}
    diag = Diagnostics({"M": model}, None, None, cfg)
    with diag:
        with torch.no_grad():
            model[0].bias.fill_(-100.0)  # every ReLU input negative
        model(torch.rand(4, 2))
        diag.step(0)
    snap = diag.snapshot_arrays()
    assert snap["act_hist/M/1"].dtype == np.int64 and snap["act_hist/M/1"].shape == (42,)
    assert snap["act_hist/M/1"][1] == 12 and float(snap["act_dead/M/1"]) == 1.0
    assert diag.snapshot_arrays()["act_hist/M/1"].sum() == 0  # reset by the previous call
    meta = diag.snapshot_meta()
    assert meta["layers"] == {"M": ["0", "1"]} and len(meta["act_edges"]) == 41


def test_off_config_does_nothing():
    G, D, og, od = toy_gan()
    with Diagnostics({"G": G, "D": D}, {"G": og, "D": od}, None, {"enabled": False}) as diag:
        no_hooks(G, D, og, od)
        train(G, D, og, od, diag, steps=2)
    assert diag.history == {}


def test_every_not_multiple_of_record_every_warns():
    with pytest.warns(UserWarning, match="recording every 5"):
        diag = Diagnostics({"M": nn.Linear(1, 1)}, None, None, {"every": 5, "record_every": 10})
    assert diag.record_every == 5


def test_omegaconf_config_accepted():
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"every": 3, "record_every": 1, "activations": {"types": ["Linear"]}})
    diag = Diagnostics({"M": nn.Sequential(nn.Linear(1, 1), nn.ReLU())}, None, None, cfg)
    assert diag.every == 3 and [n for _, n, _ in diag.act.layers] == ["0"]


def test_no_host_sync_between_writes(monkeypatch, tmp_path):
    """Host transfers from diagnostics code happen only inside the writing step() calls."""
    calls = []

    def spy(name, orig):
        def wrapper(self, *a, **k):
            f = sys._getframe(1).f_code.co_filename
            if "/diagnostics/" in f and not f.endswith("writer.py"):
                is_host = name != "to" or any(
                    (isinstance(v, str) and v.startswith("cpu"))
                    or (isinstance(v, torch.device) and v.type == "cpu")
                    for v in (*a, *k.values())
                )
                if is_host:
                    calls.append(name)
            return orig(self, *a, **k)

        return wrapper

    for name in ("item", "cpu", "numpy", "tolist", "to", "__float__", "__int__", "__bool__"):
        monkeypatch.setattr(torch.Tensor, name, spy(name, getattr(torch.Tensor, name)))
    G, D, og, od = toy_gan()
    per_step = []
    with Diagnostics(
        {"G": G, "D": D}, {"G": og, "D": od}, Writer(tmp_path), {"every": 4, "record_every": 1}
    ) as diag:
        g = torch.Generator().manual_seed(0)
        for step in range(6):
            del calls[:]
            for _ in range(2):
                loss_d = D(G(torch.randn(8, 4, generator=g)).detach()).mean()
                od.zero_grad()
                loss_d.backward()
                od.step()
            loss_g = -D(G(torch.randn(8, 4, generator=g))).mean()
            og.zero_grad()
            loss_g.backward()
            og.step()
            in_training = list(calls)
            diag.step(step)
            per_step.append((in_training, list(calls[len(in_training) :])))
    assert all(t == [] for t, _ in per_step)  # hooks and optimizer hooks: no host transfer
    # Writes at 0 and 4: one copy of the whole flat buffer each, plus at the first write the
    # weight ranges (max |w|) that fix the weight histogram edges for the run.
    assert [w.count("to") for _, w in per_step] == [2, 0, 0, 0, 1, 0]
    assert all(w == [] for s, (_, w) in enumerate(per_step) if s % 4)


def test_long_runs_keep_images_bounded():
    from diagnostics.activations import colorful_image, dead_chart

    # 2000 writes merge in groups of 4 into 500 columns of 1 px; counts add, dead fractions average.
    cols = np.zeros((42, 2000))
    cols[1] = 1.0
    img = colorful_image(cols)
    plot = img[AX_TITLE : AX_TITLE + 168, AX_LEFT:-AX_RIGHT]
    assert plot.shape == (42 * 4, 500, 3)
    np.testing.assert_array_equal(plot[-5, 0], colormap_lut("viridis")[-1])
    chart = dead_chart(np.full(2000, 0.5))
    chart = chart[AX_TITLE : AX_TITLE + 64, AX_LEFT:-AX_RIGHT]
    assert chart.shape == (64, 500, 3)
    assert (chart[1:32] != (200, 40, 40)).any(axis=2).all() and (chart[33:] == (200, 40, 40)).all()
    assert (chart[32] == (120, 24, 24)).all()  # the darker top edge of the 50 % area


def test_loops_numbered_from_one_record_the_same_grid():
    # No start_step: a loop from 1 records steps 2 and 4 (record_every 2), not step 1 as well.
    m = nn.Sequential(nn.Linear(1, 1))
    diag = Diagnostics({"M": m}, None, None, {"every": 4, "record_every": 2})
    with diag:
        for step in range(1, 5):
            m(torch.ones(3, 1))
            diag.step(step)
    assert [s for s, _ in diag.history["act/M/0/mean"]] == [4]
    # 3 values each of steps 2 and 4; step 1 (off the grid) was recorded and dropped: not 9.
    assert int(diag.snapshot_arrays()["act_hist/M/0"].sum()) == 6


def test_stream_resumes_mid_interval_with_the_same_means_and_history():
    """Reported scalars: the interval mean over a checkpoint equals the straight run's."""

    def run(steps, state=None):
        d = Diagnostics(
            {"m": nn.Linear(1, 1)}, cfg={"enabled": False, "every": 4, "record_every": 4}
        )
        if state is not None:
            d.load_state_dict(state)
        for step in steps:
            d.report("loss/x", torch.tensor(float(step)))  # 1, 2, 3, ...
            d.report("loss/w", 1.0, n=step)  # a weighted mean: n = step
            d.step(step)
        return d

    straight = run(range(1, 9))
    half = run(range(1, 7))
    buf = io.BytesIO()
    torch.save(half.state_dict(), buf)  # a checkpoint loads with weights_only=True
    state = torch.load(io.BytesIO(buf.getvalue()), weights_only=True)
    resumed = run(range(7, 9), state)
    assert dict(straight.history) == dict(resumed.history)
    assert straight.history["loss/x"] == [(4, 2.5), (8, 6.5)]  # (1+2+3+4)/4, (5+6+7+8)/4
    assert straight.history["loss/w"] == [(4, 1.0), (8, 1.0)]
    assert resumed.last_step == 8
