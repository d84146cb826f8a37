"""Critic balance, diversity and value distributions: hand-derived values, read back from TensorBoard."""

import math

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from diagnostics.gan import GanBalance, ValueDistribution, grad_norm, histogram_w1
from diagnostics.writer import Writer


def test_scores_gap_signs_and_separation():
    bal = GanBalance()
    # Batch 1: real [1, -1, 3, 1], fake [0, -2, 1, -3].
    bal.update(torch.tensor([1.0, -1.0, 3.0, 1.0]), torch.tensor([0.0, -2.0, 1.0, -3.0]))
    out = bal.compute()
    assert out["gan/score_real"].item() == pytest.approx(1.0)
    assert out["gan/score_fake"].item() == pytest.approx(-1.0)
    assert out["gan/gap"].item() == pytest.approx(2.0)
    assert out["gan/real_positive"].item() == pytest.approx(0.75)
    assert out["gan/r_t"].item() == pytest.approx(0.5)  # signs 1, -1, 1, 1
    # Pairs real > fake: r=1: {0,-2,-3} 3 + tie with 1 (half); r=-1: {-2,-3} 2; r=3: 4; r=1: 3.5 -> 13/16.
    assert out["gan/separation"].item() == pytest.approx(13 / 16)


def test_scores_accumulate_over_batches_and_score_fields_are_averaged():
    bal = GanBalance()
    bal.update(torch.ones(2, 1, 4, 4), -torch.ones(2, 1, 4, 4))  # score fields (B, 1, H, W)
    bal.update(torch.full((2,), 3.0), torch.full((2,), 1.0))
    out = bal.compute()
    assert out["gan/score_real"].item() == pytest.approx(2.0)
    assert out["gan/score_fake"].item() == pytest.approx(0.0)
    assert out["gan/separation"].item() == pytest.approx(1.0)
    bal.reset()
    assert bal.compute() == {}


def test_grad_norm_and_diversity():
    lin = torch.nn.Linear(2, 1, bias=True)
    lin.weight.grad = torch.tensor([[3.0, 0.0]])
    lin.bias.grad = torch.tensor([4.0])
    assert grad_norm(lin.parameters()).item() == pytest.approx(5.0)
    bal = GanBalance()
    bal.update_grad_norm("G", lin.parameters())
    lin.bias.grad = torch.tensor([0.0])
    bal.update_grad_norm("G", lin.parameters())
    assert bal.compute()["gan/grad_norm/G"].item() == pytest.approx(4.0)  # (5 + 3) / 2

    base = torch.randn(1, 3, 1, 8, 8).expand(2, 3, 1, 8, 8)
    bal.update_diversity(base.clone())  # identical draws: zero spread
    assert bal.compute()["gan/diversity"].item() == 0.0
    bal.reset()
    # Two draws x and -x: per-pixel std across draws = sqrt(2)|x|.
    x = torch.tensor([1.0, -1.0, 1.0, -1.0]).reshape(1, 1, 1, 4)
    bal.update_diversity(torch.stack([x, -x]))
    # spread across draws sqrt(2); each sample's spatial std = sqrt(4/3): ratio sqrt(2)/sqrt(4/3).
    assert bal.compute()["gan/diversity"].item() == pytest.approx(math.sqrt(2) / math.sqrt(4 / 3))
    with pytest.raises(ValueError):
        bal.update_diversity(torch.zeros(1, 2, 3))


def test_update_does_not_sync_or_change_inputs():
    bal = GanBalance()
    r = torch.randn(4, requires_grad=True)
    f = torch.randn(4)
    r0 = r.detach().clone()
    bal.update(r, f)
    assert all(t.requires_grad is False for t in bal.compute().values())
    torch.testing.assert_close(r.detach(), r0)


def test_value_histogram_counts_and_w1():
    vd = ValueDistribution(["a"], lo=0.0, hi=4.0, n_bins=4)
    # Edges 0,1,2,3,4. Real: -5 (under), 0.5, 0.5, 9 (over), NaN (dropped). Fake: 3.5 x 4.
    real = torch.tensor([-5.0, 0.5, 0.5, 9.0, float("nan")]).reshape(1, 1, 5)
    fake = torch.tensor([3.5, 3.5, 3.5, 3.5, 3.5]).reshape(1, 1, 5)
    vd.update(real, fake)
    res = vd.compute()
    assert res["counts"][0, 0].tolist() == [1, 2, 0, 0, 0, 1]
    assert res["counts"][1, 0].tolist() == [0, 0, 0, 0, 5, 0]
    # Real mass at centres -0.5 (1/4), 0.5 (2/4), 4.5 (1/4); fake all at 3.5.
    # W1 = 1/4*4 + 2/4*3 + 1/4*1 = 2.75.
    assert res["w1"][0].item() == pytest.approx(2.75)


def test_w1_identical_is_zero_and_shift_is_width():
    a = torch.tensor([[0.0, 1, 2, 3, 0, 0]])
    b = torch.tensor([[0.0, 0, 1, 2, 3, 0]])
    assert histogram_w1(a, a, 4.0).item() == 0.0
    assert histogram_w1(a, b, 8.0).item() == pytest.approx(2.0)  # shift by one bin of width 2


def test_value_distribution_writes(tmp_path):
    vd = ValueDistribution(["t", "vx"], lo=[0.0, -1.0], hi=[1.0, 1.0], n_bins=10)
    torch.manual_seed(0)
    real = torch.rand(2, 2, 6, 6)
    vd.update(real, real.clone())
    with Writer(tmp_path) as w:
        host = vd.write(w, 3)
    assert host == {"values/t/w1": 0.0, "values/vx/w1": 0.0}
    ea = EventAccumulator(str(tmp_path), size_guidance={"scalars": 0, "histograms": 0, "images": 0})
    ea.Reload()
    h = ea.Histograms("values/truth/t")[0].histogram_value
    assert h.num == 72
    assert ea.Scalars("values/vx/w1")[0].value == 0.0
    assert "values/figure" in ea.Tags()["images"]
