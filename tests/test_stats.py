"""On-device statistics: histograms with under/overflow, moments, NaN/Inf, dead fraction."""

import math

import numpy as np
import pytest
import torch

from diagnostics.stats import (
    HistSpec,
    Segments,
    accumulate,
    histogram,
    make_spec,
    segment_stats,
    summarize,
)

METHODS = ["bincount", "histc", "bucketize", "sort"]


def stats_of(x, spec, **kw):
    buf = torch.zeros(spec.size, dtype=torch.float64)
    accumulate(buf, x, spec)
    return summarize(buf.numpy(), spec, **kw)


@pytest.mark.parametrize("method", METHODS)
def test_known_values_signed_edges(method):
    # Edges 0,1,2,3,4: -5 is below 0 (underflow), .1 and .1 fall in [0, 1), 9 is above 4 (overflow).
    spec = HistSpec(0.0, 4.0, 4, "none")
    x = torch.tensor([-5.0, 0.1, 0.1, 9.0])
    counts = histogram(x, spec, method).double().numpy()
    np.testing.assert_array_equal(counts, [1, 2, 0, 0, 0, 1])
    assert counts.sum() == x.numel()


@pytest.mark.parametrize("method", METHODS)
def test_known_values_abs_default_edges(method):
    # fast.ai's 40 bins of |a| on [0, 10] (width 0.25): |-5| -> bin 20, .1 -> bin 0, 9 -> bin 36;
    # in the counts array bin i sits at i + 1 after the underflow entry.
    spec = HistSpec()
    counts = histogram(torch.tensor([-5.0, 0.1, 0.1, 9.0]), spec, method).double().numpy()
    expect = np.zeros(42)
    expect[1], expect[21], expect[37] = 2, 1, 1
    np.testing.assert_array_equal(counts, expect)


@pytest.mark.parametrize("method", METHODS)
def test_edges_are_half_open(method):
    # [e_i, e_{i+1}): a value on an inner edge belongs to the bin above; the last edge is overflow.
    spec = HistSpec(0.0, 4.0, 4, "none")
    counts = histogram(torch.tensor([0.0, 1.0, 2.0, 4.0]), spec, method).double().numpy()
    np.testing.assert_array_equal(counts, [0, 1, 1, 1, 0, 1])


def test_methods_agree_on_random_data():
    x = torch.randn(10_000, generator=torch.Generator().manual_seed(0)) * 6
    spec = HistSpec(-10.0, 10.0, 40, "none")
    x[:3] = torch.tensor([float("nan"), float("inf"), -float("inf")])
    a, *rest = (histogram(x, spec, m).double() for m in METHODS)
    assert all(torch.equal(a, b) for b in rest)
    assert a.sum() == x.numel() - 1  # all but the NaN


def test_explicit_edges():
    spec = HistSpec(edges=[0.0, 0.5, 2.0, 10.0], transform="none")
    assert spec.n_bins == 3 and not spec.uniform
    counts = histogram(torch.tensor([-1.0, 0.2, 0.7, 1.9, 5.0, 10.0, 11.0]), spec).numpy()
    np.testing.assert_array_equal(counts, [1, 1, 2, 1, 2])


def test_nan_inf_and_empty_never_raise():
    # -inf underflow, 1.0 in [1, 2), +inf overflow, NaN in no bin but counted.
    spec = HistSpec(0.0, 2.0, 2, "none")
    s = stats_of(torch.tensor([float("nan"), float("inf"), -float("inf"), 1.0]), spec)
    np.testing.assert_array_equal(s["counts"], [1, 0, 1, 1])
    assert s["n"] == 4 and s["nan_count"] == 1 and s["inf_count"] == 2
    assert math.isnan(s["mean"])
    empty = stats_of(torch.empty(0, 3), spec)
    assert empty["n"] == 0 and empty["counts"].sum() == 0
    assert math.isnan(empty["mean"]) and math.isnan(empty["dead"])


def test_mean_std_equal_torch():
    x = torch.randn(4, 5, 6, generator=torch.Generator().manual_seed(1)) * 3 + 2
    s = stats_of(x, HistSpec())
    assert s["mean"] == pytest.approx(x.mean().item(), rel=1e-5)
    assert s["std"] == pytest.approx(x.std().item(), rel=1e-5)  # unbiased, as torch's default


def test_accumulation_adds_counts_and_pools_moments():
    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(300, generator=g), torch.randn(500, generator=g) * 2 + 1
    spec = HistSpec(-4.0, 4.0, 16, "none")
    buf = torch.zeros(spec.size, dtype=torch.float64)
    accumulate(buf, a, spec)
    accumulate(buf, b, spec)
    s = summarize(buf.numpy(), spec)
    both = torch.cat([a, b])
    np.testing.assert_array_equal(s["counts"], histogram(both, spec).numpy())
    assert s["mean"] == pytest.approx(both.mean().item(), rel=1e-5)
    assert s["std"] == pytest.approx(both.std().item(), rel=1e-5)


def test_dead_fraction_lowest_k_bins():
    # |a| on [0, 10], 40 bins of 0.25: 0 and 0.1 in bin 0; 0.3 in bin 1; 5 elsewhere.
    x = torch.tensor([0.0, 0.1, 0.3, 5.0])
    assert stats_of(x, HistSpec())["dead"] == pytest.approx(0.5)
    assert stats_of(x, HistSpec(), dead_bins=2)["dead"] == pytest.approx(0.75)


def test_relu_of_negatives_is_all_dead():
    x = torch.relu(-torch.rand(2, 3, 8, 8) - 0.1)
    assert stats_of(x, HistSpec())["dead"] == 1.0


def test_bf16_and_log10abs():
    spec = HistSpec(-3.0, 1.0, 4, "log10abs")  # decades 1e-3..1e1; 0 -> log10 = -inf: underflow
    x = torch.tensor([0.0, 1e-2, -0.5, 3.0, 1e4], dtype=torch.bfloat16)
    np.testing.assert_array_equal(histogram(x, spec).numpy(), [1, 0, 1, 1, 1, 1])


def test_log10abs_dead_counts_the_zeros_in_underflow():
    # decades [-6, 2] in 8 bins; 0 and 1e-9 underflow, 5e-6 is in bin [-6, -5), 0.5 elsewhere
    spec = HistSpec(-6.0, 2.0, 8, "log10abs")
    x = torch.tensor([0.0, 1e-9, 5e-6, 0.5])
    assert stats_of(x, spec)["dead"] == pytest.approx(0.75)
    assert stats_of(torch.relu(-torch.rand(64) - 0.1), spec)["dead"] == 1.0


def test_make_spec_and_validation():
    spec = make_spec(
        {"n_bins": 8, "transform": "none"}, lo=-1.0, hi=1.0, n_bins=40, transform="abs"
    )
    assert (spec.lo, spec.hi, spec.n_bins, spec.transform) == (-1.0, 1.0, 8, "none")
    with pytest.raises(ValueError):
        HistSpec(1.0, 0.0)
    with pytest.raises(ValueError):
        HistSpec(edges=[0.0, 0.0, 1.0])
    with pytest.raises(ValueError):
        accumulate(torch.zeros(3, dtype=torch.float64), torch.ones(2), HistSpec())


def test_segment_stats_without_foreach_powsum(monkeypatch):
    """Older torch (the device image had 2.11) may lack ``_foreach_powsum``: the squared
    ``_foreach_norm`` gives the same sums of squares."""
    spec = HistSpec(-2.0, 2.0, 10, "none")
    gen = torch.Generator().manual_seed(0)
    xs = [torch.randn(40, generator=gen), torch.randn(5, 3, generator=gen) * 2]
    segs = Segments([x.numel() for x in xs], torch.device("cpu"))
    with_powsum = segment_stats(xs, spec, segs)
    monkeypatch.delattr(torch, "_foreach_powsum", raising=False)
    without = segment_stats(xs, spec, segs)
    torch.testing.assert_close(without, with_powsum, rtol=1e-5, atol=1e-6)  # norm**2: rounding
    assert without[:, -2].tolist() == pytest.approx([float((x * x).sum()) for x in xs], rel=1e-5)
