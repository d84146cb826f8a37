"""The device-side non-finite guard: a bad update is masked on the device, read at a write."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from diagnostics.health import StepGuard
from experiments import common
from tests.gan_helpers import gan_cfg, poison_critic_at


def _run(opt_name: str, bad_step: int, n_steps: int = 4, poison: str = "nan"):
    """A linear model trained n_steps; the loss of ``bad_step`` is multiplied by NaN/Inf."""
    torch.manual_seed(0)
    lin = torch.nn.Linear(3, 2)
    opt = {
        "adam": lambda p: torch.optim.Adam(p, lr=0.1),
        "adadelta": lambda p: torch.optim.Adadelta(p, lr=1.0),
        "sgd_momentum": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
    }[opt_name](lin.parameters())
    guard = StepGuard({"m": (lin, opt)})
    x = torch.randn(5, 3)
    states = {}
    for step in range(1, n_steps + 1):
        loss = (lin(x) ** 2).mean()
        if step == bad_step:
            loss = loss * float(poison)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        guard.check("m", loss, step)
        opt.step()
        states[step] = (copy.deepcopy(lin.state_dict()), copy.deepcopy(opt.state_dict()))
    return lin, opt, guard, states


@pytest.mark.parametrize("opt_name", ["adam", "adadelta", "sgd_momentum"])
def test_bad_step_and_all_after_it_are_not_applied(opt_name):
    k = 2
    lin, opt, guard, states = _run(opt_name, bad_step=k)
    for step in range(k, 5):  # the bad step and every later (finite) one: masked
        for name, v in states[step][0].items():
            assert torch.equal(v, states[k - 1][0][name]), (opt_name, step, name)
    assert all(torch.isfinite(p).all() for p in lin.parameters())
    if opt_name == "adam":  # fused kernel skipped the whole update: moments and step count too
        st = opt.state_dict()["state"][0]
        assert float(st["step"]) == k - 1
        assert torch.equal(st["exp_avg"], states[k - 1][1]["state"][0]["exp_avg"])
    step, msg = guard.verdict()
    assert step == k
    assert msg.startswith(f"non-finite values at step {k}: loss/m (NaN); grad/m/weight (NaN)")
    assert "not applied" in msg


@pytest.mark.parametrize("opt_name", ["adam", "adadelta"])
def test_finite_run_is_unchanged_by_the_guard(opt_name):
    """Without a bad step, the guarded run equals an unguarded one (fused Adam: to rounding)."""
    lin, _, guard, _ = _run(opt_name, bad_step=-1)
    torch.manual_seed(0)
    ref = torch.nn.Linear(3, 2)
    opt = (
        torch.optim.Adam(ref.parameters(), lr=0.1)
        if opt_name == "adam"
        else torch.optim.Adadelta(ref.parameters(), lr=1.0)
    )
    x = torch.randn(5, 3)
    for _ in range(4):
        opt.zero_grad()
        (ref(x) ** 2).mean().backward()
        opt.step()
    for a, b in zip(lin.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    assert guard.verdict() is None


def test_inf_gradient_is_named_and_nan_is_not_claimed():
    lin = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(lin.parameters(), lr=0.1)
    guard = StepGuard({"D": (lin, opt)})
    before = lin.weight.detach().clone()
    loss = lin(torch.ones(1, 2)).sum()
    loss.backward()
    lin.bias.grad[1] = float("-inf")
    guard.check("D", loss, 7)
    opt.step()
    assert torch.equal(lin.weight, before)
    step, msg = guard.verdict()
    assert step == 7 and "grad/D/bias (Inf)" in msg
    assert "loss/D" not in msg and "weight" not in msg


def test_hold_freezes_an_ema_once_bad():
    lin = torch.nn.Linear(2, 1)
    guard = StepGuard({"m": (lin, torch.optim.SGD(lin.parameters(), lr=0.1))})
    assert float(guard.hold(0.9)) == pytest.approx(0.9)
    lin(torch.ones(1, 2)).sum().mul(float("nan")).backward()
    guard.check("m", torch.tensor(float("nan")), 1)
    assert float(guard.hold(0.9)) == 1.0


def _n_ops(fn) -> int:
    """Operators called from Python (top-level aten events; a kernel launch each on a GPU)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return sum(
        1
        for e in prof.events()
        if e.name.startswith("aten::")
        and (e.cpu_parent is None or not e.cpu_parent.name.startswith("aten::"))
    )


def test_check_costs_the_same_number_of_ops_for_4_or_64_tensors():
    counts = []
    for n in (2, 32):  # 4 and 64 parameter tensors
        model = torch.nn.Sequential(*[torch.nn.Linear(3, 3) for _ in range(n)])
        guard = StepGuard({"m": (model, torch.optim.Adam(model.parameters()))})
        loss = model(torch.ones(1, 3)).sum()
        loss.backward()
        counts.append(_n_ops(lambda g=guard, loss=loss: g.check("m", loss, 1)))
    assert counts[0] == counts[1], counts


def test_gan_nan_is_masked_until_the_next_write(cache_dir, tmp_path, monkeypatch):
    """A NaN at step 5 with writes every 4 steps: steps 5-8 are all masked on the device, the run
    stops at the step-8 read (before that step's checkpoint) with the message of step 5, and the
    models in memory equal the step-4 checkpoint."""
    import experiments.train_gan as tg

    k, n_critic = 5, 2
    built = poison_critic_at(monkeypatch, k, n_critic)
    cfg = gan_cfg(
        cache_dir,
        "train.steps=12",
        "checkpoint.every=4",
        "checkpoint.n_keep=10",
        "diagnostics.every=4",
        "diagnostics.record_every=2",
        "snapshot.every=4",
        "log.slices_every=4",
        "log.physics_every=4",
    )
    with pytest.raises(tg.StopTraining, match=rf"step {k}: loss/D \(NaN\)") as e:
        tg.train(cfg, tmp_path)
    assert "not applied" in str(e.value) and "ckpt_00000004.pt" in str(e.value)
    last = common.latest_checkpoint(tmp_path)
    assert last.name == "ckpt_00000004.pt"
    state = torch.load(last, weights_only=True)
    for net in ("G", "D"):
        for name, v in built[net].state_dict().items():
            assert torch.equal(v, state[net][name]), f"{net}.{name} changed after step 4"
    health = json.loads((tmp_path / "health.json").read_text())
    assert health["alerts"][0]["check"] == "nonfinite" and health["alerts"][0]["first_step"] == k
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "stopped" and summary["exit_code"] == 3 and summary["step"] == 8


def test_autoencoder_nan_stops_with_the_last_good_checkpoint(tmp_path, monkeypatch):
    """Adadelta (no fused kernel): a NaN at step 6, writes every 5 steps: the put-back path masks
    steps 6-10, the step-10 read stops the run, and the weights equal the step-5 checkpoint."""
    import experiments.train_autoencoder as ta
    from tests.test_train_autoencoder import make_cfg

    k = 6
    calls = {"n": 0}
    real = ta.masked_mse

    def poisoned(out, target, weight):
        loss = real(out, target, weight)
        if out.requires_grad:  # training steps only, not evaluations
            calls["n"] += 1
            if calls["n"] == k:
                loss = loss * float("nan")
        return loss

    seen = {}
    real_model = ta.DenseAutoencoder

    def observed(*a, **kw):
        seen["m"] = real_model(*a, **kw)
        return seen["m"]

    monkeypatch.setattr(ta, "masked_mse", poisoned)
    monkeypatch.setattr(ta, "DenseAutoencoder", observed)
    cfg = make_cfg(
        [
            "+exp=small",
            "train.n_epochs=1",
            "train.steps_per_epoch=20",
            "diagnostics.every=5",
            "diagnostics.record_every=5",
            "snapshot.every=5",
            "frames.every=10",
            "checkpoint.every=5",
            "checkpoint.n_keep=10",
            "embed.enabled=false",
        ]
    )
    with pytest.raises(ta.StopTraining, match=rf"step {k}: loss/AE \(NaN\)"):
        ta.train(cfg, tmp_path)
    last = common.latest_checkpoint(tmp_path)
    assert last.name == "ckpt_00000005.pt"
    state = torch.load(last, weights_only=True)
    for name, v in seen["m"].state_dict().items():
        assert torch.equal(v, state["model"][name]), name
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "stopped" and summary["exit_code"] == 3
