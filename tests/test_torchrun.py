"""Preemption and a killed rank under torchrun (gloo, 2 CPU processes, the tiny GAN), through
``python -m experiments.distributed``: the signal reaches every worker, the job exits 75 with a
durable checkpoint and resumes; a rank killed with SIGKILL ends the job non-zero within the
timeouts with the newest valid checkpoint intact. Every subprocess has a timeout."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch.distributed as dist

from experiments import common, distributed
from tests.gan_helpers import ROOT, TINY

pytestmark = [
    pytest.mark.timeout(600),
    pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not available"),
]

GAN = str(ROOT / "experiments" / "train_gan.py")
AE = str(ROOT / "experiments" / "train_autoencoder.py")
GAN_ARGS = ["+exp=small", *TINY, "diagnostics.every=1", "embed.enabled=false", "device=cpu"]


def env(**extra):
    return dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", **extra)


def launch(out_root, *overrides, script=GAN, nproc=2, **kw):
    args = GAN_ARGS if script == GAN else []
    cmd = [sys.executable, "-m", "experiments.distributed", "--standalone"]
    cmd += [f"--nproc_per_node={nproc}", script, f"out_root={out_root}", *args, *overrides]
    return subprocess.Popen(
        cmd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw
    )


def start_job(cmd: list[str]):
    """``cmd`` in its own session (killable with its workers), a 60 s collective timeout."""
    return subprocess.Popen(
        cmd,
        env=env(**{distributed.TIMEOUT_ENV: "60"}),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def wait_for_checkpoint(run: Path, proc, timeout=300.0) -> int:
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        found = common.list_checkpoints(run / "checkpoints")
        if found and common.marker_path(found[-1][1]).is_file():
            return found[-1][0]
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        time.sleep(0.2)
    raise AssertionError("no checkpoint within the timeout")


def workers(parent_pid: int) -> dict[int, int]:
    """``{RANK: pid}`` of the training processes below ``parent_pid`` (read from /proc)."""
    out = {}
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            cmd = (p / "cmdline").read_bytes().split(b"\0")
            environ = dict(
                kv.split(b"=", 1) for kv in (p / "environ").read_bytes().split(b"\0") if b"=" in kv
            )
        except OSError:
            continue
        if any(c.endswith(b"train_gan.py") for c in cmd) and b"RANK" in environ:
            ppid, pid = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1]), int(p.name)
            chain = {ppid}
            try:
                chain.add(int((Path("/proc") / str(ppid) / "stat").read_text().split()[3]))
            except OSError:
                pass
            if parent_pid in chain:
                out[int(environ[b"RANK"])] = pid
    return out


@pytest.mark.parametrize("target", ["launcher", "every_process"])
def test_signal_reaches_workers_exit_75_durable_then_resume(tmp_path, target):
    """``launcher``: SIGUSR2 to the launcher alone (Slurm ``--signal=B:USR2``); ``every_process``:
    SIGUSR2 to the whole process group (Slurm ``--signal=USR2``: torchrun gets it too)."""
    run = tmp_path / "gan" / "t"
    proc = launch(tmp_path, "run_name=t", "train.steps=2000", "checkpoint.every=2",
                  start_new_session=True)  # fmt: skip
    try:
        first = wait_for_checkpoint(run, proc)
        assert len(workers(proc.pid)) == 2
        if target == "launcher":
            proc.send_signal(signal.SIGUSR2)
        else:
            os.killpg(proc.pid, signal.SIGUSR2)
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == common.EXIT_PREEMPTED, out[-3000:]
    assert "ranks reported [75, 75]" in out, out[-2000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "preempted"
    # the launcher passes SIGTERM on; sent to every process, the workers see SIGUSR2 first
    assert summary["preempt"]["signal"] in (
        {"SIGTERM"} if target == "launcher" else {"SIGUSR2", "SIGTERM"}
    )
    step = summary["step"]
    assert step >= first
    path, state = common.load_latest_checkpoint(run)  # digest verified
    assert path.name == f"ckpt_{step:08d}.pt" and len(state["rng"]) == 2
    assert common.RunLock(run).holder() is None
    # Requeue: the same command resumes from the preemption checkpoint.
    again = launch(tmp_path, "run_name=t", f"train.steps={step + 2}", "checkpoint.every=2")
    out2, _ = again.communicate(timeout=300)
    assert again.returncode == 0, out2[-3000:]
    assert f"resuming from {path}" in out2
    assert json.loads((run / "summary.json").read_text())["step"] == step + 2


def test_killed_rank_ends_the_job_non_zero_checkpoint_intact(tmp_path):
    run = tmp_path / "gan" / "k"
    cmd = [sys.executable, "-m", "experiments.distributed", "--standalone", "--nproc_per_node=2"]
    cmd += [GAN, f"out_root={tmp_path}", *GAN_ARGS, "run_name=k", "train.steps=2000"]
    proc = start_job([*cmd, "checkpoint.every=3"])
    try:
        wait_for_checkpoint(run, proc)
        ranks = workers(proc.pid)
        assert sorted(ranks) == [0, 1]
        os.kill(ranks[1], signal.SIGKILL)
        out, _ = proc.communicate(timeout=300)  # bounded: torchrun's shutdown and the gloo timeout
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode not in (0, common.EXIT_PREEMPTED), out[-3000:]
    _, state = common.load_latest_checkpoint(run)  # the newest valid one, digest verified
    newest = common.list_checkpoints(run / "checkpoints")[-1][0]
    assert state["step"] == newest and state["step"] % 3 == 0
    assert common.RunLock(run).holder() is None
    assert json.loads((run / "summary.json").read_text())["status"] in ("failed", "running")


def test_autoencoder_under_torchrun_refused_exit_2(tmp_path):
    proc = launch(tmp_path, "run_name=a", "+exp=small", script=AE)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == common.EXIT_BAD_INPUT, out[-3000:]
    assert "runs in one process" in out and "ranks reported [2, 2]" in out
    assert not list((tmp_path / "autoencoder" / "a").glob("checkpoints/*"))


def can_set_hostname() -> bool:
    try:
        return subprocess.run(["unshare", "--uts", "hostname", "x"], timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.skipif(not can_set_hostname(), reason="needs unshare --uts (root) to set a hostname")
def test_standalone_job_runs_where_the_hostname_does_not_resolve(tmp_path):
    """CI runners and containers often have a hostname that does not resolve; plain torchrun
    then gives the workers that name as MASTER_ADDR and every rank retries its store connection
    until the timeout. Under ``--standalone`` the launcher binds to loopback instead."""
    inner = [sys.executable, "-m", "experiments.distributed", "--standalone", "--nproc_per_node=2"]
    inner += [GAN, f"out_root={tmp_path}", *GAN_ARGS, "run_name=h", "train.steps=2"]
    script = 'hostname fieldscope-unresolvable-host && exec "$@"'
    proc = start_job(["unshare", "--uts", "sh", "-c", script, "sh", *inner])
    try:
        out, _ = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:  # the whole job, torchrun's workers included
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, out[-3000:]
    assert (
        json.loads((tmp_path / "gan" / "h" / "summary.json").read_text())["status"] == "completed"
    )


def test_torchrun_defaults():
    d = distributed.torchrun_defaults
    got = d(["--standalone", "--nproc_per_node=2", "train.py", "--local-addr=x"])
    assert got[:4] == [
        "--shutdown-timeout",
        str(distributed.SHUTDOWN_TIMEOUT_S),
        "--local-addr",
        "127.0.0.1",
    ]  # fmt: skip  (the script's own --local-addr is not torchrun's)
    assert "--local-addr" not in d(["--standalone", "--local_addr=10.0.0.2", "train.py"])[:2]
    multi = d(["--nnodes=2", "--rdzv-endpoint=head:29500", "train.py"])
    assert "--local-addr" not in multi and multi[:2] == ["--shutdown-timeout",
                                                         str(distributed.SHUTDOWN_TIMEOUT_S)]  # fmt: skip
    assert d(["--shutdown-timeout=5", "-m", "pkg"]) == ["--shutdown-timeout=5", "-m", "pkg"]


def test_combine_exit_codes():
    c = distributed.combine_exit_codes
    assert c([0, 0], 0, signalled=False) == 0
    assert c([75, 75], 1, signalled=False) == 75  # torchrun says 1; the ranks say requeue
    assert c([75], 1, signalled=True) == 75  # the other rank was killed after the barrier
    assert c([], 1, signalled=True) == 75  # signalled before any rank was running
    assert c([2, 1], 1, signalled=False) == 2  # the cause, not the peer's broken collective
    assert c([3, 3], 1, signalled=False) == 3
    assert c([1], 1, signalled=False) == 1  # a killed rank: non-zero, never 75
    assert c([], -9, signalled=False) == 137


def test_other_ranks_accept_their_own_rank_0s_lock(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job-a")
    monkeypatch.setenv("RANK", "0")
    lock = common.RunLock(tmp_path).acquire()
    try:
        monkeypatch.setenv("RANK", "1")
        common.check_run_target(tmp_path, "gan", resume=False)  # rank 1 of the same job
        monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job-b")
        with pytest.raises(common.RunError, match="in use by another run"):
            common.check_run_target(tmp_path, "gan", resume=False)
        monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job-a")
        monkeypatch.setenv("RANK", "0")  # a rank 0 never shares a lock
        with pytest.raises(common.RunError, match="in use by another run"):
            common.check_run_target(tmp_path, "gan", resume=False)
    finally:
        lock.release()
