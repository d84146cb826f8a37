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
