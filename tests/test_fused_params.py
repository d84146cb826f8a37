"""Weights and gradients of many tensors binned at once: per-tensor counts equal numpy's."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

from diagnostics import Diagnostics, Writer
from diagnostics.stats import HistSpec, Segments, accumulate, segment_stats, summarize

KEEP_ALL = {"scalars": 0, "histograms": 0, "images": 0, "tensors": 0, "compressedHistograms": 0}


class Deep(nn.Module):
    """A deep stack of small layers: 2 tensors each, plus a frozen layer and an unused one."""

    def __init__(self, n_layers: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            *[m for _ in range(n_layers) for m in (nn.Linear(5, 5), nn.Tanh())]
        )
        self.frozen = nn.Linear(5, 5).requires_grad_(False)  # no gradient: not recorded
        self.unused = nn.Linear(5, 5)  # in the optimizer, never gets a .grad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.frozen(self.body(x))


def many_tensors(n_layers: int) -> nn.Module:
    torch.manual_seed(0)
    return Deep(n_layers)


def counts_of(ea, tag: str, n_bins: int) -> np.ndarray:
    """(n_bins + 2,) underflow, bins, overflow of a histogram read back from the event file."""
    b = list(ea.Histograms(tag)[0].histogram_value.bucket)
    return np.asarray(b[1:] if len(b) == n_bins + 3 else b)  # a leading 0 bucket: underflow > 0


def numpy_counts(v: np.ndarray, edges: np.ndarray) -> np.ndarray:
    inside = v[(v >= edges[0]) & (v < edges[-1])]
    return np.concatenate(
        [[(v < edges[0]).sum()], np.histogram(inside, bins=edges)[0], [(v >= edges[-1]).sum()]]
    )


def test_many_tensors_counts_equal_numpy_histogram_per_tensor(tmp_path):
    model = many_tensors(30)  # 60 trained tensors
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    seen: dict[str, list[np.ndarray]] = {}

    def grab(o, args, kwargs):  # the gradients as applied, copied independently
        for n, p in model.named_parameters():
            if p.grad is not None:
                seen.setdefault(n, []).append(p.grad.detach().numpy().copy())

    opt.register_step_pre_hook(grab)
    cfg = {"every": 3, "record_every": 1, "activations": {"enabled": False}}
    g = torch.Generator().manual_seed(1)
    with Diagnostics({"M": model}, {"M": opt}, Writer(tmp_path), cfg) as diag:
        for step in range(1, 4):
            x = torch.randn(7, 5, generator=g)
            loss = model(x).pow(2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if step == 3:
                weights = {n: p.detach().numpy().copy() for n, p in model.named_parameters()}
            diag.step(step)
    assert len(seen) == 60 and all(len(v) == 3 for v in seen.values())
    ea = EventAccumulator(str(tmp_path), size_guidance=KEEP_ALL)
    ea.Reload()
    g_edges = np.linspace(-12.0, 2.0, 57)
    for name, grads in seen.items():
        v = np.log10(np.abs(np.concatenate([x.ravel() for x in grads])))  # float32 as binned
        got = counts_of(ea, f"grad/M/{name}/hist", 56)
        np.testing.assert_array_equal(got, numpy_counts(v, g_edges), err_msg=name)
        rms = np.sqrt(sum((x.astype(np.float64) ** 2).sum() for x in grads) / 3)
        assert ea.Scalars(f"grad/M/{name}/norm")[0].value == pytest.approx(rms, rel=1e-5)
    assert "grad/M/unused.weight/hist" not in ea.Tags()["histograms"]
    assert "grad/M/frozen.weight/hist" not in ea.Tags()["histograms"]
    for name, w in weights.items():
        if name.startswith("frozen"):
            continue
        r = 2.0 * float(np.abs(w).max())  # range auto: 2 x max|w| at the first write
        got = counts_of(ea, f"weights/M/{name}/hist", 40)
        np.testing.assert_array_equal(
            got, numpy_counts(w.ravel(), np.linspace(-r, r, 41)), err_msg=name
        )
        norm = np.sqrt((w.astype(np.float64) ** 2).sum())
        assert ea.Scalars(f"weights/M/{name}/norm")[0].value == pytest.approx(norm, rel=1e-5)


def test_segment_rows_equal_one_tensor_at_a_time():
    g = torch.Generator().manual_seed(3)
    ts = [torch.randn(n, generator=g) * s for n, s in [(7, 1e-3), (1, 5.0), (300, 1.0), (20, 1e4)]]
    ts[2][5], ts[2][9], ts[3][0] = float("nan"), float("inf"), 0.0
    for spec in [HistSpec(-12.0, 2.0, 56, "log10abs"), HistSpec(0.0, 3.0, 6, "abs")]:
        rows = segment_stats(ts, spec, Segments([t.numel() for t in ts], torch.device("cpu")))
        for t, row in zip(ts, rows, strict=True):
            one = torch.zeros(spec.size, dtype=torch.float64)
            accumulate(one, t, spec)
            a, b = summarize(row.numpy(), spec), summarize(one.numpy(), spec)
            np.testing.assert_array_equal(a["counts"], b["counts"])
            assert (a["n"], a["nan_count"], a["inf_count"]) == (
                b["n"],
                b["nan_count"],
                b["inf_count"],
            )
            np.testing.assert_allclose([a["mean"], a["std"]], [b["mean"], b["std"]], rtol=1e-5)
    assert summarize(rows[2].numpy(), spec)["nan_count"] == 1
    assert summarize(rows[2].numpy(), spec)["inf_count"] == 1


def _top_level_ops(fn) -> int:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return sum(
        1
        for e in prof.events()
        if e.name.startswith("aten::")
        and (e.cpu_parent is None or not e.cpu_parent.name.startswith("aten::"))
        and e.name not in VIEW_OPS
    )


# Metadata-only operators (no kernel, no memory traffic): per-tensor views made to concatenate.
VIEW_OPS = {"aten::reshape", "aten::view", "aten::_reshape_alias", "aten::detach", "aten::alias"}


def test_ops_per_write_do_not_grow_with_the_number_of_tensors():
    counts = []
    for n_layers in (2, 40):  # 4 and 80 trained tensors
        model = many_tensors(n_layers)
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        diag = Diagnostics({"M": model}, {"M": opt}, None, {"activations": {"enabled": False}})
        model(torch.randn(3, 5)).sum().backward()
        p = diag.params
        p.active = True
        p.measure_weights(lambda t: t.double().numpy())  # the first write fixes the ranges
        idx = list(range(len(p.params)))
        p._grads(idx)  # the first call caches the layout
        counts.append(
            (
                _top_level_ops(lambda p=p, idx=idx: p._grads(idx)),
                _top_level_ops(lambda p=p: p.measure_weights(None)),
            )
        )
    assert counts[0] == counts[1], counts
