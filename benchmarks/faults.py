"""Fault campaign against both training scripts (issue 16): signals at random points over several
seeds, SIGKILL, byte flips and truncation of checkpoints and their markers, missing keys, stale
temporary files, concurrent runs, resume with a changed config, bad config values, and torchrun
(a preempted job and a killed rank).

A case *survives* if the run completes correctly, or fails cleanly: an exit status the README
documents (1 Hydra config error, 2 bad input, 3 stopped, 75 preempted), a message saying why and
no Python traceback, and nothing lost (the newest valid checkpoint before the fault is still
there or superseded by a newer valid one; snapshots and videos intact).

    OMP_NUM_THREADS=1 nice -n 5 .venv/bin/python benchmarks/faults.py [--seeds 5] [--only CLASS]
        [--json out.json]

Prints one line per case and a table survived/total per class. Every subprocess is bounded by a
timeout; tiny configurations (those of tests/test_faults.py) keep a case to seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from experiments import common  # noqa: E402
from experiments.presets import GAN_TINY as _TINY  # noqa: E402

GAN = str(ROOT / "experiments" / "train_gan.py")
AE = str(ROOT / "experiments" / "train_autoencoder.py")
GAN_TINY = [
    "+exp=small",
    *_TINY,
    "diagnostics.every=1",
    "embed.enabled=false",
    "device=cpu",
]
AE_TINY = [
    "+exp=small",
    "train.steps_per_epoch=10",
    "frames.every=10",
    "checkpoint.every=10",
    "diagnostics.every=5",
    "diagnostics.record_every=5",
    "embed.enabled=false",
]
KIND = {GAN: "gan", AE: "autoencoder"}
TIMEOUT = 300
DOCUMENTED = {0, 1, 2, 3, 75}


def env(**extra) -> dict:
    return dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", **extra)


def base_args(script: str) -> list[str]:
    return GAN_TINY if script == GAN else AE_TINY


def length(script: str, n: int) -> list[str]:
    """Overrides for a run of ``n`` checkpoint intervals (GAN: 2 steps each; AE: 10-step epochs)."""
    if script == GAN:
        return [f"train.steps={2 * n}", "checkpoint.every=2"]
    return [f"train.n_epochs={n}"]


def steps_of(script: str, n: int) -> int:
    return 2 * n if script == GAN else 10 * n


@dataclass
class Res:
    rc: int
    out: str
    secs: float


def run(script: str, out_root: Path | None, *overrides: str, timeout=TIMEOUT, **env_extra) -> Res:
    cmd = [sys.executable, script]
    if out_root is not None:
        cmd.append(f"out_root={out_root}")
    t = time.monotonic()
    try:
        p = subprocess.run(
            [*cmd, *overrides],
            env=env(**env_extra),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
        )
        return Res(p.returncode, p.stdout, time.monotonic() - t)
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        return Res(-999, out + "\n<timed out>", time.monotonic() - t)


def start(script: str, out_root: Path, *overrides: str, **popen) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, script, f"out_root={out_root}", *base_args(script), *overrides],
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **popen,
    )


def finish(p: subprocess.Popen, timeout=TIMEOUT) -> Res:
    t = time.monotonic()
    try:
        out, _ = p.communicate(timeout=timeout)
        return Res(p.returncode, out, time.monotonic() - t)
    except subprocess.TimeoutExpired:
        p.kill()
        out, _ = p.communicate()
        return Res(-999, out + "\n<timed out>", time.monotonic() - t)


class Fail(AssertionError):
    pass


def check(cond: bool, why: str, res: Res | None = None) -> None:
    if not cond:
        tail = ""
        if res is not None:
            lines = [ln for ln in res.out.strip().splitlines() if ln.strip()]
            tail = f" [rc={res.rc}] " + " | ".join(lines[-4:])[-600:]
        raise Fail(why + tail)


def clean(res: Res, codes: set[int], msg: str | None = None) -> None:
    """A clean failure: a documented status, the message, no Python traceback."""
    check(res.rc in codes, f"exit {res.rc}, expected {sorted(codes)}", res)
    check("Traceback (most recent call last)" not in res.out, "a traceback", res)
    if msg is not None:
        check(msg in res.out, f"no message {msg!r}", res)


def completed(res: Res, run_dir: Path, step: int) -> None:
    check(res.rc == 0, "did not complete", res)
    s = json.loads((run_dir / "summary.json").read_text())
    check(s.get("status") == "completed" and s.get("step") == step, f"summary {s}", res)
    found = common.load_latest_checkpoint(run_dir)
    check(found is not None and found[1]["step"] == step, "no valid final checkpoint", res)


# ------------------------------------------------------------------------------ "nothing lost"
def inventory(run_dir: Path) -> dict:
    """The newest valid checkpoint and the snapshot/video files of a run."""
    try:
        found = common.load_latest_checkpoint(run_dir)
    except common.RunError:
        found = None
    files = sorted(
        str(p.relative_to(run_dir))
        for sub in ("snapshots", "videos")
        if (run_dir / sub).is_dir()
        for p in (run_dir / sub).iterdir()
        if not p.name.endswith(".tmp")
    )
    return {"newest": found[1]["step"] if found else None, "files": files}


def nothing_lost(before: dict, run_dir: Path) -> None:
    after = inventory(run_dir)
    if before["newest"] is not None:
        check(
            after["newest"] is not None and after["newest"] >= before["newest"],
            f"newest valid checkpoint {before['newest']} -> {after['newest']}",
        )
    gone = sorted(set(before["files"]) - set(after["files"]))
    check(not gone, f"files lost: {gone}")
    check(common.RunLock(run_dir).holder() is None, "run lock still held")


# ------------------------------------------------------------------------------ base runs
_BASES: dict[str, Path] = {}


def base_run(script: str, work: Path) -> Path:
    """A finished 2-checkpoint run of ``script`` (made once, copied by each case)."""
    if script not in _BASES:
        root = work / f"base_{KIND[script]}"
        res = run(script, root, *base_args(script), "run_name=base", *length(script, 2))
        d = root / KIND[script] / "base"
        completed(res, d, steps_of(script, 2))
        _BASES[script] = d
    return _BASES[script]


def copy_base(script: str, work: Path, name: str) -> Path:
    dst = work / name / KIND[script] / "base"
    shutil.copytree(base_run(script, work), dst)
    (dst / ".lock").unlink(missing_ok=True)
    return dst


def resume(script: str, run_dir: Path, n: int, *extra: str) -> Res:
    return run(script, None, f"resume={run_dir}", *length(script, n)[:1], *extra)


# ------------------------------------------------------------------------------ cases
@dataclass
class Case:
    cls: str
    name: str
    fn: Callable[[Path], None]
    result: str = ""
    ok: bool = False
    secs: float = 0.0
    extra: dict = field(default_factory=dict)


def wait_ckpts(run_dir: Path, k: int, proc: subprocess.Popen, timeout=240.0) -> bool:
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        found = [p for _, p in common.list_checkpoints(run_dir / "checkpoints")]
        if len([p for p in found if common.marker_path(p).is_file()]) >= k:
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.05)
    return False


def signal_case(script: str, seed: int, kill: bool = False) -> Callable[[Path], None]:
    """A long run signalled at a random point (during set-up, or a random time after its k-th
    checkpoint), then the same command again (a requeue) to a few steps later."""

    def case(work: Path) -> None:
        rng = random.Random(f"{KIND[script]}-{seed}-{kill}")
        sig = signal.SIGKILL if kill else rng.choice([signal.SIGUSR2, signal.SIGTERM])
        where = rng.choice(["setup", 1, 2, 3])
        delay = rng.uniform(0.5, 4.0) if where == "setup" else rng.uniform(0.0, 1.5)
        d = work / KIND[script] / "s"
        p = start(script, work, "run_name=s", *length(script, 400))
        if where != "setup":
            if not wait_ckpts(d, where, p):
                check(False, "no checkpoint before the signal", finish(p, 30))
        time.sleep(delay)
        before = inventory(d) if d.is_dir() else {"newest": None, "files": []}
        p.send_signal(sig)
        res = finish(p)
        case.extra = {"signal": sig.name, "where": where, "delay_s": round(delay, 2)}
        if kill:
            check(res.rc == -signal.SIGKILL, "not killed", res)
        else:
            check(res.rc == common.EXIT_PREEMPTED, "not preempted", res)
            s = json.loads((d / "summary.json").read_text())
            check(s["status"] == "preempted" and s["preempt"]["signal"] == sig.name, f"{s}", res)
            found = common.load_latest_checkpoint(d)
            if found is not None:
                check(found[1]["step"] == s["step"], f"saved {found[1]['step']} != {s['step']}")
        nothing_lost(before, d)
        now = inventory(d)["newest"] or 0
        n = now // steps_of(script, 1) + 2
        again = run(script, work, *base_args(script), "run_name=s", *length(script, n))
        completed(again, d, steps_of(script, n))
        if now:
            check(f"ckpt_{now:08d}.pt" in again.out, f"did not resume from step {now}", again)
        check(not list(d.rglob("*.tmp")), "stale *.tmp left")

    return case


def corrupt_case(script: str, how: str, seed: int) -> Callable[[Path], None]:
    def case(work: Path) -> None:
        rng = random.Random(f"{KIND[script]}-{how}-{seed}")
        d = copy_base(script, work, f"c_{how}_{seed}")
        ck = common.list_checkpoints(d / "checkpoints")
        (old_step, old), (new_step, new) = ck[-2], ck[-1]
        marker = common.marker_path(new)
        expect_fallback = True
        if how == "flip":
            b = bytearray(new.read_bytes())
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
            new.write_bytes(bytes(b))
            case.extra = {"offset": i, "size": len(b)}
        elif how == "truncate":
            b = new.read_bytes()
            n = rng.randrange(len(b))
            new.write_bytes(b[:n])
            case.extra = {"kept": n, "size": len(b)}
        elif how == "marker_flip":
            b = bytearray(marker.read_bytes())
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
            marker.write_bytes(bytes(b))
            expect_fallback = None  # a flip in a field that is not checked changes nothing
            case.extra = {"offset": i}
        elif how == "marker_truncate":
            marker.write_bytes(marker.read_bytes()[: rng.randrange(len(marker.read_bytes()))])
        elif how == "marker_removed":
            marker.unlink()
            expect_fallback = False  # an unmarked file loads unverified, with a warning
        elif how == "missing_key":
            import torch

            state = torch.load(new, weights_only=True)
            key = rng.choice(["G", "opt_D", "rng"] if script == GAN else ["model", "sampler"])
            del state[key]
            state.pop("complete")
            common.save_checkpoint(d / "checkpoints", new_step, state, n_keep=0)
            case.extra = {"key": key}
        elif how == "stale_tmp":
            (d / "checkpoints" / f"ckpt_{new_step + 2:08d}.pt.tmp").write_bytes(b"half")
            (d / "summary.json.tmp").write_bytes(b"{")
            expect_fallback = False
        elif how == "all":
            for _, p in ck:
                b = bytearray(p.read_bytes())
                b[rng.randrange(len(b))] ^= 0xFF
                p.write_bytes(bytes(b))
            before_files = sorted(p.name for p in (d / "checkpoints").iterdir())
            res = resume(script, d, 4)
            clean(res, {2}, f"none of its {len(ck)} checkpoints is valid")
            after = sorted(p.name for p in (d / "checkpoints").iterdir())
            check(after == before_files, f"checkpoint files changed: {before_files} -> {after}")
            return
        res = resume(script, d, 4)
        completed(res, d, steps_of(script, 4))
        if expect_fallback:
            check(f"resuming from {old}" in res.out, f"did not fall back to {old_step}", res)
            check("skipping invalid checkpoint" in res.out, "no warning", res)
        elif expect_fallback is False:
            check(f"resuming from {new}" in res.out, f"did not resume from {new_step}", res)
        check(not list(d.rglob("*.tmp")), "stale *.tmp left")

    return case


def concurrent_case(script: str, staggered: bool) -> Callable[[Path], None]:
    """Two runs with one run name: started together (both 3 intervals long), or the second
    while the first (a long one) is training; the second exits 2, the first is unharmed."""

    def case(work: Path) -> None:
        d = work / KIND[script] / "c"
        n = 400 if staggered else 3
        a = start(script, work, "run_name=c", *length(script, n))
        if staggered and not wait_ckpts(d, 1, a):
            check(False, "first run made no checkpoint", finish(a, 30))
        b = start(script, work, "run_name=c", *length(script, n))
        if staggered:
            rb = finish(b)
            clean(rb, {2}, "in use by another run")
            check(a.poll() is None, "first run ended before the second was refused")
            a.send_signal(signal.SIGTERM)
            ra = finish(a)
            check(ra.rc == common.EXIT_PREEMPTED, "first run not preempted cleanly", ra)
        else:
            ra, rb = finish(a), finish(b)
            rcs = sorted([ra.rc, rb.rc])
            check(rcs == [0, 2], f"exit codes {rcs}", ra if ra.rc else rb)
            clean(rb if rb.rc == 2 else ra, {2}, "in use by another run")
            completed(ra if ra.rc == 0 else rb, d, steps_of(script, n))
        from tests.gan_helpers import events

        evs = list(d.glob("events.out.tfevents.*"))
        check(len(evs) == 1, f"{len(evs)} event files")
        acc = events(d)
        for tag in acc.Tags()["scalars"]:
            st = [e.step for e in acc.Scalars(tag)]
            check(len(st) == len(set(st)), f"{tag}: duplicate points {st}")
        check(common.load_latest_checkpoint(d) is not None, "no valid checkpoint")

    return case


def resume_cfg_case(script: str, override: str, ok: bool, msg: str | None) -> Callable:
    def case(work: Path) -> None:
        d = copy_base(script, work, "r")
        cfg0 = (d / "config.yaml").read_text()
        ck0 = {p.name: p.read_bytes() for p in (d / "checkpoints").iterdir()}
        before = inventory(d)
        if ok:
            res = resume(script, d, 3, *([override] if override else []))
            completed(res, d, steps_of(script, 3))
            if override and "=" in override and not override.startswith("+"):
                key, val = override.split("=", 1)
                from omegaconf import OmegaConf

                got = OmegaConf.select(OmegaConf.load(d / "config.yaml"), key)
                check(str(got) == val, f"config.yaml has {key}={got}")
        else:
            res = run(script, None, f"resume={d}", override)
            clean(res, {2}, msg)
            check((d / "config.yaml").read_text() == cfg0, "config.yaml rewritten")
            ck1 = {p.name: p.read_bytes() for p in (d / "checkpoints").iterdir()}
            check(ck1 == ck0, "checkpoints changed")
        nothing_lost(before, d)

    return case


def bad_value_case(script: str, overrides: list[str], codes: set[int], msg: str | None,
                   nothing_written: bool = True) -> Callable:  # fmt: skip
    def case(work: Path) -> None:
        ov = [o.replace("{work}", str(work)) for o in overrides]
        if any("{gan_run}" in o or "{ae_run}" in o for o in overrides):
            other = copy_base(GAN if "{gan_run}" in str(overrides) else AE, work, "other")
            before = sorted(str(p) for p in other.rglob("*"))
            ov = [o.replace("{gan_run}", str(other)).replace("{ae_run}", str(other)) for o in ov]
        if "{file}" in str(overrides):
            (work / "file.pt").write_bytes(b"x")
            ov = [o.replace("{file}", str(work / "file.pt")) for o in ov]
        out = work / "o"
        res = run(script, out, *base_args(script), "run_name=v", *length(script, 1), *ov)
        clean(res, codes, msg)
        lines = [ln for ln in res.out.strip().splitlines() if ln.strip()]
        if res.rc != 0:
            check(len(lines) <= 6, f"{len(lines)} lines of output for a refusal", res)
        if nothing_written:
            check(not out.exists() or not any(out.rglob("*.pt")), "checkpoints written")
        if "{gan_run}" in str(overrides) or "{ae_run}" in str(overrides):
            check(sorted(str(p) for p in other.rglob("*")) == before, "the other run was changed")

    return case


def torchrun_case(kind: str) -> Callable[[Path], None]:
    def case(work: Path) -> None:
        from tests.test_torchrun import workers

        d = work / "gan" / "t"
        cmd = [sys.executable, "-m", "experiments.distributed", "--standalone"]
        cmd += ["--nproc_per_node=2", GAN, f"out_root={work}", *GAN_TINY, "run_name=t"]
        p = subprocess.Popen(
            [*cmd, *length(GAN, 400)],
            env=env(FIELDSCOPE_DIST_TIMEOUT_S="60"),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
            cwd=ROOT,
        )
        try:
            if not wait_ckpts(d, 1, p):
                check(False, "no checkpoint", finish(p, 30))
            before = inventory(d)
            ranks = workers(p.pid)
            check(sorted(ranks) == [0, 1], f"workers {ranks}")
            if kind == "killed_rank":
                os.kill(ranks[1], signal.SIGKILL)
            else:
                p.send_signal(signal.SIGUSR2)
            res = finish(p)
        finally:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
        if kind == "killed_rank":
            check(res.rc not in (0, 75, -999), "a killed rank must end the job non-zero", res)
        else:
            check(res.rc == 75, "not 75", res)
        nothing_lost(before, d)

    return case


COPYING = ("corrupt", "missing_key", "resume_config", "bad_value")


def cases(n_seeds: int) -> list[Case]:
    out: list[Case] = []
    for script, s in ((GAN, "gan"), (AE, "ae")):
        for seed in range(n_seeds):
            out.append(Case("signal", f"{s} seed {seed}", signal_case(script, seed)))
        for seed in range(2):
            out.append(Case("sigkill", f"{s} seed {seed}", signal_case(script, seed, kill=True)))
        for how, seeds in (("flip", 3), ("truncate", 2), ("marker_flip", 1)):
            for seed in range(seeds):
                out.append(Case("corrupt", f"{s} {how} {seed}", corrupt_case(script, how, seed)))
        for how in ("marker_truncate", "marker_removed", "all", "stale_tmp"):
            out.append(Case("corrupt", f"{s} {how}", corrupt_case(script, how, 0)))
        out.append(Case("missing_key", f"{s}", corrupt_case(script, "missing_key", 0)))
        for stag in (False, True):
            name = f"{s} {'staggered' if stag else 'simultaneous'}"
            out.append(Case("concurrent", name, concurrent_case(script, stag)))
    gan_resume = [
        ("train.lr_g=0.5", False, "train.lr_g=0.5 (the run has 0.001)"),
        ("model.g.chan_base=16", False, "model.g.chan_base=16"),
        ("seed=7", False, "seed=7"),
        ("data.crop=[16,16,16]", False, "data.crop"),
        ("", True, None),  # train.steps alone
        ("diagnostics.every=2", True, None),
        ("+exp=small", True, None),  # the overlay again: ignored with a warning
    ]
    ae_resume = [
        ("optim.lr=0.5", False, "optim.lr=0.5"),
        ("model.n_hidden=7", False, "model.n_hidden=7"),
        ("seed=7", False, "seed=7"),
        ("", True, None),
        ("diagnostics.every=2", True, None),
    ]
    for script, s, table in ((GAN, "gan", gan_resume), (AE, "ae", ae_resume)):
        for ov, ok, msg in table:
            name = f"{s} {ov or 'steps only'}"
            out.append(Case("resume_config", name, resume_cfg_case(script, ov, ok, msg)))
    common_bad = [
        (["seed=-1"], {2}, "seed=-1"),
        (["device=cuda"], {2}, "device=cuda"),
        (["run_name=my run"], {2}, "run_name=my-run"),
        (["run_name=../x"], {2}, "not allowed"),
        (["resume={work}/missing"], {2}, "no such run directory"),
        (["resume={file}"], {2}, "is a file"),
        (["nosuchkey=1"], {1}, "nosuchkey"),
        (["preempt.signal=SIGKILL"], {2}, "preempt.signal"),
        (["checkpoint.every=0"], {2}, "checkpoint.every"),
        (["diagnostics.every=0"], {2}, "diagnostics.every"),
        (["checkpoint.n_keep=-1"], {0, 2}, None, False),  # keeps all: may run
    ]
    gan_bad = [
        *common_bad,
        (["resume={ae_run}"], {2}, "autoencoder script"),
        (["data.val_fraction=1.0"], {2}, "val_fraction"),
        (["train.batch_size=0"], {2}, "batch_size"),
        (["train.steps=-1"], {2}, "train.steps"),
    ]
    ae_bad = [
        *common_bad,
        (["resume={gan_run}"], {2}, "gan script"),
        (["train.steps_per_epoch=0"], {2}, "steps_per_epoch"),
        (["train.n_epochs=-1"], {2}, "n_epochs"),
    ]
    for script, s, table in ((GAN, "gan", gan_bad), (AE, "ae", ae_bad)):
        for ov, codes, msg, *written in table:  # a 4th item False: may run and write
            fn = bad_value_case(script, ov, codes, msg, *written)
            out.append(Case("bad_value", f"{s} {' '.join(ov)}", fn))
    out.append(Case("torchrun", "preempted job", torchrun_case("preempt")))
    out.append(Case("torchrun", "killed rank", torchrun_case("killed_rank")))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seeds", type=int, default=5, help="signal cases per script")
    ap.add_argument("--only", action="append", help="run only these classes (repeatable)")
    ap.add_argument("--match", help="run only cases whose 'class name' contains this")
    ap.add_argument("--json", help="write every case's result here")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--jobs", type=int, default=1, help="cases at a time (each is 1-2 processes)")
    args = ap.parse_args()
    todo = [c for c in cases(args.seeds) if not args.only or c.cls in args.only]
    if args.match:
        todo = [c for c in todo if args.match in f"{c.cls} {c.name}"]
    work = Path(tempfile.mkdtemp(prefix="faults-"))
    print(f"{len(todo)} cases, {args.jobs} at a time, work directory {work}", flush=True)
    t0 = time.monotonic()
    for script in (GAN, AE):  # the base runs the corruption and resume cases copy, made once
        prefix = "gan " if script == GAN else "ae "
        if any(c.name.startswith(prefix) for c in todo if c.cls in COPYING):
            base_run(script, work)
    done = [0]
    lock = threading.Lock()

    def one(i: int, c: Case) -> None:
        d = work / f"case{i:03d}"
        d.mkdir()
        t = time.monotonic()
        try:
            c.fn(d)
            c.ok, c.result = True, "survived"
        except Fail as e:
            c.result = f"FAILED: {e}"
        except Exception as e:  # noqa: BLE001 - the harness itself broke on this case
            c.result = f"FAILED (harness): {type(e).__name__}: {e} {traceback.format_exc()[-400:]}"
        c.secs = time.monotonic() - t
        c.extra = dict(getattr(c.fn, "extra", {}) or {})
        extra = f" {c.extra}" if c.extra else ""
        with lock:
            done[0] += 1
            print(f"[{done[0]:3d}/{len(todo)}] {c.cls:13s} {c.name:38s} {c.secs:6.1f}s "
                  f"{c.result}{extra}", flush=True)  # fmt: skip

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        list(pool.map(lambda ic: one(*ic), enumerate(todo)))
    total = time.monotonic() - t0
    print(f"\n{'class':14s} survived/total")
    classes = list(dict.fromkeys(c.cls for c in todo))
    for k in classes:
        group = [c for c in todo if c.cls == k]
        print(f"{k:14s} {sum(c.ok for c in group):3d}/{len(group)}")
    print(f"{'all':14s} {sum(c.ok for c in todo):3d}/{len(todo)}   ({total / 60:.1f} min)")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                [
                    {
                        "class": c.cls,
                        "name": c.name,
                        "ok": c.ok,
                        "result": c.result,
                        "secs": round(c.secs, 1),
                        **c.extra,
                    }  # fmt: skip
                    for c in todo
                ],
                indent=1,
            )
        )
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    sys.exit(0 if all(c.ok for c in todo) else 1)


if __name__ == "__main__":
    main()
