"""torchrun support: process group set-up, the rank's device, and agreement across ranks."""

from __future__ import annotations

import dataclasses
import datetime
import os

import torch
import torch.distributed as dist

TIMEOUT_ENV = "FIELDSCOPE_DIST_TIMEOUT_S"  # collective timeout: a dead rank ends the job, not hangs
_HOST_GROUP = None  # a gloo group for host flags when the default group is NCCL (no GPU sync)


@dataclasses.dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world: int = 1

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init(device_name: str) -> tuple[DistInfo, torch.device]:
    """Join the process group that ``torchrun`` describes in the environment (NCCL on GPUs,
    gloo on CPU); without ``WORLD_SIZE`` > 1 this is a single process and nothing is set up."""
    from experiments.common import check_device

    check_device(device_name)
    if "WORLD_SIZE" not in os.environ and int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        _export_submitit_env()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    want_cuda = device_name == "cuda" or (device_name == "auto" and torch.cuda.is_available())
    device = torch.device(f"cuda:{local}" if want_cuda else "cpu")
    if want_cuda:
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        timeout = datetime.timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, "600")))
        dist.init_process_group("nccl" if want_cuda else "gloo", timeout=timeout)
        if want_cuda:
            global _HOST_GROUP
            _HOST_GROUP = dist.new_group(backend="gloo", timeout=timeout)
    return DistInfo(rank, local, world), device


def _export_submitit_env() -> None:
    """Under Hydra's submitit launcher (one task per GPU, no torchrun), export RANK, WORLD_SIZE,
    LOCAL_RANK, MASTER_ADDR and MASTER_PORT from the Slurm job as torchrun would."""
    try:
        from submitit.helpers import TorchDistributedEnvironment
    except ImportError as e:
        raise RuntimeError(
            "SLURM_NTASKS > 1 without torchrun: install the slurm extra "
            "(pip install -e '.[slurm]') or launch with torchrun"
        ) from e
    TorchDistributedEnvironment().export(set_cuda_visible_devices=False)


def all_ranks_true(flag: torch.Tensor | bool, info: DistInfo) -> bool:
    """True only if ``flag`` holds on every rank (one host sync; a collective under torchrun)."""
    if not info.enabled and not isinstance(flag, torch.Tensor):
        return bool(flag)  # a host bool in one process: no tensor, no sync
    t = torch.as_tensor(flag)
    if info.enabled:
        t = t.to(torch.int32).reshape(1).clone()
        if dist.get_backend() == "nccl" and _HOST_GROUP is not None and t.device.type == "cpu":
            dist.all_reduce(t, op=dist.ReduceOp.MIN, group=_HOST_GROUP)  # a host flag: gloo
            return bool(t.reshape(()))
        if dist.get_backend() == "nccl":
            t = t.cuda()
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.reshape(()))


def any_rank_true(flag: bool, info: DistInfo) -> bool:
    """True if ``flag`` holds on any rank (e.g. a preemption signal delivered to one process)."""
    return not all_ranks_true(not flag, info)


class LaggedAny:
    """``any_rank_true`` for a per-step host flag, off the step's critical path.

    Each call starts a CPU ``all_reduce`` (gloo: no GPU sync, no NCCL launch) of this step's flag
    and returns the result of the previous call's, which has long arrived: every rank sees the
    same answer at the same step, one step late. In one process the flag itself, at once.
    """

    def __init__(self, info: DistInfo) -> None:
        self.info = info
        self._work = None
        self._t: torch.Tensor | None = None

    def __call__(self, flag: bool) -> bool:
        if not self.info.enabled:
            return bool(flag)
        out = self.wait()
        self._t = torch.tensor([int(bool(flag))], dtype=torch.int32)
        self._work = dist.all_reduce(
            self._t, op=dist.ReduceOp.MAX, group=_HOST_GROUP, async_op=True
        )
        return out

    def wait(self) -> bool:
        """The pending answer (False if none); call before the process group goes away."""
        if self._work is None:
            return False
        self._work.wait()
        self._work = None
        return bool(self._t[0])  # a CPU tensor: no device sync


def barrier(info: DistInfo) -> None:
    """Every rank waits here (e.g. until rank 0's checkpoint is fsynced and renamed)."""
    if info.enabled and dist.is_initialized():
        dist.barrier()


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


# ------------------------------------------------------------------------------ launcher
# ``python -m experiments.distributed [torchrun options] SCRIPT [overrides]``: torchrun with the
# preemption contract of the single-process scripts (README "Running on a cluster").
SHUTDOWN_TIMEOUT_S = 120  # torchrun's default 30 s can cut a large checkpoint save short
EXIT_FILE_GRACE_S = 30.0  # after torchrun ends on a signal, wait this long for the ranks' codes


def combine_exit_codes(codes: list[int], torchrun_rc: int, *, signalled: bool) -> int:
    """One exit status for the job from the ranks' own codes (torchrun reports any non-zero
    worker as 1, which hides a 75).

    A 2 (bad input) or 3 (stopped) from any rank wins over a 1 (a rank that failed because
    another one left); a 75 from any rank means the preemption was agreed and rank 0's
    checkpoint is durable (ranks report 75 only after the barrier that follows the save), so
    the job should be requeued; so should a job that was signalled before any rank reported.
    Otherwise torchrun's own status (a killed rank: non-zero)."""
    from experiments.common import EXIT_PREEMPTED

    bad = [c for c in codes if c not in (0, EXIT_PREEMPTED)]
    if bad:
        return max(bad)
    if EXIT_PREEMPTED in codes or (signalled and not codes):
        return EXIT_PREEMPTED
    if torchrun_rc < 0:  # torchrun itself killed by a signal
        return 128 - torchrun_rc
    return torchrun_rc


def _nproc(args: list[str]) -> int | None:
    for i, a in enumerate(args):
        for flag in ("--nproc_per_node", "--nproc-per-node"):
            if a == flag and i + 1 < len(args):
                v = args[i + 1]
            elif a.startswith(flag + "="):
                v = a.split("=", 1)[1]
            else:
                continue
            return int(v) if v.isdigit() else None
    return 1 if args else None


def torchrun_defaults(args: list[str]) -> list[str]:
    """``args`` with this launcher's defaults for the torchrun options the user did not give.

    - ``--shutdown-timeout``: how long torchrun waits for workers after it forwarded SIGTERM.
    - ``--local-addr 127.0.0.1`` under ``--standalone``: torchrun otherwise hands the workers this
      node's hostname as MASTER_ADDR, and where the hostname does not resolve (containers, CI
      runners, some compute nodes) every worker retries its store connection until the timeout,
      silently. A single-node job always reaches itself on loopback; multi-node jobs
      (``--rdzv-endpoint``) are left as given.
    """
    end = next((i for i, a in enumerate(args) if a == "-m" or a.endswith(".py")), len(args))
    opts = args[:end]

    def given(*names: str) -> bool:
        return any(a == n or a.startswith(n + "=") for a in opts for n in names)

    extra = []
    if not given("--shutdown-timeout", "--shutdown_timeout"):
        extra += ["--shutdown-timeout", str(SHUTDOWN_TIMEOUT_S)]
    if given("--standalone") and not given("--local-addr", "--local_addr"):
        extra += ["--local-addr", "127.0.0.1"]
    return [*extra, *args]


def launch(args: list[str]) -> int:
    """Run ``torchrun`` with ``args`` and return the job's exit status.

    - SIGUSR1/SIGUSR2 are ignored by torchrun itself (one sent to every process of a Slurm job
      step would otherwise kill torchrun and orphan the workers; the workers install their own
      handlers); SIGUSR1, SIGUSR2 or SIGTERM received here is passed to torchrun as SIGTERM,
      which torchrun forwards to every worker: each saves (rank 0) or waits at the barrier
      until the save is durable (the others) and exits 75.
    - Each rank writes its exit code to ``$FIELDSCOPE_EXIT_DIR/rank<R>``; the combined status
      (``combine_exit_codes``) is this process's exit status: 75 means requeue.
    """
    import shutil
    import signal
    import subprocess
    import sys
    import tempfile
    import time
    from pathlib import Path

    from experiments.common import EXIT_DIR_ENV

    args = torchrun_defaults(args)
    exit_dir = Path(tempfile.mkdtemp(prefix="fieldscope-exit-"))
    env = dict(os.environ, **{EXIT_DIR_ENV: str(exit_dir)})

    def ignore_usr() -> None:
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)
        signal.signal(signal.SIGUSR2, signal.SIG_IGN)

    got: list[int] = []
    proc = None

    def forward(signum, frame) -> None:  # noqa: ARG001 - signal handler signature
        if not got and proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        got.append(signum)

    old = {s: signal.signal(s, forward) for s in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM)}
    try:
        cmd = [sys.executable, "-m", "torch.distributed.run", *args]
        proc = subprocess.Popen(cmd, env=env, preexec_fn=ignore_usr)
        if got:  # a signal before torchrun existed
            proc.send_signal(signal.SIGTERM)
        rc = proc.wait()
        n = _nproc(args)
        if got and n is not None:  # torchrun may end before its workers if signalled twice
            deadline = time.monotonic() + EXIT_FILE_GRACE_S
            while len(list(exit_dir.glob("rank*"))) < n and time.monotonic() < deadline:
                time.sleep(0.2)
        codes = []
        for p in sorted(exit_dir.glob("rank*")):
            try:
                codes.append(int(p.read_text()))
            except (OSError, ValueError):
                codes.append(1)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        shutil.rmtree(exit_dir, ignore_errors=True)
    code = combine_exit_codes(codes, rc, signalled=bool(got))
    print(
        f"experiments.distributed: torchrun exited {rc}; ranks reported {codes or 'nothing'}"
        f"{'; signal ' + ','.join(signal.Signals(s).name for s in got) if got else ''}"
        f" -> exit {code}",
        file=sys.stderr,
    )
    return code


if __name__ == "__main__":
    import sys

    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
        print(
            "usage: python -m experiments.distributed [torchrun options] SCRIPT [overrides]\n"
            "torchrun whose exit status is the ranks' own (75: preempted, requeue); SIGUSR1, "
            "SIGUSR2 and SIGTERM reach every worker as SIGTERM.",
            file=sys.stderr,
        )
        sys.exit(0 if len(sys.argv) >= 2 else 2)
    sys.exit(launch(sys.argv[1:]))
