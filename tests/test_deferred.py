"""Deferred activation recording: outputs kept to the step's end give the numbers recording in the
hook gives, also when layers run several times per step, when a later op modifies an output in
place, and when the kept bytes reach their bound."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from diagnostics.core import Diagnostics
from tests.record_helpers import assert_same_records, recorded_run


class Critic(nn.Module):
    """Conv -> ReLU(inplace) (the conv's output is overwritten after its hook), then a conv
    whose output is left alone, a Linear and an optional in-place op from step ``late``."""

    def __init__(self, late: int | None = None) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.c1 = nn.Conv2d(2, 4, 3)
        self.act = nn.ReLU(inplace=True)
        self.c2 = nn.Conv2d(4, 4, 3)
        self.fc = nn.Linear(4 * 4 * 4, 1)
        self.late, self.calls = late, 0

    def forward(self, x):
        h = self.c2(self.act(self.c1(x)))
        if self.late is not None and self.training and self.calls >= self.late:
            h.mul_(0.5)  # c2's output modified in place, but only from some call on
        self.calls += 1
        return self.fc(h.flatten(1))


def run(defer_mb, late=None, steps=4, calls_per_step=3):
    """A GAN-like loop: the critic runs ``calls_per_step`` times per step (real, fake, penalty)."""
    m = Critic(late)
    opt = torch.optim.SGD(m.parameters(), 0.01)
    cfg = {
        "every": 2,
        "record_every": 1,
        "weights": {"enabled": False},
        "grads": {"enabled": False},
        "activations": {"defer_mb": defer_mb},
    }
    diag = Diagnostics({"D": m}, opt, None, cfg)
    gen = torch.Generator().manual_seed(1)
    return recorded_run(
        diag,
        opt,
        lambda step: sum(
            m(torch.randn(3, 2, 8, 8, generator=gen)).mean() for _ in range(calls_per_step)
        ),
        steps,
    )


def assert_same(a, b):
    assert_same_records(a, b, rtol=1e-5, atol=1e-6)


def test_deferred_equals_recording_in_the_hook():
    hook = run(defer_mb=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing modified late here: no warning
        deferred = run(defer_mb=128)
    assert_same(hook, deferred)
    act = deferred[1].act
    names = [lname for _, lname, _ in act.layers]
    # c1's output is overwritten by the in-place ReLU: it stays recorded in the hook
    assert act._defer[names.index("c1")] is False
    assert act._defer[names.index("c2")] is True
    assert sum(hook[0][0][k].sum() for k in hook[0][0] if k.startswith("act_hist/")) > 0


def test_deferred_with_a_tiny_bound_records_inside_the_hook_when_full():
    assert_same(run(defer_mb=0), run(defer_mb=1e-4))  # ~100 bytes: drained at every call


def test_output_modified_in_place_later_is_named_and_left_out():
    calls = 3
    late = 2 * calls + 1  # from the second call of step 2 on, c2's output is halved in place
    hook, _ = run(defer_mb=0, late=late)
    with pytest.warns(UserWarning, match=r"output of D\.c2 was modified in place.*2 of its"):
        deferred, diag = run(defer_mb=128, late=late)
    # steps 0-1 equal; in step 2 two of c2's three outputs were lost (named), after that c2 is
    # recorded in the hook again, so the last interval (step 3) equals the hook's own record
    np.testing.assert_array_equal(deferred[0]["act_hist/D/c2"], hook[0]["act_hist/D/c2"])
    lost = hook[1]["act_hist/D/c2"].sum() - deferred[1]["act_hist/D/c2"].sum()
    assert lost == 2 * 3 * 4 * 4 * 4  # two outputs of (3, 4, 4, 4)
    np.testing.assert_array_equal(deferred[2]["act_hist/D/c2"], hook[2]["act_hist/D/c2"])
    assert diag.act._defer[[n for _, n, _ in diag.act.layers].index("c2")] is False


def test_defer_mb_is_checked():
    m = Critic()
    with pytest.raises(ValueError, match="defer_mb: expected MB >= 0, got -1"):
        Diagnostics({"D": m}, None, None, {"activations": {"defer_mb": -1}})
