"""Cost of the diagnostics on a WGAN-GP training step, measured side by side in one run.

Four modes run in interleaved blocks of the same number of steps on the same models (median of
the per-step time over repetitions):

1. ``none``    no diagnostics;
2. ``default`` ``conf/diagnostics/default.yaml`` (sampled recording, periodic writes);
3. ``full``    ``conf/diagnostics/full.yaml`` (every-step histograms of every layer);
4. ``naive``   ``SummaryWriter.add_histogram`` of every activation that ``full`` hooks, every step.

A block is ``every`` (of the default config) steps long, so each block of mode 2 holds exactly
one write and each of mode 3 one round of images: the median then includes their cost instead of
hiding it. The naive mode has no periodic part and is slow, so its blocks are shorter.

    python benchmarks/diagnostics_overhead.py                 # CPU, small-experiment sizes
    python benchmarks/diagnostics_overhead.py --device cuda --amp bf16 --reps 5
    python benchmarks/diagnostics_overhead.py --model dcgan   # pytorch/examples DCGAN, 2D, BCE

``--model dcgan`` times a step of the pytorch/examples DCGAN (one D step on real and fake, one G
step, BCE loss) at ``--size`` 64 (or 32), a model the library was not written for.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
import yaml

from diagnostics import Diagnostics, Writer
from diagnostics.hooks import Hooks, select_modules
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
        "--block", type=int, default=None, help="steps per block (default: default.every)"
    )
    ap.add_argument("--naive-block", type=int, default=5, help="steps per naive block")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--crop", type=int, default=16)
    ap.add_argument("--n-critic", type=int, default=5)
    ap.add_argument("--modes", default="none,default,full,naive")
    ap.add_argument("--model", default="gan3d", choices=["gan3d", "dcgan"])
    ap.add_argument("--size", type=int, default=64, help="dcgan image size (32 or 64)")
    ap.add_argument("--width", type=int, default=32, help="dcgan ngf = ndf")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(
        f"torch {torch.__version__}, threads={torch.get_num_threads()}, device={device}, "
        f"amp={args.amp}, model={args.model}"
    )

    if args.model == "dcgan":
        G, D, opt_g, opt_d, x, y = build_dcgan(args, device)
        step_fn = dcgan_step
    else:
        G, D, opt_g, opt_d, x, y = build(args, device)
        step_fn = gan_step
    cfgs = {"default": load_cfg("default"), "full": load_cfg("full")}
    block = args.block or int(cfgs["default"]["every"])
    modes = args.modes.split(",")
    tmp = Path(tempfile.mkdtemp(prefix="diag_bench_"))
    models = {"G": G, "D": D}

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

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
    n_hooked = {
        m: len(c.act.layers) if isinstance(c, Diagnostics) else len(c.layers)
        for m, c in ctx.items()
    }
    print(f"hooked layers: {n_hooked}; block = {block} steps, reps = {args.reps}")

    for _ in range(2):  # warm-up (allocator, first-write edges)
        step_fn(G, D, opt_g, opt_d, x, y, args)
    wall: dict[str, list[float]] = {m: [] for m in modes}
    cpu: dict[str, list[float]] = {m: [] for m in modes}
    for rep in range(args.reps):
        for m in modes:
            c = ctx.get(m)
            sync()
            t0, c0 = time.perf_counter(), time.process_time()
            if c is not None:
                c.__enter__()
            try:
                n_steps = args.naive_block if m == "naive" else block
                for _ in range(n_steps):
                    steps[m] += 1
                    step_fn(G, D, opt_g, opt_d, x, y, args)
                    if c is not None:
                        c.step(steps[m])
                sync()
            finally:
                if c is not None and m == "naive":
                    c.hooks.remove()
                elif c is not None:
                    c.detach()  # keep the object (and its step numbering) for the next block
            wall[m].append((time.perf_counter() - t0) / n_steps)
            cpu[m].append((time.process_time() - c0) / n_steps)
        line = ", ".join(
            f"{m} {wall[m][-1] * 1e3:.1f} ms ({cpu[m][-1] * 1e3:.1f} cpu)" for m in modes
        )
        print(f"rep {rep}: {line}", flush=True)

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
        if base and "full" in med and "naive" in med:
            o_full, o_naive = med["full"] - base, med["naive"] - base
            ratio = o_naive / o_full if o_full > 0 else float("inf")
            print(f"  naive overhead / full overhead = {ratio:.1f}x (target >= 3x CPU, >= 10x GPU)")
        if base and "default" in med:
            pct = (med["default"] / base - 1) * 100
            print(f"  default overhead = {pct:.2f} % (target <= 5 % CPU, <= 3 % GPU)")
    # Hook and write times are wall-clock (perf_counter), so they compare with the wall median.
    base = statistics.median(wall["none"]) if "none" in modes else 0.0
    for m, c in ctx.items():
        if isinstance(c, Diagnostics):
            print(f"\n[{m}] cost report ({steps[m]} steps)\n{c.summary()}")
            # The diagnostics' own account: host time in hooks, optimizer hooks and writes.
            own = sum(c.write_seconds.values()) + (c.act.seconds if c.act else 0.0)
            own += c.params.seconds if c.params else 0.0
            if base:
                pct = own / steps[m] / base * 100
                print(
                    f"accounted: {own / steps[m] * 1e3:.2f} ms/step = {pct:.2f} % of a plain step"
                )
            writers[m].close()
        elif m == "naive":
            c.tb.close()


if __name__ == "__main__":
    main()
