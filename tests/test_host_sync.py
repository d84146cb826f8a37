"""No host synchronisation on the training step's path, in both training scripts.

Every Python-level way a tensor reaches the host (``.item()``, ``.cpu()``, ``.tolist()``,
``.numpy()``, ``np.asarray(tensor)``, ``bool``/``float``/``int`` of a tensor, a blocking
``.to(device)`` copy, ``torch.tensor``/``torch.as_tensor`` of host data) is counted per training
step; steps are delimited by the training progress bar's ``update``, which both scripts call once per
step, after its updates and before its writes. Writes
(scalars, snapshots, checkpoints, diagnostics) happen only at steps divisible by ``W``; every
other step must count zero. Where a GPU exists, CUDA's sync debug mode is on as well, so syncs
inside aten ops (which Python patches cannot see) turn into errors. Without a GPU, the code a GPU
runs is still checked: the statistics take their GPU paths on the CPU (``stats.device_paths``) and
every aten op is seen through a ``TorchDispatchMode``; ops whose CUDA kernels read the device back
(``stats.HOST_READING_OPS``: ``bincount``, ``segment_reduce``, boolean indexing, ...) count as
syncs.
"""

from __future__ import annotations

import contextlib
import warnings
from collections import Counter, defaultdict

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from tqdm import tqdm

from diagnostics import stats
from tests.gan_helpers import gan_cfg

W = 4  # every write cadence of the runs below
N_STEPS = 12

CONVERSIONS = ("item", "cpu", "tolist", "numpy", "__bool__", "__float__", "__int__", "__array__")


class SyncCounter:
    """Counts host conversions of tensors per training step (the step set by ``mark``)."""

    def __init__(self) -> None:
        self.step = 0  # steps finished; 0 = set-up and step 1
        self.counts: dict[int, Counter] = defaultdict(Counter)
        self.on = False

    def hit(self, what: str) -> None:
        if self.on:
            self.counts[self.step][what] += 1

    def install(self, monkeypatch) -> None:
        for name in CONVERSIONS:
            orig = getattr(torch.Tensor, name)

            def wrapped(t, *a, _orig=orig, _name=name, **kw):
                self.hit(_name)
                return _orig(t, *a, **kw)

            monkeypatch.setattr(torch.Tensor, name, wrapped)
        orig_to = torch.Tensor.to

        def to(t, *a, **kw):
            # A copy to another device without non_blocking=True waits for the queue on a GPU.
            dev = kw.get("device", a[0] if a else None)
            blocking = not kw.get("non_blocking", len(a) > 1 and a[1] is True)
            if isinstance(dev, str | torch.device) and blocking:
                if torch.device(dev).type != t.device.type:  # same device: no copy at all
                    self.hit("to(device)")
            return orig_to(t, *a, **kw)

        monkeypatch.setattr(torch.Tensor, "to", to)
        for fn in ("tensor", "as_tensor"):
            orig_fn = getattr(torch, fn)

            def made(*a, _orig=orig_fn, _name=fn, **kw):
                self.hit(f"torch.{_name}")
                return _orig(*a, **kw)

            monkeypatch.setattr(torch, fn, made)
        # Step boundary: the training progress bar's update, which both scripts call right
        # after a step's updates and before that step's writes.
        # A disabled bar (no TTY) keeps no desc: note it at construction.
        orig_init, orig_update = tqdm.__init__, tqdm.update

        def init(bar, *a, **kw):
            orig_init(bar, *a, **kw)
            bar.training_bar = kw.get("desc") in ("train_gan", "train_autoencoder")

        def update(bar, n=1):
            if getattr(bar, "training_bar", False):
                self.step += int(n)
            return orig_update(bar, n)

        monkeypatch.setattr(tqdm, "__init__", init)
        monkeypatch.setattr(tqdm, "update", update)

    def training_only(self) -> dict[int, Counter]:
        """Counts of the regions that hold only a training step: after a non-write step r, up to
        the end of step r + 1's updates (its batch, forward, backward and optimizer steps)."""
        return {r: self.counts[r] for r in range(1, N_STEPS) if r % W}


class HostReadingOps(TorchDispatchMode):
    """Counts aten ops that sync on CUDA (``stats.HOST_READING_OPS``, and indexing with a
    boolean mask, which is a ``nonzero`` inside) as syncs of the counter's current step."""

    def __init__(self, counter: SyncCounter) -> None:
        super().__init__()
        self.counter = counter

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in stats.HOST_READING_OPS and not (
            name == "repeat_interleave" and (kwargs or {}).get("output_size") is not None
        ):
            self.counter.hit(f"aten.{name}")
        elif name in ("index", "index_put", "index_put_") and any(
            isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in args[1] if i is not None
        ):
            self.counter.hit(f"aten.{name}[bool]")
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def syncs_counted(counter: SyncCounter):
    """Everything the counter can see: the GPU code paths and their aten ops, and on a GPU
    CUDA's sync debug mode."""
    with stats.device_paths(), HostReadingOps(counter), cuda_syncs_counted(counter):
        yield


@contextlib.contextmanager
def cuda_syncs_counted(counter: SyncCounter):
    """CUDA's sync debug mode, each warning counted as a sync of the current step (GPU only)."""
    if not torch.cuda.is_available():
        yield
        return
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = lambda *a, **k: counter.hit("cuda sync")
            yield
    finally:
        torch.cuda.set_sync_debug_mode(0)


def test_counter_sees_each_conversion(monkeypatch):
    """The counter counts what it claims to (a test of the instrument itself)."""
    c = SyncCounter()
    c.install(monkeypatch)
    c.on = True
    t = torch.ones(3)
    t.sum().item(), t.cpu(), t.tolist(), t.numpy(), bool(t[0]), float(t[0]), int(t[0])
    np.asarray(t), t.to("meta"), torch.tensor([1.0]), torch.as_tensor([1.0])
    t.to("meta", non_blocking=True), t.to("cpu"), t.to(torch.float64)  # none of these counts
    each = {k: 1 for k in (*CONVERSIONS, "to(device)", "torch.tensor", "torch.as_tensor")}
    assert c.counts[0] == Counter(each | {"numpy": 2})  # np.asarray: __array__, then numpy()


def test_counter_sees_host_reading_ops(monkeypatch):
    """The dispatch mode sees the aten ops that sync on CUDA, and the GPU paths avoid them."""
    c = SyncCounter()
    c.on = True
    t = torch.tensor([0.5, -1.0, 3.0])
    with HostReadingOps(c):
        torch.bincount(torch.tensor([0, 2])), t[t > 0], t.nonzero(), torch.unique(t)
        torch.segment_reduce(t, "sum", lengths=torch.tensor([1, 2]))
        torch.repeat_interleave(torch.arange(2), torch.tensor([1, 2]), output_size=3)  # no sync
    assert c.counts[0] == Counter(
        {f"aten.{k}": 1 for k in ("bincount", "index[bool]", "nonzero", "segment_reduce")}
        | {"aten._unique2": 1}
    )
    # The statistics on their GPU paths: the same numbers, none of those ops.
    spec = stats.HistSpec(-1.0, 1.0, 8, "none")
    gen = torch.Generator().manual_seed(0)
    xs = [torch.randn(50, generator=gen), torch.randn(3, 7, generator=gen) * 3]
    segs = stats.Segments([x.numel() for x in xs], torch.device("cpu"))
    cpu_rows = stats.segment_stats(xs, spec, segs)
    c.counts.clear()
    with stats.device_paths(), HostReadingOps(c):
        gpu_rows = stats.segment_stats(xs, spec, segs)
        buf = torch.zeros(spec.size, dtype=torch.float64)
        stats.accumulate(buf, xs[1], spec)
        hist = stats.histogram(xs[1], spec)
    assert not c.counts[0], dict(c.counts[0])
    # counts exactly; the float32 sums add in another order (index_add_ vs segment_reduce)
    nc = spec.n_counts + 1
    assert gpu_rows[:, :nc].tolist() == cpu_rows[:, :nc].tolist()
    assert buf[:nc].tolist() == cpu_rows[1, :nc].tolist()
    torch.testing.assert_close(gpu_rows, cpu_rows, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(buf, cpu_rows[1], rtol=1e-5, atol=1e-6)
    assert hist.tolist() == cpu_rows[1, : spec.n_bins + 2].tolist()


def _assert_no_sync(counter: SyncCounter) -> None:
    assert counter.step == N_STEPS  # the step boundaries were seen
    regions = counter.training_only()
    assert len(regions) == N_STEPS - 1 - (N_STEPS - 1) // W
    bad = {r: dict(v) for r, v in regions.items() if sum(v.values())}
    assert not bad, f"host syncs on the training step (region after step r): {bad}"
    # The writes do read the host (the instrument is live), each one at a W step.
    assert all(sum(counter.counts[r].values()) > 0 for r in range(W, N_STEPS + 1, W))


def test_gan_step_has_no_host_sync(cache_dir, tmp_path, monkeypatch):
    from experiments.train_gan import train

    cfg = gan_cfg(
        cache_dir,
        f"train.steps={N_STEPS}",
        "train.pretrain_steps=2",  # both paths: MSE pretraining and the adversarial step
        *(f"{k}={W}" for k in ("log.slices_every", "log.physics_every")),
        *(f"{k}={W}" for k in ("snapshot.every", "checkpoint.every", "diagnostics.every")),
        "diagnostics.record_every=2",  # recorded steps (hooks on) between writes count too
        "embed.enabled=false",
    )
    counter = SyncCounter()
    counter.install(monkeypatch)
    counter.on = True
    with syncs_counted(counter):
        out = train(cfg, tmp_path)
    counter.on = False
    assert out["status"] == "completed" and out["step"] == N_STEPS
    _assert_no_sync(counter)


def test_autoencoder_step_has_no_host_sync(tmp_path, monkeypatch):
    from experiments.train_autoencoder import train
    from tests.test_train_autoencoder import make_cfg

    cfg = make_cfg(
        [
            "+exp=small",
            "device=auto",  # the GPU where there is one (benchmarks/gpu.sh)
            "train.n_epochs=1",
            f"train.steps_per_epoch={N_STEPS}",
            *(f"{k}={W}" for k in ("snapshot.every", "frames.every")),
            *(f"{k}={W}" for k in ("checkpoint.every", "diagnostics.every")),
            "diagnostics.record_every=2",
            "embed.enabled=false",
        ]
    )
    counter = SyncCounter()
    counter.install(monkeypatch)
    counter.on = True
    with syncs_counted(counter):
        out = train(cfg, tmp_path)
    counter.on = False
    assert out["status"] == "completed" and out["step"] == N_STEPS
    _assert_no_sync(counter)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA sync debug mode needs a GPU")
def test_guard_step_has_no_cuda_sync():
    """The guard's check and a masked fused step on a GPU raise no sync in debug mode."""
    from diagnostics.health import StepGuard

    lin = torch.nn.Linear(4, 3).cuda()
    opt = torch.optim.Adam(lin.parameters(), lr=0.1)
    guard = StepGuard({"m": (lin, opt)})
    x = torch.randn(2, 4, device="cuda")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for k in range(3):
            loss = lin(x).sum() * (float("nan") if k == 1 else 1.0)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            guard.check("m", loss, k)
            opt.step()
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert guard.verdict()[0] == 1
