"""Cost of the diagnostics on a WGAN-GP training step, measured side by side in one run.

The modes run in interleaved blocks of the same number of steps on the same models (median of
the per-step time over repetitions):

1. ``none``    no diagnostics;
2. ``default`` ``conf/diagnostics/default.yaml`` (sampled recording, periodic writes);
3. ``full``    ``conf/diagnostics/full.yaml`` (every-step histograms of every layer);
4. ``weights`` weight and gradient histograms of both networks, recorded and written every step
   (no activations): the peer of ``wandb``;
5. ``wandb``   ``wandb.watch(log="all", log_freq=1)`` in offline mode (the peer: weights and
   gradients at every step); its service process's CPU time is added to the CPU time;
6. ``naive``   ``SummaryWriter.add_histogram`` of every activation that ``full`` hooks, every step;
7. ``acts``    ``full`` without weights and gradients: the records ``naive`` makes (not run
   unless named in ``--modes``).
8. ``full_hook`` ``full`` with every activation recorded inside its hook
   (``activations.defer_mb=0``): what deferred recording saves (not run unless named).

Beside the times: host synchronisations per step (``.item()``, ``.cpu()``, ``.tolist()``,
``.numpy()``, ``bool``/``float``/``int`` of a tensor, blocking cross-device copies, counted in a
separate pass; on a GPU also CUDA's sync debug mode) and operators per recorded step and per write
(top-level aten operators in ``torch.profiler``, view operators excluded; on a GPU each is a
kernel launch).

A diagnostics mode's block is the least common multiple of its ``every`` and ``image_every``
steps long (default: 200 steps, four writes and one round of images; full: 50), so every block
holds the same writes and images and the median includes their cost instead of hiding it; the
``none`` and ``wandb`` blocks are as long as ``default``'s. The naive mode has no periodic part and
is slow, so its blocks are shorter. Host syncs are counted over one write interval per mode.

    python benchmarks/diagnostics_overhead.py                 # CPU, small-experiment sizes
    python benchmarks/diagnostics_overhead.py --device cuda --amp bf16 --reps 5
    python benchmarks/diagnostics_overhead.py --model dcgan   # pytorch/examples DCGAN, 2D, BCE
    python benchmarks/diagnostics_overhead.py --modes default --paired 3 --reps 0  # paired only

``--paired N`` also times each diagnostics mode step by step against an identical copy of the
models in alternating steps (N chunks of at least 200 steps, whole lcm(every, image_every)
cycles), which resolves
overheads of 1-2 % that block medians on a shared machine cannot.

``--model dcgan`` times a step of the pytorch/examples DCGAN (one D step on real and fake, one G
step, BCE loss) at ``--size`` 64 (or 32), a model the library was not written for.

    WANDB_MODE=offline is set by the script; install the peer with  pip install -e '.[bench]'
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import statistics
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import nn

from diagnostics import Diagnostics, Writer
from diagnostics.hooks import Hooks, select_modules
from diagnostics.writer import use_fast_crc
from experiments.losses import critic_loss, generator_loss, gradient_penalty
from experiments.models.dcgan import dcgan
from experiments.models.gan3d import Critic, Generator, upsample

CONF = Path(__file__).resolve().parents[1] / "conf" / "diagnostics"


def load_cfg(name: str) -> dict:
    """A diagnostics config with its ``defaults: [default]`` resolved (no Hydra needed)."""
    cfg = yaml.safe_load((CONF / f"{name}.yaml").read_text())
    if "defaults" in cfg:
        cfg.pop("defaults")
        base = load_cfg("default")
        for k, v in cfg.items():
            if isinstance(v, dict) and isinstance(base.get(k), dict):
                base[k].update(v)
            else:
                base[k] = v
        cfg = base
    return cfg


def build(args, device):
    """Small-experiment GAN (conf/gan/exp/small.yaml sizes), optimizers and one fixed batch."""
    torch.manual_seed(0)
    n_var, f = 4, 2
    G = Generator(n_var, f, chan_base=16, chan_min=8, chan_max=16).to(device)
    D = Critic(n_var, chan_base=16, chan_min=8, chan_max=16, n_blocks=2).to(device)
    opt_g = torch.optim.Adam(G.parameters(), lr=1e-4, betas=(0.0, 0.9))
    opt_d = torch.optim.Adam(D.parameters(), lr=1e-4, betas=(0.0, 0.9))
    c = args.crop
    y = torch.rand(args.batch, n_var, c, c, c, device=device)
    x = torch.nn.functional.avg_pool3d(y, f)
    return G, D, opt_g, opt_d, x, y


def build_dcgan(args, device):
    """pytorch/examples DCGAN (nz 100, ngf = ndf = ``--width``), Adam(2e-4, 0.5), a fixed batch."""
    torch.manual_seed(0)
    G, D = dcgan(nz=100, ngf=args.width, ndf=args.width, nc=3, size=args.size)
    G, D = G.to(device), D.to(device)
    opt_g = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    z = torch.randn(args.batch, 100, 1, 1, device=device)
    real = torch.rand(args.batch, 3, args.size, args.size, device=device) * 2 - 1
    return G, D, opt_g, opt_d, z, real


def dcgan_step(G, D, opt_g, opt_d, z, real, args) -> None:
    """One step of pytorch/examples dcgan/main.py: D on real and fake, then G (BCE)."""
    bce = torch.nn.BCELoss()
    ones = torch.ones(real.shape[0], device=real.device)
    zeros = torch.zeros(real.shape[0], device=real.device)
    with torch.autocast(real.device.type, dtype=torch.bfloat16, enabled=args.amp == "bf16"):
        fake = G(z)
        opt_d.zero_grad(set_to_none=True)
        loss_d = bce(D(real).view(-1).float(), ones) + bce(D(fake.detach()).view(-1).float(), zeros)
        loss_d.backward()
        opt_d.step()
        opt_g.zero_grad(set_to_none=True)
        bce(D(fake).view(-1).float(), ones).backward()
        opt_g.step()


# Metadata-only operators (no kernel): views made to concatenate or to index a buffer.
VIEW_OPS = {
    "aten::reshape",
    "aten::view",
    "aten::_reshape_alias",
    "aten::detach",
    "aten::alias",
    "aten::slice",
    "aten::select",
    "aten::as_strided",
    "aten::expand",
    "aten::unsqueeze",
    "aten::lift_fresh",
}


def top_level_ops(prof) -> int:
    """Operators called from Python (not inside another aten operator), views excluded."""
    return sum(
        1
        for e in prof.events()
        if e.name.startswith("aten::")
        and (e.cpu_parent is None or not e.cpu_parent.name.startswith("aten::"))
        and e.name not in VIEW_OPS
    )


CONVERSIONS = ("item", "cpu", "tolist", "numpy", "__bool__", "__float__", "__int__", "__array__")


@contextlib.contextmanager
def count_syncs(counter: Counter):
    """Count the ways a tensor reaches the host (and CUDA sync debug warnings on a GPU)."""
    saved = {n: getattr(torch.Tensor, n) for n in (*CONVERSIONS, "to")}

    def wrap(name):
        orig = saved[name]

        def f(t, *a, **kw):
            counter[name] += 1
            return orig(t, *a, **kw)

        return f

    def to(t, *a, **kw):
        dev = kw.get("device", a[0] if a else None)
        blocking = not kw.get("non_blocking", len(a) > 1 and a[1] is True)
        if (
            isinstance(dev, str | torch.device)
            and blocking
            and torch.device(dev).type != t.device.type
        ):
            counter["to(device)"] += 1
        return saved["to"](t, *a, **kw)

    for n in CONVERSIONS:
        setattr(torch.Tensor, n, wrap(n))
    torch.Tensor.to = to
    cuda = torch.cuda.is_available()
    try:
        with warnings.catch_warnings():
            if cuda:
                torch.cuda.set_sync_debug_mode("warn")
                warnings.simplefilter("always")
                warnings.showwarning = lambda *a, **k: counter.update(["cuda sync"])
            yield counter
    finally:
        if cuda:
            torch.cuda.set_sync_debug_mode(0)
        for n, f in saved.items():
            setattr(torch.Tensor, n, f)


class Wandb:
    """The peer: ``wandb.watch(log="all", log_freq=1)`` offline, one ``wandb.log`` per step."""

    def __init__(self, models: dict, log_dir: str) -> None:
        os.environ.setdefault("WANDB_MODE", "offline")
        os.environ.setdefault("WANDB_SILENT", "true")
        import wandb

        self.wandb = wandb
        self.run = wandb.init(project="diag-bench", dir=log_dir, mode="offline")
        self.models = list(models.values())
        self.step_no = 0

    def __enter__(self):
        self.wandb.watch(self.models, log="all", log_freq=1)
        return self

    def step(self, step: int) -> None:
        self.run.log({"step": step})  # commits the step's histograms, as a training loop would

    def detach(self) -> None:
        self.wandb.unwatch(self.models)

    def children_cpu(self) -> float:
        """CPU seconds of this process's children (wandb's service process)."""
        import psutil

        total = 0.0
        for c in psutil.Process().children(recursive=True):
            with contextlib.suppress(psutil.Error):
                t = c.cpu_times()
                total += t.user + t.system
        return total

    def close(self) -> None:
        self.run.finish()


def gan_step(G, D, opt_g, opt_d, x, y, args) -> None:
    """One training step as in experiments/train_gan.py: n_critic critic steps, one G step."""
    dev = x.device.type
    with torch.autocast(dev, dtype=torch.bfloat16, enabled=args.amp == "bf16"):
        up = upsample(x, 2)
        for _ in range(args.n_critic):
            with torch.no_grad():
                fake = G(x)
            s_real, s_fake = D(y, up), D(fake, up)
            loss_d = critic_loss(s_real, s_fake) + 10.0 * gradient_penalty(D, y, fake, up)
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
        loss_g = generator_loss(D(G(x), up))
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()


class Naive:
    """The usual approach: ``add_histogram`` of each hooked activation at every step."""

    def __init__(self, models: dict, types, log_dir: str) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.tb = SummaryWriter(log_dir)
        self.layers = [
            (m, n, mod)
            for m, model in models.items()
            for n, mod in select_modules(model, types=types)
        ]
        self.step_no = 0
        self.hooks = Hooks([mod for _, _, mod in self.layers], self._hook)

    def _hook(self, i: int, module, out: torch.Tensor) -> None:
        m, n, _ = self.layers[i]
        self.tb.add_histogram(f"act/{m}/{n}", out.detach().float(), self.step_no)

    def step(self, step: int) -> None:
        self.step_no = step + 1

    def __enter__(self):
        self.hooks.register()
        return self

    def __exit__(self, *exc) -> None:
        self.hooks.remove()
        self.tb.close()


def release(c) -> None:
    """End a block of steps: the naive hooks are removed, the others detached (the object and its
    step numbering are kept for the next block)."""
    if isinstance(c, Naive):
        c.hooks.remove()
    elif c is not None:
        c.detach()


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on CPU), so a timer sees all of it."""
    if device.type == "cuda":
        torch.cuda.synchronize()


def paired(build_fn, step_fn, args, device, cfgs: dict, cycles: dict, tmp: Path) -> None:
    """Each diagnostics mode against no diagnostics, step by step: two identical copies of the
    models, one with the mode attached, trained in alternating steps (order swapped every pair:
    ABBA), each step timed on its own. Machine drift (other tenants, clock changes) then hits
    both sides within a second of each other instead of a minute apart, which the block medians
    cannot resolve at the 1-2 % level. Writes are flushed to disk inside the diagnosed step, so
    the event writer's background work is charged to the diagnostics, not to the plain step."""
    print(
        f"\npaired steps (ABBA), {args.paired} chunk(s) of >= 200 steps (whole cycles) per mode;"
        " overhead per chunk and pooled:"
    )
    for m, cfg in cfgs.items():
        c = cycles[m] * math.ceil(200 / cycles[m])  # a chunk: whole cycles, >= 200 steps
        n = c * args.paired
        t = _paired_mode(build_fn, step_fn, args, device, cfg, n, tmp / f"paired_{m}")
        for label, j in (("cpu", 1), ("wall", 0)):
            a, b = np.array(t["plain"][j]), np.array(t["diag"][j])
            per = [b[i : i + c].sum() / a[i : i + c].sum() for i in range(0, n, c)]
            cyc = " ".join(f"{(r - 1) * 100:+.2f}" for r in per)
            print(
                f"  {m:<8} {label:<4} plain {a.mean() * 1e3:8.2f} ms  diag {b.mean() * 1e3:8.2f} ms"
                f"  pooled {b.sum() / a.sum():.3f}x  per chunk [%]: {cyc}",
                flush=True,
            )
        # Spill-over check: in P D | D P | P D ... the plain step of an even pair follows a
        # diagnosed step, that of an odd pair follows a plain one. Cache pollution or garbage
        # collection caused by the diagnostics and paid in the next step would make the first
        # slower (and the pooled ratio an underestimate).
        a = np.array(t["plain"][1])
        after_d, after_p = a[1::2].mean(), a[0::2].mean()
        print(
            f"  {m:<8} plain step after a diagnosed step vs after a plain one: "
            f"{(after_d / after_p - 1) * 100:+.2f} % (cpu)"
        )
        print("  " + t["report"].replace("\n", "\n  "))


def accounted(diag: Diagnostics) -> float:
    """The diagnostics' own account: host seconds in hooks, optimizer hooks and writes."""
    own = sum(diag.write_seconds.values()) + (diag.act.seconds if diag.act else 0.0)
    return own + (diag.params.seconds if diag.params else 0.0)


def _paired_mode(build_fn, step_fn, args, device, cfg, n: int, log_dir: Path) -> dict:
    """(wall, cpu) seconds of each of ``n`` plain and ``n`` diagnosed steps, alternating."""
    plain = build_fn(args, device)
    diagd = build_fn(args, device)  # the same seed: identical models, optimizers, batch
    G, D, og, od = diagd[:4]
    writer = Writer(log_dir)
    diag = Diagnostics({"G": G, "D": D}, {"G": og, "D": od}, writer, cfg)
    for sides in (plain, diagd):  # warm-up
        for _ in range(2):
            step_fn(*sides, args)
    t = {"plain": ([], []), "diag": ([], [])}
    with diag:
        for k in range(1, n + 1):
            for side in ("plain", "diag") if k % 2 else ("diag", "plain"):
                sync(device)
                w0, c0 = time.perf_counter(), time.process_time()
                if side == "plain":
                    step_fn(*plain, args)
                else:
                    step_fn(*diagd, args)
                    if diag.step(k):
                        writer.flush()
                sync(device)
                t[side][0].append(time.perf_counter() - w0)
                t[side][1].append(time.process_time() - c0)
    # Where the diagnosed side's extra time went (host seconds in hooks and writes)
    t["report"] = f"{diag.summary()}\naccounted: {accounted(diag) / n * 1e3:.2f} ms/step"
    writer.close()
    return t


def main() -> None:
    """Run the benchmark and print per-step times, overheads and the naive/full ratio."""
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--amp", default="none", choices=["none", "bf16"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument(
        "--block", type=int, default=None, help="steps per block (default: lcm(every, image_every))"
    )
    ap.add_argument("--naive-block", type=int, default=5, help="steps per naive block")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--crop", type=int, default=16)
    ap.add_argument("--n-critic", type=int, default=5)
    ap.add_argument("--modes", default="none,default,full,weights,wandb,naive")
    ap.add_argument("--model", default="gan3d", choices=["gan3d", "dcgan"])
    ap.add_argument("--size", type=int, default=64, help="dcgan image size (32 or 64)")
    ap.add_argument("--width", type=int, default=32, help="dcgan ngf = ndf")
    ap.add_argument(
        "--paired",
        type=int,
        default=0,
        metavar="CHUNKS",
        help="also measure the diagnostics modes step by step against an identical copy of the "
        "models (alternating steps), over this many chunks of >= 200 steps (0: skip)",
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    fast_crc = use_fast_crc()  # for every mode, the naive SummaryWriter's too
    print(
        f"torch {torch.__version__}, threads={torch.get_num_threads()}, device={device}, "
        f"amp={args.amp}, model={args.model}, "
        f"record checksums {'in C' if fast_crc else 'in Python (TensorBoard without TensorFlow)'}"
    )

    if args.model == "dcgan":
        G, D, opt_g, opt_d, x, y = build_dcgan(args, device)
        step_fn = dcgan_step
    else:
        G, D, opt_g, opt_d, x, y = build(args, device)
        step_fn = gan_step
    cfgs = {"default": load_cfg("default"), "full": load_cfg("full")}
    cfgs["weights"] = load_cfg("default") | {"every": 1, "record_every": 1, "image_every": None}
    cfgs["weights"]["activations"] = {"enabled": False}
    # full with every activation recorded inside its hook (no deferred recording): its cost
    cfgs["full_hook"] = load_cfg("full")
    cfgs["full_hook"]["activations"] = {**cfgs["full_hook"]["activations"], "defer_mb": 0}
    # full without the weights and gradients: the same records as the naive peer
    cfgs["acts"] = load_cfg("full") | {"weights": {"enabled": False}, "grads": {"enabled": False}}

    def cycle(cfg) -> int:  # steps after which the mode's writes and images repeat
        d = Diagnostics({"M": nn.Linear(1, 1)}, None, None, cfg)
        return math.lcm(d.every, d.image_every) if d.enabled else 1

    cycles = {m: cycle(c) for m, c in cfgs.items()}
    block = args.block or cycles["default"]
    modes = args.modes.split(",")
    if "wandb" in modes:
        try:
            import wandb  # noqa: F401
        except ImportError:
            print("wandb is not installed (pip install -e '.[bench]'): its row is left out")
            modes.remove("wandb")
    tmp = Path(tempfile.mkdtemp(prefix="diag_bench_"))
    if args.paired:
        build_fn = build_dcgan if args.model == "dcgan" else build
        chosen = {m: cfgs[m] for m in modes if m in cfgs}
        paired(build_fn, step_fn, args, device, chosen, cycles, tmp)
        if args.reps == 0:
            return
    models = {"G": G, "D": D}

    # One diagnostics object per mode for the whole run, entered only during its own blocks, so
    # step numbers (and thus writes) continue across blocks as in a real run.
    ctx, writers, steps = {}, {}, {m: 0 for m in modes}
    for m in modes:
        if m in cfgs:
            writers[m] = Writer(tmp / m)
            ctx[m] = Diagnostics(models, {"G": opt_g, "D": opt_d}, writers[m], cfgs[m])
        elif m == "naive":
            types = cfgs["full"]["activations"]["types"]
            ctx[m] = Naive(models, types, str(tmp / m))
        elif m == "wandb":
            ctx[m] = Wandb(models, str(tmp / m))
    n_hooked = {
        m: (len(c.act.layers) if c.act else 0) if isinstance(c, Diagnostics) else len(c.layers)
        for m, c in ctx.items()
        if isinstance(c, Diagnostics | Naive)
    }
    blocks = {
        m: args.naive_block if m == "naive" else args.block or cycles.get(m, block) for m in modes
    }
    print(f"hooked layers: {n_hooked}; steps per block {blocks}, reps = {args.reps}")

    for _ in range(2):  # warm-up (allocator, first-write edges)
        step_fn(G, D, opt_g, opt_d, x, y, args)
    wall: dict[str, list[float]] = {m: [] for m in modes}
    cpu: dict[str, list[float]] = {m: [] for m in modes}
    for rep in range(args.reps):
        for m in modes:
            c = ctx.get(m)
            sync(device)
            k0 = c.children_cpu() if isinstance(c, Wandb) else 0.0
            t0, c0 = time.perf_counter(), time.process_time()
            if c is not None:
                c.__enter__()
            try:
                n_steps = blocks[m]
                for _ in range(n_steps):
                    steps[m] += 1
                    step_fn(G, D, opt_g, opt_d, x, y, args)
                    if c is not None:
                        c.step(steps[m])
                sync(device)
            finally:
                release(c)
            wall[m].append((time.perf_counter() - t0) / n_steps)
            child = c.children_cpu() - k0 if isinstance(c, Wandb) else 0.0
            cpu[m].append((time.process_time() - c0 + child) / n_steps)
        line = ", ".join(
            f"{m} {wall[m][-1] * 1e3:.1f} ms ({cpu[m][-1] * 1e3:.1f} cpu)" for m in modes
        )
        print(f"rep {rep}: {line}", flush=True)

    # Host syncs per step: a separate pass (the patched conversions cost time themselves).
    syncs: dict[str, Counter] = {}
    n_sync = {}
    for m in modes:
        c = ctx.get(m)
        n_sync[m] = args.naive_block if m == "naive" else int(cfgs.get(m, cfgs["default"])["every"])
        syncs[m] = Counter()
        if c is not None:
            c.__enter__()
        try:
            with count_syncs(syncs[m]):
                for _ in range(n_sync[m]):
                    steps[m] += 1
                    step_fn(G, D, opt_g, opt_d, x, y, args)
                    if c is not None:
                        c.step(steps[m])
                sync(device)
        finally:
            release(c)
    # Operators: one recorded step without a write, and one write (diagnostics modes).
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    ops: dict[str, tuple[int, int | None]] = {}
    for m in modes:
        c = ctx.get(m)
        if c is not None:
            c.__enter__()
        try:
            diag = isinstance(c, Diagnostics)
            # the next recorded step; not a write unless every recorded step is one (default:
            # record_every = every), in which case the write is profiled apart from the step
            on_write = diag and c.record_every % c.every == 0
            if diag and c.every > 1:
                while (steps[m] + 1) % c.record_every or (
                    not on_write and (steps[m] + 1) % c.every == 0
                ):
                    steps[m] += 1
                    step_fn(G, D, opt_g, opt_d, x, y, args)
                    c.step(steps[m])
            steps[m] += 1
            with profile(activities=acts) as prof:
                step_fn(G, D, opt_g, opt_d, x, y, args)
                if c is not None and not on_write:
                    c.step(steps[m])
                sync(device)
            n_write = None
            if diag:
                if not on_write:
                    while (steps[m] + 1) % c.every:
                        steps[m] += 1
                        step_fn(G, D, opt_g, opt_d, x, y, args)
                        c.step(steps[m])
                    steps[m] += 1
                    step_fn(G, D, opt_g, opt_d, x, y, args)
                with profile(activities=acts) as pw:
                    c.step(steps[m])  # the write: weights, reduce, one host copy, records
                    sync(device)
                n_write = top_level_ops(pw)
            ops[m] = (top_level_ops(prof), n_write)
        finally:
            release(c)

    # On a shared CPU, other processes inflate wall time; the process's own CPU time (all its
    # threads, the event writer's included) is the steadier measure there. On a GPU: wall time.
    primary = "cpu time" if device.type == "cpu" else "wall time"
    for label, times in (("wall time", wall), ("cpu time", cpu)):
        med = {m: statistics.median(v) for m, v in times.items()}
        base = med.get("none")
        print(f"\nmedian step {label}{' (primary)' if label == primary else ''}, overhead vs none:")
        for m in modes:
            ov = f"{(med[m] / base - 1) * 100:+8.2f} %" if base else ""
            print(f"  {m:<8} {med[m] * 1e3:9.2f} ms {ov}")
        if base and len(times["none"]) > 1:
            # the plain step's own drift between blocks: overheads below it are not resolved
            spread = (max(times["none"]) - min(times["none"])) / base * 100
            print(
                f"  (none's spread over reps: {spread:.1f} % of its median; overheads smaller "
                "than that are not resolved by blocks: use --paired)"
            )
        for m in ("full", "acts"):
            if base and m in med and "naive" in med:
                o_m, o_naive = med[m] - base, med["naive"] - base
                ratio = o_naive / o_m if o_m > 0 else float("inf")
                print(
                    f"  naive overhead / {m} overhead = {ratio:.1f}x (target >= 3x CPU, >= 10x GPU)"
                )
        if base:
            cpu_dev = device.type == "cpu"
            targets = {"default": 1.02 if cpu_dev else 1.01, "full": 1.15 if cpu_dev else 1.05}
            targets["weights"] = 1.10 if cpu_dev else None
            for m, t in targets.items():
                if m in med:
                    r = med[m] / base
                    verdict = (
                        ""
                        if t is None
                        else f" (target <= {t:.2f}x: {'met' if r <= t else 'NOT met'})"
                    )
                    print(f"  {m} = {r:.3f}x{verdict}")
            if "wandb" in med and "weights" in med:
                print(
                    f"  wandb overhead / weights overhead = "
                    f"{(med['wandb'] - base) / max(med['weights'] - base, 1e-12):.1f}x"
                )
    base_ops = ops.get("none", (0, None))[0]
    print("\nhost syncs per step (one write interval, its write included) and operators:")
    print(
        f"  {'mode':<8} {'syncs/step':>10} {'ops/step':>9} {'+ops/step':>10} {'ops/write':>10}  kinds"
    )
    for m in modes:
        k = syncs[m]
        per = sum(k.values()) / n_sync[m]
        o_step, o_write = ops[m]
        ow = "" if o_write is None else str(o_write)
        kinds = ", ".join(f"{n} {v / n_sync[m]:.2f}" for n, v in k.most_common())
        print(f"  {m:<8} {per:>10.2f} {o_step:>9} {o_step - base_ops:>+10} {ow:>10}  {kinds}")
    # Hook and write times are wall-clock (perf_counter), so they compare with the wall median.
    base = statistics.median(wall["none"]) if "none" in modes else 0.0
    for m, c in ctx.items():
        if isinstance(c, Diagnostics):
            print(f"\n[{m}] cost report ({steps[m]} steps)\n{c.summary()}")
            own = accounted(c)
            if base:
                pct = own / steps[m] / base * 100
                print(
                    f"accounted: {own / steps[m] * 1e3:.2f} ms/step = {pct:.2f} % of a plain step"
                )
            writers[m].close()
        elif m == "naive":
            c.tb.close()
        elif m == "wandb":
            c.close()


if __name__ == "__main__":
    main()
