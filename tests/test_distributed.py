"""Under torch.distributed (gloo, 2 CPU processes): counts summed across ranks, one event file."""

import glob
import json
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from diagnostics import Diagnostics, Writer

KEEP_ALL = {"scalars": 0, "histograms": 0, "images": 0, "tensors": 0, "compressedHistograms": 0}


def _init(rank: int, world: int, port: int) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)


def _identity_ddp() -> DDP:
    """A DDP-wrapped 1 -> 1 linear layer with weight 1 and bias 0 (the identity)."""
    lin = nn.Linear(1, 1)
    with torch.no_grad():
        lin.weight.fill_(1.0)
        lin.bias.zero_()
    return DDP(nn.Sequential(lin))


def _worker(rank: int, world: int, run_dir: str, port: int) -> None:
    _init(rank, world, port)
    try:
        model = _identity_ddp()
        opt = torch.optim.SGD(model.parameters(), lr=0.0)
        writer = Writer(run_dir, rank=rank)
        # Rank 0 sees 0.1 three times, rank 1 sees 9.0 five times (identity layer, lr 0).
        x = torch.full((3, 1), 0.1) if rank == 0 else torch.full((5, 1), 9.0)
        # fast.ai's |a| grid, so the bins are known by hand (default bins: test_default_bins.py)
        grid = {"transform": "abs", "lo": 0.0, "hi": 10.0, "n_bins": 40}
        cfg = {"every": 2, "record_every": 1, "activations": grid}
        with Diagnostics({"M": model}, {"M": opt}, writer, cfg) as diag:
            for step in range(2):
                opt.zero_grad()
                model(x).sum().backward()
                opt.step()
                diag.step(step)
        writer.close()
        with open(os.path.join(run_dir, f"history{rank}.json"), "w") as f:
            json.dump(diag.history, f)
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not available")
def test_histograms_summed_across_ranks_and_one_event_file(tmp_path):
    mp.spawn(_worker, args=(2, str(tmp_path), _free_port()), nprocs=2, join=True)
    assert len(glob.glob(str(tmp_path / "events.out.tfevents.*"))) == 1
    ea = EventAccumulator(str(tmp_path), size_guidance=KEEP_ALL)
    ea.Reload()
    (h, h1) = ea.Histograms("act/M/0/hist")  # the write at 0 and the final flush at 1
    assert h.step == 0 and h1.step == 1
    counts = dict(zip(h.histogram_value.bucket_limit, h.histogram_value.bucket, strict=True))
    # 3 x 0.1 from rank 0 in [0, .25), 5 x 9.0 from rank 1 in [9, 9.25): 8 values in all.
    assert {k: v for k, v in counts.items() if v} == {0.25: 3.0, 9.25: 5.0}
    assert h.histogram_value.num == 8
    mean = ea.Scalars("act/M/0/mean")[0].value
    assert mean == pytest.approx((3 * 0.1 + 5 * 9.0) / 8, rel=1e-6)
    # DDP averages the gradients: d/dw = (0.3 + 45) / 2; d/db = (3 + 5) / 2; equal on both ranks.
    assert ea.Scalars("grad/M/0.weight/norm")[0].value == pytest.approx(22.65, rel=1e-6)
    assert ea.Scalars("grad/M/0.bias/norm")[0].value == pytest.approx(4.0, rel=1e-6)
    assert ea.Scalars("weights/M/0.weight/norm")[0].value == pytest.approx(1.0)
    hist0 = json.loads((tmp_path / "history0.json").read_text())
    hist1 = json.loads((tmp_path / "history1.json").read_text())
    assert hist0 == hist1 and hist0["act/M/0/mean"][0][1] == pytest.approx(5.6625, rel=1e-6)


def _worker_dead(rank: int, world: int, run_dir: str, port: int) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        # ReLU over 4 features: rank 0 turns on feature 0 only, rank 1 features 1 and 2 only.
        # Per rank 75 % and 50 % are dead; over both ranks only feature 3 is: 25 %.
        relu = nn.Sequential(nn.ReLU())
        x = -torch.ones(6, 4)
        if rank == 0:
            x[:, 0] = 1.0
        else:
            x[:, 1:3] = 1.0
        with Diagnostics({"M": relu}, None, None, {"every": 1, "record_every": 1}) as diag:
            relu(x)
            diag.step(0)
        with open(os.path.join(run_dir, f"dead{rank}.json"), "w") as f:
            json.dump(diag.history["act/M/0/dead"], f)
    finally:
        dist.destroy_process_group()


def _stream_worker(rank: int, world: int, run_dir: str, port: int) -> None:
    _init(rank, world, port)
    try:
        from diagnostics.gan import GanBalance

        model = _identity_ddp()
        writer = Writer(run_dir, rank=rank)
        cfg = {"every": 2, "record_every": 1, "weights": {"enabled": False}}
        diag = Diagnostics({"M": model}, None, writer, cfg, total_steps=2)
        balance = GanBalance(diag.scalars)
        # Each rank reports its own known values: loss/D 1 + rank per step (device tensor),
        # perf/x = 10 * rank (a float), critic scores 2 + 4 * rank on real and 0 on fake,
        # activations 1 + rank (identity layer).
        with diag:
            for step in (1, 2):
                model(torch.full((4, 1), 1.0 + rank)).sum().backward()
                diag.report("loss/D", torch.tensor(1.0 + rank))
                diag.report("perf/x", 10.0 * rank)
                balance.update(torch.full((2,), 2.0 + 4 * rank), torch.zeros(2))
                diag.step(step)
        writer.close()
        with open(os.path.join(run_dir, f"stream{rank}.json"), "w") as f:
            json.dump(diag.history, f)
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not available")
def test_dead_units_reduced_across_ranks(tmp_path):
    mp.spawn(_worker_dead, args=(2, str(tmp_path), _free_port()), nprocs=2, join=True)
    for rank in (0, 1):
        assert json.loads((tmp_path / f"dead{rank}.json").read_text()) == [[0, 0.25]]


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not available")
def test_every_scalar_family_is_reduced_across_ranks(tmp_path):
    mp.spawn(_stream_worker, args=(2, str(tmp_path), _free_port()), nprocs=2, join=True)
    ea = EventAccumulator(str(tmp_path), size_guidance=KEEP_ALL)
    ea.Reload()
    want = {
        "loss/D": (1.0 + 2.0) / 2,  # ranks report 1 and 2
        "perf/x": (0.0 + 10.0) / 2,
        "gan/score_real": (2.0 + 6.0) / 2,
        "gan/score_fake": 0.0,
        "gan/gap": (2.0 + 6.0) / 2,
        "gan/real_positive": 1.0,
        "act/M/0/mean": (1.0 + 2.0) / 2,  # 4 values of 1 on rank 0, 4 of 2 on rank 1
    }
    for tag, v in want.items():
        events = ea.Scalars(tag)
        assert [e.step for e in events] == [2], tag  # one write, at step 2
        assert events[0].value == pytest.approx(v, rel=1e-6), tag
    # Every rank holds the same, reduced history (what its health checks read).
    h0 = json.loads((tmp_path / "stream0.json").read_text())
    h1 = json.loads((tmp_path / "stream1.json").read_text())
    assert h0 == h1 and h0["loss/D"] == [[2, 1.5]]
