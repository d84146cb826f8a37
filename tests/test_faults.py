"""The fault campaign's cases as tests: checkpoint integrity, the run lock, resume semantics,
preemption of both scripts, and bad run targets refused before anything is written.

The long sweep (signals at random points over many seeds, every fault class) is
``benchmarks/faults.py``; each subprocess here has a timeout so nothing hangs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from experiments import common
from tests.gan_helpers import ROOT, TINY
from tests.test_train_autoencoder import SHORT

pytestmark = pytest.mark.timeout(600)

GAN = str(ROOT / "experiments" / "train_gan.py")
AE = str(ROOT / "experiments" / "train_autoencoder.py")
AE_SHORT = ["+exp=small", *SHORT, "embed.enabled=false"]


def cli(script, out_root, *overrides, timeout=300):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    base = [f"out_root={out_root}"]
    if script == GAN:
        base += ["+exp=small", *TINY, "diagnostics.every=1", "embed.enabled=false"]
    out = subprocess.run(
        [sys.executable, script, *base, *overrides],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )
    out.stderr = out.stdout + out.stderr  # Hydra's logging writes to stdout
    return out


# ------------------------------------------------------------------------------ checkpoints
def _three(tmp_path):
    ck = tmp_path / "checkpoints"
    for s in (1, 2, 3):
        common.save_checkpoint(ck, s, {"step": s, "w": torch.arange(1000.0) * s}, n_keep=5)
    return ck


def test_byte_flip_is_detected_and_falls_back(tmp_path, caplog):
    ck = _three(tmp_path)
    p = ck / "ckpt_00000003.pt"
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit in the tensor data: still loads with torch.load
    p.write_bytes(bytes(data))
    with pytest.raises(common.CheckpointError, match="SHA-256"):
        common.load_checkpoint(p)
    path, state = common.load_latest_checkpoint(tmp_path)
    assert path.name == "ckpt_00000002.pt" and state["step"] == 2
    assert "skipping invalid checkpoint" in caplog.text and "falling back" in caplog.text


def test_truncation_and_missing_keys_fall_back(tmp_path):
    ck = _three(tmp_path)
    p3 = ck / "ckpt_00000003.pt"
    p3.write_bytes(p3.read_bytes()[:100])
    with pytest.raises(common.CheckpointError, match="truncated"):
        common.load_checkpoint(p3)
    # loads, digest fine, but lacks a key the script needs: not a KeyError, a fallback
    common.save_checkpoint(ck, 4, {"step": 4}, n_keep=5)
    path, _ = common.load_latest_checkpoint(tmp_path, required=("step", "w"))
    assert path.name == "ckpt_00000002.pt"


def test_none_valid_refuses_to_start_over(tmp_path):
    ck = _three(tmp_path)
    for _, p in common.list_checkpoints(ck):
        p.write_bytes(b"\0" * 10)
    with pytest.raises(common.RunError, match="none of its 3 checkpoints is valid"):
        common.load_latest_checkpoint(tmp_path)


def test_rotation_never_deletes_the_newest_valid(tmp_path):
    ck = tmp_path / "checkpoints"
    for s in (100, 200, 300):  # a later, corrupt history
        common.save_checkpoint(ck, s, {"step": s}, n_keep=3)
        (ck / f"ckpt_{s:08d}.pt").write_bytes(b"garbage")
    common.save_checkpoint(ck, 50, {"step": 50}, n_keep=3)  # the old rotation deleted this one
    assert [s for s, _ in common.list_checkpoints(ck)] == [50]
    assert sorted(p.name for p in ck.glob("*.corrupt")) == [
        f"ckpt_{s:08d}.pt.corrupt" for s in (100, 200, 300)
    ]
    assert common.load_latest_checkpoint(tmp_path)[1]["step"] == 50


def test_n_keep_counts_valid_ones(tmp_path):
    for s in range(1, 6):
        common.save_checkpoint(tmp_path, s, {"step": s}, n_keep=2)
    assert [s for s, _ in common.list_checkpoints(tmp_path)] == [4, 5]
    assert sorted(p.name for p in tmp_path.glob("*.done")) == [
        "ckpt_00000004.pt.done",
        "ckpt_00000005.pt.done",
    ]


# ------------------------------------------------------------------------------ lock, targets
def test_lock_names_holder_and_refuses_second(tmp_path):
    lock = common.RunLock(tmp_path).acquire()
    try:
        with pytest.raises(common.RunError, match=f"pid {os.getpid()}"):
            common.RunLock(tmp_path).acquire()
        assert str(os.getpid()) in common.RunLock(tmp_path).holder()
    finally:
        lock.release()
    assert common.RunLock(tmp_path).holder() is None
    common.RunLock(tmp_path).acquire().release()


def test_stale_tmp_removed(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "ckpt_00000002.pt.tmp").write_bytes(b"half")
    (tmp_path / "summary.json.tmp").write_bytes(b"half")
    assert len(common.clean_stale_tmp(tmp_path)) == 2
    assert not list(tmp_path.rglob("*.tmp"))


def test_sweep_subdir_stays_one_component():
    assert "/" not in common.safe_subdir("data.dir=../../etc,seed=1")


@pytest.mark.parametrize("script", [GAN, AE])
def test_cli_bad_targets_exit_2_writing_nothing(script, tmp_path):
    missing = tmp_path / "missing"
    out = cli(script, tmp_path / "o", f"resume={missing}")
    assert out.returncode == 2 and "no such run directory" in out.stderr
    assert not missing.exists() and not (tmp_path / "o").exists()
    f = tmp_path / "file.pt"
    f.write_bytes(b"x")
    out = cli(script, tmp_path / "o", f"resume={f}")
    assert out.returncode == 2 and "is a file" in out.stderr
    out = cli(script, tmp_path / "o", "run_name=my run")
    assert out.returncode == 2 and "run_name=my-run" in out.stderr
    assert len(out.stderr.strip().splitlines()) <= 3 and not (tmp_path / "o").exists()


def test_cli_resume_other_scripts_run_exit_2(tmp_path):
    run = tmp_path / "gan_run"
    run.mkdir()
    (run / "config.yaml").write_text("experiment: gan\n")
    before = sorted(p.name for p in run.rglob("*"))
    out = cli(AE, tmp_path / "o", f"resume={run}")
    assert out.returncode == 2 and "gan script" in out.stderr
    assert sorted(p.name for p in run.rglob("*")) == before  # no .hydra, no normalisation.json


@pytest.mark.parametrize(
    "override,msg",
    [
        ("seed=-1", "seed"),
        ("device=cuda", "device=cuda"),
        ("data.val_fraction=1.0", "val_fraction"),
    ],
)
def test_cli_bad_values_exit_2_before_training(override, msg, tmp_path):
    if override == "device=cuda" and torch.cuda.is_available():
        pytest.skip("CUDA present")
    out = cli(GAN, tmp_path, "run_name=x", "train.steps=2", override)
    assert out.returncode == 2 and msg in out.stderr, out.stderr[-1500:]
    assert not list((tmp_path / "gan" / "x").glob("checkpoints/*.pt"))


def test_cli_second_run_on_locked_dir_exits_2(tmp_path):
    run = tmp_path / "gan" / "busy"
    run.mkdir(parents=True)
    lock = common.RunLock(run).acquire()
    try:
        out = cli(GAN, tmp_path, "run_name=busy", "train.steps=2")
    finally:
        lock.release()
    assert out.returncode == 2 and "in use by another run" in out.stderr
    assert not (run / ".hydra").exists()


# ------------------------------------------------------------------------------ runs
def test_gan_all_checkpoints_corrupt_exits_2(tmp_path):
    first = cli(GAN, tmp_path, "run_name=c", "train.steps=4", "checkpoint.every=2")
    assert first.returncode == 0, first.stderr[-2000:]
    run = tmp_path / "gan" / "c"
    for _, p in common.list_checkpoints(run / "checkpoints"):
        b = bytearray(p.read_bytes())
        b[len(b) // 2] ^= 0xFF
        p.write_bytes(bytes(b))
    again = cli(GAN, tmp_path, "run_name=c", "train.steps=6", "checkpoint.every=2")
    assert again.returncode == 2 and "none of its 2 checkpoints is valid" in again.stderr


def test_gan_resume_uses_saved_config_and_refuses_lr(tmp_path):
    # +exp=small sizes are not repeated on resume: the saved config is the base.
    first = cli(GAN, tmp_path, "run_name=r", "train.steps=2", "checkpoint.every=2")
    assert first.returncode == 0, first.stderr[-2000:]
    run = tmp_path / "gan" / "r"
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    go = [sys.executable, GAN, f"resume={run}"]
    bad = subprocess.run(
        [*go, "train.lr_g=0.5"], capture_output=True, text=True, env=env, timeout=300
    )
    assert bad.returncode == 2 and "train.lr_g=0.5" in bad.stdout + bad.stderr, bad.stdout[-1500:]
    ok = subprocess.run(
        [*go, "train.steps=3"], capture_output=True, text=True, env=env, timeout=300
    )
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert json.loads((run / "summary.json").read_text())["step"] == 3


def test_autoencoder_preemption_saves_exits_75_and_resumes_exactly(tmp_path):
    pre = subprocess.Popen(
        [sys.executable, AE, f"out_root={tmp_path}", "run_name=p", *AE_SHORT, "train.n_epochs=400"],
        env=dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    run = tmp_path / "autoencoder" / "p"
    import time

    t_end = time.time() + 240
    while not common.list_checkpoints(run / "checkpoints") and time.time() < t_end:
        time.sleep(0.2)
    pre.send_signal(15)  # SIGTERM: the autoencoder used to die with 143
    _, err = pre.communicate(timeout=240)
    assert pre.returncode == common.EXIT_PREEMPTED, err[-2000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "preempted" and summary["preempt"]["signal"] == "SIGTERM"
    step = summary["step"]
    assert common.load_latest_checkpoint(run)[1]["step"] == step


# ------------------------------------------------------------------------------ README
def test_readme_resume_keys_match_the_code():
    """The README's list of keys that may change on resume is the code's list, both ways."""
    import re

    from experiments.train_autoencoder import AE_RESUME_MUTABLE
    from experiments.train_gan import GAN_RESUME_MUTABLE

    text = (ROOT / "README.md").read_text()
    listed = re.search(r"<!-- resume-free -->(.*?)<!-- /resume-free -->", text, re.S).group(1)
    keys = [k.removesuffix(".*") for k in re.findall(r"`([^`]+)`", listed)]
    from_cli = {"resume", "run_name", "out_root"}  # always the new command line's, listed apart
    code = set(common.RESUME_FREE) - from_cli
    assert sorted(keys) == sorted(code | set(GAN_RESUME_MUTABLE) | set(AE_RESUME_MUTABLE))
    assert "`train.steps` (GAN)" in listed and "`train.n_epochs` (autoencoder)" in listed
    assert GAN_RESUME_MUTABLE == ("train.steps",) and AE_RESUME_MUTABLE == ("train.n_epochs",)
    # The keys always taken from the new command line, as the README names them.
    current = re.search(r"`resume`, `run_name`, `out_root`, (.*?) always come", text, re.S)
    named = from_cli | set(re.findall(r"`([^`]+)`", current.group(1)))
    assert named == set(common.RESUME_CURRENT) | from_cli


def test_resume_refusal_message_as_documented(tmp_path):
    """The refusal names the key and both values, lists what may change, and says what to do."""
    from omegaconf import OmegaConf

    saved = OmegaConf.create({"train": {"lr_g": 0.001, "steps": 2}, "log": {"every": 1}})
    (tmp_path / "config.yaml").write_text(OmegaConf.to_yaml(saved))
    now = OmegaConf.create({"train": {"lr_g": 0.5, "steps": 2}, "log": {"every": 1}})
    with pytest.raises(common.RunError) as e:
        common.resume_config(now, tmp_path, mutable=("train.steps",), overrides=["train.lr_g=0.5"])
    msg = str(e.value)
    assert msg.startswith(f"resume of {tmp_path} refused: train.lr_g=0.5 (the run has 0.001). ")
    assert "Only checkpoint, data.cache_dir, " in msg and "train.steps" in msg
    assert msg.endswith("start a new run (another run_name) to change the others")
    # an allowed key changes and the rest comes from the saved config
    now2 = OmegaConf.create({"train": {"lr_g": 0.001, "steps": 9}, "log": {"every": 5}})
    got = common.resume_config(
        now2, tmp_path, mutable=("train.steps",), overrides=["train.steps=9"]
    )
    assert got.train.steps == 9 and got.log.every == 1  # log.every not on the command line


# ------------------------------------------------------------------------------ early signals
def test_signal_before_training_is_kept_for_preemption():
    """A signal caught by ``early_signals`` (while the script imports) becomes a preemption
    request when training starts; the default action comes back afterwards."""
    import signal

    from experiments import early_signals

    early_signals.install()
    try:
        assert signal.getsignal(signal.SIGUSR2) is early_signals._keep
        os.kill(os.getpid(), signal.SIGUSR2)  # would kill the process with the default action
        with common.Preemption("SIGUSR2") as p:
            assert p.requested and p.received_name == "SIGUSR2"
        assert signal.getsignal(signal.SIGUSR2) == signal.SIG_DFL
    finally:
        early_signals.take()
    # a handler someone else installed (submitit's) is left alone
    prev = signal.signal(signal.SIGUSR1, lambda *a: None)
    try:
        early_signals.install()
        assert signal.getsignal(signal.SIGUSR1) is not early_signals._keep
    finally:
        early_signals.take()
        signal.signal(signal.SIGUSR1, prev)


@pytest.mark.parametrize("script", [GAN, AE])
def test_signal_while_the_script_starts_exits_75(script, tmp_path):
    """SIGUSR2 about a second after the start (imports, config composition): it used to kill
    the process (exit -12, nothing in summary.json); now the run ends preempted, exit 75."""
    import signal
    import time

    extra = [] if script == GAN else AE_SHORT
    cmd = [sys.executable, script, f"out_root={tmp_path}", "run_name=e", *extra]
    if script == GAN:
        cmd += ["+exp=small", *TINY, "embed.enabled=false", "train.steps=400"]
    p = subprocess.Popen(
        cmd,
        env=dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    time.sleep(1.0)
    p.send_signal(signal.SIGUSR2)
    out, _ = p.communicate(timeout=300)
    assert p.returncode == common.EXIT_PREEMPTED, out[-2000:]
    run = tmp_path / ("gan" if script == GAN else "autoencoder") / "e"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "preempted" and summary["preempt"]["signal"] == "SIGUSR2"


def test_gan_interval_means_after_mid_interval_preemption_equal_straight_run(tmp_path):
    """Preempted at step 3 of a 4-step logging interval and resumed: the means logged at steps 4
    and 8 equal those of an uninterrupted run (the interval sums travel in the checkpoint)."""
    from tests.gan_helpers import events

    common_args = ["diagnostics.every=4", "checkpoint.every=100", "train.steps=8"]
    straight = cli(GAN, tmp_path / "a", "run_name=s", *common_args)
    assert straight.returncode == 0, straight.stderr[-2000:]
    pre = cli(GAN, tmp_path / "b", "run_name=s", *common_args, "preempt.self_signal_step=3")
    assert pre.returncode == common.EXIT_PREEMPTED, pre.stderr[-2000:]
    again = cli(GAN, tmp_path / "b", "run_name=s", *common_args)
    assert again.returncode == 0 and "resuming from" in again.stderr, again.stderr[-2000:]
    a, b = events(tmp_path / "a" / "gan" / "s"), events(tmp_path / "b" / "gan" / "s")
    tags = [t for t in a.Tags()["scalars"] if t.startswith("loss/")]
    assert {"loss/D", "loss/G"} <= set(tags)
    for tag in tags:
        va = [(e.step, e.value) for e in a.Scalars(tag)]
        vb = [(e.step, e.value) for e in b.Scalars(tag)]
        assert [s for s, _ in va] == [4, 8] and va == vb, tag


def test_exit_codes_come_from_explicit_error_types(monkeypatch):
    """Bad input raised on purpose is exit 2 in one line; a bare ValueError from inside
    training is a bug and keeps its traceback (it propagates; Hydra exits 1)."""
    from experiments.data.errors import DataError, MissingFileError
    from experiments.schema import ConfigError

    monkeypatch.delenv(common.EXIT_DIR_ENV, raising=False)

    def raising(e):
        def fn():
            raise e

        return fn

    for err, code in [
        (ConfigError("train.steps=0"), common.EXIT_BAD_INPUT),
        (DataError("bad file"), common.EXIT_BAD_INPUT),
        (MissingFileError("x.nc not found"), common.EXIT_BAD_INPUT),
        (common.RunError("locked"), common.EXIT_BAD_INPUT),
        (common.StopTraining("nan"), common.EXIT_STOPPED),
    ]:
        with pytest.raises(SystemExit) as e:
            common.run_main(raising(err))
        assert e.value.code == code, err
    with pytest.raises(SystemExit) as e:
        common.run_main(lambda: {"exit_code": common.EXIT_PREEMPTED})
    assert e.value.code == common.EXIT_PREEMPTED
    for bug in (ValueError("shape mismatch inside training"), KeyError("oops")):
        with pytest.raises(type(bug)):
            common.run_main(raising(bug))
