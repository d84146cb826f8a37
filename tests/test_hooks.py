"""Hook handling: layer selection, unwrapping, removal also after an exception, training mode only."""

import pytest
import torch
from torch import nn

from diagnostics.hooks import Hooks, first_tensor, select_modules, unwrap


def net():
    return nn.Sequential(
        nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Sequential(nn.Conv2d(2, 2, 1), nn.Tanh()), nn.Flatten()
    )


def test_select_by_type_name_and_exclude():
    m = net()
    assert [n for n, _ in select_modules(m)] == ["0", "1", "2.0", "2.1"]
    assert [n for n, _ in select_modules(m, types=["Conv2d"])] == ["0", "2.0"]
    assert [n for n, _ in select_modules(m, types=[nn.Tanh])] == ["2.1"]
    assert [n for n, _ in select_modules(m, names=r"^2\.")] == ["2.0", "2.1"]
    assert [n for n, _ in select_modules(m, exclude=r"^2\.")] == ["0", "1"]
    # Empty types: every leaf module, Flatten included.
    assert [n for n, _ in select_modules(m, types=[])] == ["0", "1", "2.0", "2.1", "3"]


def test_unwrap_dataparallel_and_compiled_attr():
    m = net()
    assert unwrap(nn.DataParallel(m)) is m

    class Compiled(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self._orig_mod = inner

    assert unwrap(Compiled(m)) is m
    assert [n for n, _ in select_modules(nn.DataParallel(m))] == ["0", "1", "2.0", "2.1"]


def test_hooks_removed_after_block_and_after_exception():
    m = net()
    mods = [mod for _, mod in select_modules(m)]
    seen = []
    with Hooks(mods, lambda i, mod, out: seen.append(i)):
        assert all(len(x._forward_hooks) == 1 for x in mods)
        m(torch.zeros(1, 1, 5, 5))
    assert seen == [0, 1, 2, 3]
    assert all(len(x._forward_hooks) == 0 for x in mods)
    with pytest.raises(RuntimeError, match="boom"):
        with Hooks(mods, lambda i, mod, out: None):
            raise RuntimeError("boom")
    assert all(len(x._forward_hooks) == 0 for x in mods)


def test_hooks_record_only_in_training_mode():
    m = net()
    seen = []
    with Hooks([m[0]], lambda i, mod, out: seen.append(out.shape)):
        m.eval()
        m(torch.zeros(1, 1, 5, 5))
        assert seen == []
        m.train()
        m(torch.zeros(1, 1, 5, 5))
    assert seen == [torch.Size([1, 2, 3, 3])]


def test_first_tensor():
    a = torch.ones(2)
    assert first_tensor(a) is a
    assert first_tensor((torch.ones(2, dtype=torch.long), a)) is a
    assert first_tensor({"x": None, "y": [a]}) is a
    assert first_tensor(None) is None


def test_probe_mode_restores_flags_and_leaves_training_rng_alone():
    from diagnostics.hooks import probe_mode

    a, b = torch.nn.Linear(2, 2), torch.nn.Dropout(0.5)
    a.train()
    b.eval()
    torch.manual_seed(7)
    expected_next = torch.rand(3)
    torch.manual_seed(7)
    with probe_mode(a, b, seed=123):
        assert not a.training and not b.training and not torch.is_grad_enabled()
        first = torch.randn(4)
    with pytest.raises(RuntimeError), probe_mode(a, b, seed=123):
        assert torch.equal(torch.randn(4), first)  # same seed, same probe noise
        raise RuntimeError("probe failed")
    assert a.training and not b.training  # restored, also after the exception
    assert torch.equal(torch.rand(3), expected_next)  # the training RNG did not move


def test_forward_hooks_are_registered_only_on_recorded_steps():
    # a registered hook costs a few us per module call even when it does nothing: off between
    # recorded steps, on for them, gone after the block
    import sys

    from diagnostics.core import Diagnostics

    if "torch._dynamo.utils" in sys.modules:  # compiled in an earlier test: hooks are kept
        sys.modules["torch._dynamo.utils"].counters.clear()
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    opt = torch.optim.SGD(m.parameters(), 0.1)
    hooked = lambda: [bool(mod._forward_hooks) for mod in m]  # noqa: E731
    diag = Diagnostics({"M": m}, opt, None, {"every": 4, "record_every": 2})
    seen = []
    with diag:
        for step in range(6):
            seen.append(all(hooked()))
            opt.zero_grad()
            m(torch.randn(5, 3)).sum().backward()
            opt.step()
            diag.step(step)
    assert seen == [True, False, True, False, True, False]
    assert not any(hooked())
    assert diag.history["act/M/0/mean"] and len(diag.history["act/M/0/mean"]) == 2


def test_a_model_not_trained_yet_is_named_once_and_its_layers_checked_when_it_starts():
    # A critic idle in a content-only pretraining phase is not a fault: it is named once, and
    # its layers are checked at the first write after it starts (one of them never runs).
    import warnings

    from diagnostics.core import Diagnostics

    torch.manual_seed(0)
    a = nn.Sequential(nn.Linear(3, 3), nn.ReLU())
    b = nn.ModuleDict({"used": nn.Linear(3, 1), "spare": nn.Linear(3, 1)})
    opt = torch.optim.SGD([*a.parameters(), *b.parameters()], 0.1)
    diag = Diagnostics({"A": a, "B": b}, opt, None, {"every": 2})
    with warnings.catch_warnings(record=True) as got, diag:
        warnings.simplefilter("always")
        for step in range(8):
            opt.zero_grad()
            h = a(torch.randn(4, 3))
            loss = h.sum() if step < 4 else b["used"](h).sum()  # B trains from step 4
            loss.backward()
            opt.step()
            diag.step(step)
    msgs = [str(w.message) for w in got if "training-mode forward" in str(w.message)]
    assert len(msgs) == 2, msgs
    assert "none of the 2 selected layers of B" in msgs[0] and "step 0" in msgs[0]
    assert "B/spare" in msgs[1] and "B/used" not in msgs[1] and "step 4" in msgs[1]
