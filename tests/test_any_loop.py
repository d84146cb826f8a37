"""The library in anyone's loop: argument checks, layer selection by type, RNN/attention outputs."""

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn
from torch.nn.utils import parametrizations
from torch.utils.tensorboard import SummaryWriter

from diagnostics import Diagnostics
from diagnostics.hooks import select_modules

KEEP_ALL = {"scalars": 0, "histograms": 0, "images": 0, "tensors": 0, "compressedHistograms": 0}
CFG = {"every": 2, "record_every": 1}


def read(run_dir):
    ea = EventAccumulator(str(run_dir), size_guidance=KEEP_ALL)
    ea.Reload()
    return ea


def test_unknown_config_key_lists_valid_ones():
    m = nn.Linear(2, 2)
    with pytest.raises(ValueError, match=r"unknown config key\(s\) \['evry'\].*'every'"):
        Diagnostics({"m": m}, cfg={"evry": 5})
    with pytest.raises(ValueError, match=r"diagnostics.activations.*\['nbins'\].*'n_bins'"):
        Diagnostics({"m": m}, cfg={"activations": {"nbins": 5}})


def test_default_every_matches_default_yaml():
    import yaml

    with open("conf/diagnostics/default.yaml") as f:
        every = yaml.safe_load(f)["every"]
    assert Diagnostics({"m": nn.Linear(2, 2)}).every == every == 50


def test_bad_arguments_say_what_was_expected():
    m = nn.Linear(2, 2)
    with pytest.raises(TypeError, match="models: expected an nn.Module or a non-empty mapping"):
        Diagnostics([m])
    with pytest.raises(TypeError, match="optimizers: expected torch.optim.Optimizer for '0'"):
        Diagnostics(m, optimizers=["sgd"])
    with pytest.raises(TypeError, match="writer: expected a diagnostics.Writer, a torch Summ"):
        Diagnostics(m, writer=3)


def _fit(model, opts, diag, steps=4):
    g = torch.Generator().manual_seed(0)
    for step in range(steps):
        x = torch.randn(8, 2, generator=g)
        loss = model(x).pow(2).mean()
        for o in opts:
            o.zero_grad()
        loss.backward()
        for o in opts:
            o.step()
        diag.step(step)


@pytest.mark.parametrize("kind", ["summary_writer", "path"])
def test_bare_module_optimizer_list_and_writer_forms(tmp_path, kind):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 1))
    opts = [
        torch.optim.SGD(model[0].parameters(), lr=0.1),
        torch.optim.SGD(model[2].parameters(), lr=0.1),
    ]
    sw = SummaryWriter(str(tmp_path)) if kind == "summary_writer" else None
    with Diagnostics(model, opts, sw if sw is not None else tmp_path, CFG) as diag:
        _fit(model, opts, diag)
    if sw is not None:
        sw.add_scalar("user/own", 1.0, 0)  # the user's writer still works after the block
        sw.close()
    ea = read(tmp_path)
    tags = ea.Tags()["scalars"]
    assert "act/model/1/dead" in tags
    assert [e.step for e in ea.Scalars("act/model/0/mean")] == [
        0,
        2,
        3,
    ]  # 3: the end-of-block write
    if sw is not None:
        assert "user/own" in tags


class MyLinear(nn.Linear):
    pass


def test_selection_by_type_includes_subclasses_and_parametrised():
    model = nn.Sequential(
        MyLinear(3, 3),
        parametrizations.spectral_norm(nn.Conv1d(1, 1, 3)),
        parametrizations.weight_norm(nn.Linear(3, 3)),
        nn.LSTM(3, 4),
        nn.GRU(3, 4),
        nn.MultiheadAttention(4, 2),
        nn.TransformerEncoderLayer(4, 2, dim_feedforward=8),
        nn.BatchNorm1d(3),
    )
    names = [n for n, _ in select_modules(model)]
    for want in ["0", "1", "2", "3", "4", "5", "6.self_attn", "6.linear1", "6.linear2"]:
        assert want in names, (want, names)
    assert "7" not in names
    # a class name also picks subclasses
    assert [n for n, _ in select_modules(model, types=["Linear"])][:1] == ["0"]


class Seq(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(3, 5, batch_first=True)
        self.attn = nn.MultiheadAttention(5, 1, batch_first=True)
        self.enc = nn.TransformerEncoderLayer(
            5, 1, dim_feedforward=8, batch_first=True, dropout=0.0
        )
        self.unused = nn.Linear(5, 5)

    def forward(self, x, lengths=None):
        if lengths is not None:
            packed = nn.utils.rnn.pack_padded_sequence(
                x, lengths, batch_first=True, enforce_sorted=False
            )
            out, _ = self.lstm(packed)
            h, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True)
        else:
            h, _ = self.lstm(x)
        a, _ = self.attn(h, h, h)
        return self.enc(a)


def test_lstm_packed_and_attention_counts_match_independent_histogram(tmp_path):
    torch.manual_seed(0)
    model = Seq()
    edges = [0.0, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6]
    cfg = {"every": 1, "record_every": 1, "activations": {"edges": edges}}
    x = torch.randn(3, 6, 3)
    lengths = torch.tensor([6, 2, 4])
    seen = {}

    def grab(name):
        def h(m, i, o):
            t = o[0].data if isinstance(o[0], nn.utils.rnn.PackedSequence) else o[0]
            seen[name] = t.detach().clone()

        return h

    handles = [
        model.lstm.register_forward_hook(grab("lstm")),
        model.enc.self_attn.register_forward_hook(grab("sa")),
    ]
    with pytest.warns(UserWarning, match=r"never ran.*m/unused"):
        with Diagnostics({"m": model}, writer=tmp_path, cfg=cfg) as diag:
            model(x, lengths).sum().backward()
            diag.step(0)
    for h in handles:
        h.remove()
    counts = diag.snapshot_arrays()
    ea = read(tmp_path)
    for layer, key in [("lstm", "lstm"), ("enc.self_attn", "sa")]:
        assert ea.Histograms(f"act/m/{layer}/hist")
        v = seen[key].abs().numpy().ravel()
        c = counts[f"act_hist/m/{layer}"]  # underflow, the 6 bins, overflow
        inside = v[v < edges[-1]]
        np.testing.assert_array_equal(c[1:-1], np.histogram(inside, bins=edges)[0])
        assert c[-1] == (v >= edges[-1]).sum() and c[0] == 0
    # packed: only the 12 real time steps x 5 units, not the padded 18 x 5
    assert seen["lstm"].shape == (12, 5)
    assert ea.Scalars("act/m/attn/mean")
    assert all(len(m._forward_hooks) == 0 for m in model.modules())


def test_lbfgs_closure_gradients_labelled_with_their_step():
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    x, y = torch.randn(32, 3), torch.randn(32, 1)
    opt = torch.optim.LBFGS(model.parameters(), lr=0.5, max_iter=4)
    want = {}
    cfg = {"every": 1, "record_every": 1, "activations": {"enabled": False}}
    with Diagnostics({"m": model}, {"m": opt}, cfg=cfg) as diag:
        for step in range(4):
            # independent: the gradient norm at this step's weights, before the step moves them
            ref = nn.Linear(3, 1)
            ref.load_state_dict(model.state_dict())
            nn.functional.mse_loss(ref(x), y).backward()
            want[step] = ref.weight.grad.norm().item()

            def closure():
                opt.zero_grad()
                loss = nn.functional.mse_loss(model(x), y)
                loss.backward()
                return loss

            opt.step(closure)
            diag.step(step)
    got = dict(diag.history["grad/m/weight/norm"])
    assert sorted(got) == [0, 1, 2, 3]  # the last step's gradient is recorded too
    for step in range(4):
        assert got[step] == pytest.approx(want[step], rel=1e-6), step
    assert len(set(round(v, 6) for v in want.values())) == 4  # the steps really differ
    assert len(opt._optimizer_step_pre_hooks) == 0


def test_colorful_history_bounded_and_exact():
    from diagnostics.activations import ColumnHistory

    rng = np.random.default_rng(0)
    cols = rng.integers(0, 100, size=(5, 1500)).astype(float)
    h = ColumnHistory(5, max_cols=512)
    for k in range(1500):
        h.add(cols[:, k], step=10 * k)
    # 512 writes fill it, halve (group 2); 1024 writes fill it again, halve (group 4); 476 more
    assert h.group == 4 and h.n == 256 + 119
    np.testing.assert_array_equal(h.array(), np.add.reduceat(cols, np.arange(0, 1500, 4), axis=1))
    np.testing.assert_array_equal(h.steps, 10 * np.arange(0, 1500, 4))
    assert h._data.shape == (5, 512)  # memory does not grow with the run
    np.testing.assert_allclose(h.mean()[:, 0], cols[:, :4].mean(1))
