"""Production runs: preemption, requeue by run name, path containment, checkpoints, torchrun."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from diagnostics.snapshots import list_snapshots, load_snapshot
from experiments import common
from tests.gan_helpers import GAN_CONF, ROOT, TINY, gan_cfg

SCRIPT = str(ROOT / "experiments" / "train_gan.py")


def _tensors(obj) -> list[torch.Tensor]:
    """Every tensor in a nested state dict, in a fixed order."""
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, dict):
        return [t for k in sorted(obj, key=str) for t in _tensors(obj[k])]
    if isinstance(obj, list | tuple):
        return [t for x in obj for t in _tensors(x)]
    return []


def run_cli(cache_dir, out_root, *overrides, timeout=300):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    args = [
        SCRIPT,
        "+exp=small",
        *TINY,
        f"data.cache_dir={cache_dir}",
        f"out_root={out_root}",
        "diagnostics.every=1",
        "diagnostics.record_every=1",
        "diagnostics.every=1",
        *overrides,
    ]
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=env, timeout=timeout
    )


def scalar_steps(run_dir, tag="loss/D"):
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return [e.step for e in acc.Scalars(tag)]


def test_preemption_signal_saves_exits_and_requeue_resumes(cache_dir, tmp_path):
    first = run_cli(
        cache_dir, tmp_path, "run_name=job1", "train.steps=8", "preempt.self_signal_step=3"
    )
    assert first.returncode == common.EXIT_PREEMPTED, first.stderr[-2000:]
    run = tmp_path / "gan" / "job1"
    assert [s for s, _ in common.list_checkpoints(run / "checkpoints")][-1] == 3
    assert scalar_steps(run) == [1, 2, 3]  # events only up to the signal
    assert "SIGUSR2 received" in first.stdout + first.stderr

    # The requeued job: same command, same run_name -> resumes from step 3, no duplicate points.
    second = run_cli(cache_dir, tmp_path, "run_name=job1", "train.steps=8")
    assert second.returncode == 0, second.stderr[-2000:]
    assert "resuming from" in second.stdout + second.stderr
    assert scalar_steps(run) == list(range(1, 9))

    # Bitwise equal to the same run never interrupted (CPU, deterministic algorithms).
    straight = run_cli(cache_dir, tmp_path, "run_name=job2", "train.steps=8")
    assert straight.returncode == 0, straight.stderr[-2000:]
    a = torch.load(common.latest_checkpoint(run), weights_only=True)
    b = torch.load(common.latest_checkpoint(tmp_path / "gan" / "job2"), weights_only=True)
    for key in ("G", "D", "opt_G", "opt_D"):
        flat_a = torch.nn.utils.parameters_to_vector(
            [v.float().reshape(-1) for v in _tensors(a[key])]
        )
        flat_b = torch.nn.utils.parameters_to_vector(
            [v.float().reshape(-1) for v in _tensors(b[key])]
        )
        assert torch.equal(flat_a, flat_b), f"{key} differs after preemption and resume"


@pytest.mark.parametrize("signame", ["SIGUSR1", "SIGTERM"])
def test_other_signals_accepted(signame):
    with common.Preemption(signame) as p:
        os.kill(os.getpid(), getattr(signal, signame))
        assert p.requested


def test_preemption_hands_signal_to_previous_handler():
    seen = []
    old = signal.signal(signal.SIGUSR2, lambda s, f: seen.append(s))
    try:
        with common.Preemption("SIGUSR2") as p:
            os.kill(os.getpid(), signal.SIGUSR2)
            assert p.requested and not seen  # ours caught it during the run
        assert seen == [signal.SIGUSR2]  # then submitit's (here: a stand-in) gets it to requeue
    finally:
        signal.signal(signal.SIGUSR2, old)


def test_unknown_signal_rejected():
    with pytest.raises(ValueError, match="preempt.signal"):
        common.Preemption("SIGKILL")


@pytest.mark.parametrize("bad", ["../x", "/etc", "a/b", "..", "~root", ""])
def test_run_name_must_stay_inside_outputs(bad):
    with pytest.raises(ValueError, match="run_name"):
        common.safe_run_name(bad)


def test_run_name_is_refused_not_rewritten():
    # "my run" used to become "my-run": two names, one directory.
    with pytest.raises(common.RunError, match="run_name=my-run"):
        common.safe_run_name("my run")
    assert common.safe_run_name("my-run") == "my-run"
    assert common.inside("/tmp/out", "/tmp/out/gan/x") and not common.inside("/tmp/out", "/tmp/x")


def test_cli_rejects_escaping_run_name(cache_dir, tmp_path):
    out = run_cli(cache_dir, tmp_path / "outputs", "run_name=../escape", "train.steps=1")
    assert out.returncode == 2 and "run_name" in out.stderr
    assert len(out.stderr.strip().splitlines()) <= 3, out.stderr  # one message, no traceback
    assert not (tmp_path / "escape").exists() and not (tmp_path / "outputs").exists()


def test_checkpoint_without_marker_is_ignored(tmp_path):
    ck = tmp_path / "checkpoints"
    common.save_checkpoint(ck, 2, {"step": 2})
    torch.save({"step": 4}, ck / "ckpt_00000004.pt")  # no completion marker
    (ck / "ckpt_00000006.pt").write_bytes(b"half a file")  # unloadable
    assert common.latest_checkpoint(tmp_path) == ck / "ckpt_00000002.pt"


def test_n_keep(tmp_path):
    for s in range(1, 6):
        common.save_checkpoint(tmp_path, s, {"step": s}, n_keep=2)
    assert [s for s, _ in common.list_checkpoints(tmp_path)] == [4, 5]


def test_slurm_launcher_preset_composes():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    with initialize_config_dir(config_dir=str(GAN_CONF), version_base="1.3"):
        cfg = compose("train_gan", overrides=["hydra/launcher=slurm"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.signal_delay_s == 120 and launcher.max_num_timeout > 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, world: int, port: int, cache_dir, out_dir) -> None:
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    from experiments.train_gan import train

    cfg = gan_cfg(
        cache_dir,
        "train.steps=2",
        "diagnostics.every=2",
        "diagnostics.record_every=1",
        "snapshot.every=2",
        "device=cpu",
    )
    train(cfg, out_dir)


def _act_total(run_dir) -> float:
    snap = load_snapshot(list_snapshots(run_dir)[-1][1])
    return float(sum(v.sum() for k, v in snap.items() if k.startswith("act_hist/")))


@pytest.mark.slow
def test_two_process_gloo_run_one_event_file_and_summed_histograms(cache_dir, tmp_path):
    import torch.multiprocessing as mp

    single, multi = tmp_path / "single", tmp_path / "multi"
    _rank_main(0, 1, _free_port(), cache_dir, single)
    os.environ.pop("WORLD_SIZE", None)
    mp.start_processes(
        _rank_main,
        args=(2, _free_port(), cache_dir, multi),
        nprocs=2,
        start_method="spawn",
        join=True,
    )
    assert len(list(multi.glob("events.out.tfevents.*"))) == 1
    assert len(list(multi.glob("checkpoints/*.pt"))) == 1
    # Each rank sees batches of the same size, so the reduced histograms of the 2-rank run hold
    # exactly twice the values of the 1-rank run: the counts were summed across ranks.
    assert _act_total(single) > 0
    assert np.isclose(_act_total(multi), 2 * _act_total(single))
    state = torch.load(common.latest_checkpoint(multi), weights_only=True)
    assert len(state["rng"]) == 2  # one RNG state per rank
