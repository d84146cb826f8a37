"""Health checks on synthetic statistics streams, the monitor's outputs, and the non-finite step guard."""

import copy
import json
import logging
import math

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from diagnostics.health import (
    DEFAULTS,
    HealthMonitor,
    all_finite,
    crash_cycles,
    named_grads,
    nonfinite_report,
    resolve_config,
    running_median,
)
from diagnostics.writer import Writer
from experiments.common import latest_checkpoint, load_checkpoint, save_checkpoint

EVERY = 10


def smooth(n: int) -> dict[str, list[float]]:
    """A healthy GAN run's statistics: slow, monotone drifts, nothing near any threshold."""
    return {
        "loss/D": [-1.0 - 0.02 * i for i in range(n)],
        "loss/G": [0.5 + 0.01 * i for i in range(n)],
        "gan/gap": [1.0 + 0.02 * i for i in range(n)],
        "grad/G/norm": [1.0 - 0.005 * i for i in range(n)],
        "grad/D/norm": [2.0 + 0.01 * i for i in range(n)],
        "act/G/blocks.0/std": [1.0 - 0.004 * i for i in range(n)],
        "act/G/blocks.0/mean": [0.3 + 0.002 * i for i in range(n)],
        "act/G/blocks.0/dead": [0.2] * n,
        "act/D/conv1/dead": [0.3 + 0.001 * i for i in range(n)],
        "gan/diversity": [0.05 + 0.001 * i for i in range(n)],
        "spectrum/temperature/ratio_high": [0.6 + 0.005 * i for i in range(n)],
    }


def run_stream(
    series: dict[str, list[float]], cfg=None, total_steps=None, writer=None, run_dir=None
):
    """Feed the stream one write at a time; return the monitor and {check: first step active}."""
    mon = HealthMonitor(cfg, writer, run_dir, total_steps=total_steps)
    n = max(len(v) for v in series.values())
    history: dict[str, list[tuple[int, float]]] = {}
    first: dict[str, int] = {}
    for i in range(n):
        step = (i + 1) * EVERY
        for tag, vals in series.items():
            if i < len(vals):
                history.setdefault(tag, []).append((step, vals[i]))
        for name, active in mon.update(step, history).items():
            if active:
                first.setdefault(name, step)
    return mon, first


def test_smooth_stream_raises_nothing(tmp_path):
    mon, first = run_stream(smooth(40), total_steps=400, run_dir=tmp_path)
    assert first == {}
    assert not mon.should_stop
    assert mon.verdict().startswith("Healthy: 40 health updates")
    data = json.loads((tmp_path / "health.json").read_text())
    assert data["alerts"] == [] and data["n_updates"] == 40


def test_crash_cycles_counts_by_hand():
    assert crash_cycles([1, 2, 1], 2.0, 0.5, 1e-6) == 1
    assert crash_cycles([1, 1.5, 0.7, 1.3, 0.6], 2.0, 0.5, 1e-6) == 0  # rises of < 2x are noise
    assert crash_cycles([1, 3, 1, 3, 1, 3, 1], 2.0, 0.5, 1e-6) == 3
    assert (
        crash_cycles([1, 4, 3, 2.5, 1.9], 2.0, 0.5, 1e-6) == 1
    )  # a slow decline crashes once below 2
    assert crash_cycles([1, 2, 4, 8], 2.0, 0.5, 1e-6) == 0  # rising alone is not a crash
    # Smoothed by a running median of 3, one-write spikes vanish; a rise and crash held for two do not.
    assert running_median([1, 5, 1, 1, 5, 1], 3) == [3, 1, 1, 1, 1, 3]
    assert crash_cycles([1, 5, 1, 1, 5, 1, 1], 2.0, 0.5, 1e-6, smooth=3) == 0
    assert crash_cycles([1, 1, 5, 5, 1, 1, 5, 5, 1, 1], 2.0, 0.5, 1e-6, smooth=3) == 2


def test_crash_cycles_fire_on_second_cycle():
    s = smooth(12)
    s["act/G/blocks.1/std"] = [1.0, 1.0, 3.5, 3.6, 0.9, 0.8, 3.4, 3.5, 0.8, 0.9, 1.0, 1.0]
    _, first = run_stream(s)
    # Unsmoothed the crashes are writes 5 and 9. Median-of-3 smoothed, the newest write's window holds
    # only two values (their mean, 2.15 at write 9), so the second crash shows at write 10.
    assert first == {"crash_cycles": 100}
    _, first = run_stream(s, cfg={"crash_cycles": {"smooth": 1}})
    assert first == {"crash_cycles": 90}  # unsmoothed: the crash at write 9
    s["act/D/blocks.1/std"] = s.pop("act/G/blocks.1/std")  # the critic's layers are excluded
    _, first = run_stream(s)
    assert first == {}


def test_dead_layer_needs_n_consecutive_writes():
    s = smooth(8)
    s["act/G/blocks.0/dead"] = [0.2, 0.95, 0.96, 0.5, 0.95, 0.96, 0.97, 0.99]
    mon, first = run_stream(s, cfg={"dead_layers": {"std_max": None}})
    assert first == {"dead_layers": 70}
    assert "act/G/blocks.0/dead=0.99" in mon.alerts["dead_layers"].message


def test_dead_layer_std_max_spares_small_but_varied_outputs():
    s = smooth(6)
    s["act/G/blocks.0/dead"] = [1.0] * 6
    s["act/G/blocks.0/std"] = [0.05] * 6  # all |a| < 0.25 (first bin), yet varied: alive
    s["act/G/relu/dead"] = [1.0] * 6
    s["act/G/relu/std"] = [0.0] * 6  # a ReLU behind a large negative bias: exactly zero
    mon, first = run_stream(s)
    assert first == {"dead_layers": 30}
    assert mon.alerts["dead_layers"].message == "dead: act/G/relu/dead=1"


def test_nan_counts_and_recorded_scalars_fire_nonfinite():
    s = smooth(4)
    s["grad/G/nan_count"] = [0, 0, 3, 0]
    _, first = run_stream(s)
    assert first == {"nonfinite": 30}
    # Losses reach health through the one scalar stream: reported, written, in diag.history.
    from diagnostics.core import Diagnostics

    mon = HealthMonitor(None)
    diag = Diagnostics({"m": torch.nn.Linear(1, 1)}, cfg={"enabled": False, "every": 10})
    for step in range(1, 21):
        diag.report("loss/D", torch.tensor(-1.0 if step <= 10 else float("inf")))
        diag.report("gan/gap", 0.5)
        if diag.step(step):
            assert mon.update(step, diag.history)["nonfinite"] is (step == 20)
    assert diag.history["loss/D"][0] == (10, -1.0)


def test_critic_overpowering_runaway_loss_and_vanishing_generator_grads():
    s = smooth(8)
    s["loss/D"] = [-1.0, -1.2, -0.9, -5.0, -20.0, -30.0, -40.0, -50.0]
    _, first = run_stream(s)
    assert first == {"critic_overpowering": 70}  # reference 1.0, limit 10: writes 5, 6, 7

    s = smooth(8)
    s["grad/G/norm"] = [1.0, 1.0, 1.0, 0.5, 0.005, 0.001, 0.002, 0.001]
    mon, first = run_stream(s)
    assert first == {"critic_overpowering": 70}
    assert "vanishing" in mon.alerts["critic_overpowering"].message

    s = smooth(8)
    s["loss/gp"] = [0.5, 0.7, 12.0, 300.0, 5.0, 20.0, 30.0, 40.0]
    mon, first = run_stream(s)
    assert first == {"critic_overpowering": 80}  # > 10 at writes 6, 7, 8
    assert "loss/gp=40 (critic gradients far from 1)" in mon.alerts["critic_overpowering"].message


def test_mode_collapse():
    s = smooth(6)
    s["gan/diversity"] = [0.0] * 6
    _, first = run_stream(s)
    assert first == {"mode_collapse": 20}
    # Learned noise scales start at 0: tiny but growing diversity is a healthy start.
    s["gan/diversity"] = [0.0, 1e-5, 3e-5, 1e-4, 4e-4, 2e-3]
    _, first = run_stream(s)
    assert first == {}
    # Shrinking towards zero is collapse.
    s["gan/diversity"] = [0.05, 0.01, 9e-5, 5e-5, 4e-5, 4e-5]
    _, first = run_stream(s)
    assert first == {"mode_collapse": 40}


def test_spectrum_waits_for_warmup():
    s = smooth(10)
    s["spectrum/vx/ratio_high"] = [0.05] * 10
    _, first = run_stream(s, total_steps=100)
    # Warm-up 0.5 x 100 = step 50; three writes from there: 50, 60, 70.
    assert first == {"spectrum": 70}


def test_nonfinite_value_in_history_stops(tmp_path):
    s = smooth(5)
    s["loss/G"][3] = float("nan")
    mon, first = run_stream(s, total_steps=50, run_dir=tmp_path)
    assert first == {"nonfinite": 40}
    assert mon.should_stop and "loss/G=nan" in mon.stop_reason
    data = json.loads((tmp_path / "health.json").read_text())
    (alert,) = data["alerts"]
    assert alert["check"] == "nonfinite" and alert["first_step"] == 40
    assert alert["cleared_step"] == 50  # the next write was finite again


def test_autoencoder_stream_runs_without_gan_tags():
    s = {k: v for k, v in smooth(10).items() if k.startswith(("act/", "loss/"))}
    s["act/enc/0/std"] = [1, 1, 4, 4, 1, 1, 4, 4, 1, 1]
    _, first = run_stream(s)
    # Smoothed, the second crash (write 9) is confirmed by write 10, whose median window holds it.
    assert first == {"crash_cycles": 100}


def test_config_merge_and_errors():
    cfg = resolve_config({"dead_layers": {"threshold": 0.5}, "spectrum": False})
    assert cfg["dead_layers"]["threshold"] == 0.5 and cfg["dead_layers"]["n_writes"] == 3
    assert cfg["spectrum"]["enabled"] is False
    assert DEFAULTS["dead_layers"]["threshold"] == 0.9  # defaults not mutated
    from omegaconf import OmegaConf  # the experiments pass a DictConfig

    oc = resolve_config(OmegaConf.create({"crash_cycles": {"tags": ["act/G/*/std"]}}))
    assert (
        oc["crash_cycles"]["tags"] == ["act/G/*/std"] and type(oc["crash_cycles"]["tags"]) is list
    )
    with pytest.raises(ValueError, match="unknown check"):
        resolve_config({"dead": {}})
    with pytest.raises(ValueError, match="unknown key"):
        resolve_config({"dead_layers": {"treshold": 0.5}})
    with pytest.raises(ValueError, match="policy"):
        resolve_config({"dead_layers": {"policy": "panic"}})


def test_monitor_writes_scalars_text_json_and_logs_once(tmp_path, caplog):
    s = smooth(8)
    s["act/G/blocks.0/dead"] = [0.2, 0.95, 0.96, 0.97, 0.98, 0.3, 0.3, 0.3]
    cfg = {"dead_layers": {"policy": "stop", "std_max": None}, "spectrum": {"enabled": False}}
    with caplog.at_level(logging.INFO, logger="diagnostics.health"), Writer(tmp_path) as w:
        mon, first = run_stream(s, cfg=cfg, total_steps=80, writer=w, run_dir=tmp_path)
        verdict = mon.finish(80)
    assert first == {"dead_layers": 40}
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("health: ")]
    starts = [m for m in lines if "started" in m]
    clears = [m for m in lines if "cleared" in m]
    assert len(starts) == 1 and len(clears) == 1
    assert "step 40 (50 % of 80)" in starts[0] and "step 60 (75 % of 80)" in clears[0]
    assert mon.should_stop and mon.stop_reason.startswith("dead_layers at step 40")
    assert "dead_layers first fired at step 40" in verdict and "cleared at step 60" in verdict

    ea = EventAccumulator(str(tmp_path), size_guidance={"scalars": 0, "tensors": 0})
    ea.Reload()
    dead = [(e.step, e.value) for e in ea.Scalars("health/dead_layers")]
    assert dead == [(10, 0), (20, 0), (30, 0), (40, 1), (50, 1), (60, 0), (70, 0), (80, 0)]
    assert "health/spectrum" not in ea.Tags()["scalars"]
    assert [e.value for e in ea.Scalars("health/mode_collapse")] == [0] * 8
    texts = [
        (e.step, e.tensor_proto.string_val[0].decode())
        for e in ea.Tensors("health/alerts/text_summary")
    ]
    assert [t[0] for t in texts] == [40, 60]
    assert "dead_layers [stop] started" in texts[0][1] and "cleared" in texts[1][1]
    (v,) = ea.Tensors("health/verdict/text_summary")
    assert v.tensor_proto.string_val[0].decode() == verdict
    data = json.loads((tmp_path / "health.json").read_text())
    assert data["alerts"][0]["first_step"] == 40 and data["verdict"] == verdict


# ------------------------------------------------------------------------------ step guard
def test_all_finite_and_report():
    lin = torch.nn.Linear(3, 2)
    loss = lin(torch.ones(1, 3)).sum()
    loss.backward()
    assert all_finite(loss, lin.parameters()).item() is True
    assert all_finite(torch.tensor(1e30), torch.full((4,), 3e38)).item() is True  # big, finite
    assert all_finite(torch.tensor(float("inf"))).item() is False
    lin.weight.grad[0, 1] = float("nan")
    lin.bias.grad[1] = -float("inf")
    ok = all_finite(loss, lin.parameters())
    assert ok.dtype == torch.bool and ok.ndim == 0 and ok.item() is False
    msg = nonfinite_report({"loss/D": loss, **named_grads(lin, "D")}, step=12)
    assert msg == (
        "non-finite values at step 12: grad/D/weight (1 NaN of 6); grad/D/bias (1 Inf of 2). "
        "The step was not applied."
    )


def _toy_gan_loop(tmp_path, nan_step: int, n_steps: int = 10):
    """A 2-network WGAN toy loop with the guard as the real loop will have it."""
    torch.manual_seed(0)
    G = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    D = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    opt_g = torch.optim.Adam(G.parameters(), 1e-2)
    opt_d = torch.optim.Adam(D.parameters(), 1e-2)
    mon = HealthMonitor(None, None, tmp_path, total_steps=n_steps)
    after: dict[int, dict] = {}
    for step in range(n_steps):
        real = torch.randn(16, 2) + 3.0
        fake = G(torch.randn(16, 2))
        loss_d = D(fake.detach()).mean() - D(real).mean()
        if step == nan_step:
            loss_d = loss_d * float("nan")
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        ok = all_finite(loss_d, D.parameters())
        if not bool(ok):  # the one documented per-step sync
            mon.report_nonfinite(
                step, nonfinite_report({"loss/D": loss_d, **named_grads(D, "D")}, step)
            )
            break
        opt_d.step()
        loss_g = -D(G(torch.randn(16, 2))).mean()
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        ok = all_finite(loss_g, G.parameters())
        if not bool(ok):
            mon.report_nonfinite(
                step, nonfinite_report({"loss/G": loss_g, **named_grads(G, "G")}, step)
            )
            break
        opt_g.step()
        state = {
            "G": copy.deepcopy(G.state_dict()),
            "D": copy.deepcopy(D.state_dict()),
            "step": step,
        }
        after[step] = state
        save_checkpoint(tmp_path / "checkpoints", step, state)
    return G, D, mon, after


def test_nan_in_critic_loss_skips_step_and_stops(tmp_path):
    k = 5
    G, D, mon, after = _toy_gan_loop(tmp_path, nan_step=k)
    assert max(after) == k - 1
    for name, net in (("G", G), ("D", D)):
        for key, val in net.state_dict().items():
            torch.testing.assert_close(val, after[k - 1][name][key], rtol=0, atol=0)
            assert torch.isfinite(val).all()
    # Parameters did move before step k: the guard is what kept them.
    assert not torch.equal(after[0]["D"]["0.weight"], after[k - 1]["D"]["0.weight"])
    ckpt = load_checkpoint(latest_checkpoint(tmp_path))
    assert ckpt["step"] == k - 1
    torch.testing.assert_close(ckpt["D"]["2.weight"], D.state_dict()["2.weight"], rtol=0, atol=0)
    assert mon.should_stop
    assert mon.stop_reason.startswith(
        f"nonfinite at step {k}: non-finite values at step {k}: loss/D (1 NaN of 1)"
    )
    assert "grad/D/0.weight (16 NaN of 16)" in mon.stop_reason
    data = json.loads((tmp_path / "health.json").read_text())
    assert data["alerts"][0]["check"] == "nonfinite" and data["alerts"][0]["first_step"] == k


def test_toy_loop_without_nan_runs_to_the_end(tmp_path):
    _, _, mon, after = _toy_gan_loop(tmp_path, nan_step=-1)
    assert sorted(after) == list(range(10)) and not mon.should_stop
    assert all(
        math.isfinite(v) for s in after.values() for v in s["D"]["0.weight"].flatten().tolist()
    )


def test_verdict_states_skill_against_the_baseline_even_without_an_alert(tmp_path):
    """A generator that improves but never beats trilinear fires no skill alert (that needs it
    to get worse) and must still not read as skilful: the verdict states the newest ratio."""
    worse = smooth(40) | {"skill/mse_ratio": [3.0 - 0.04 * i for i in range(40)]}  # 3.0 -> 1.44
    mon, first = run_stream(worse, total_steps=400, run_dir=tmp_path / "a")
    assert "skill" not in first
    v = mon.verdict()
    assert "Skill at step 400: skill/mse_ratio=1.44, NOT better than the baseline" in v, v
    back = HealthMonitor(None, total_steps=400)
    back.load_state_dict(mon.state_dict())  # a resumed or rerun run keeps the sentence
    assert back.verdict() == v
    better = smooth(40) | {"skill/mse_ratio": [0.6] * 40}
    mon, _ = run_stream(better, total_steps=400, run_dir=tmp_path / "b")
    assert "skill/mse_ratio=0.6, better than the baseline" in mon.verdict()
    mon, _ = run_stream(smooth(40), total_steps=400, run_dir=tmp_path / "c")
    assert "Skill at" not in mon.verdict()  # no skill signal: nothing claimed
