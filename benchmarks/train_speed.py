"""Generator+critic training steps per second of the GAN experiment.

    python benchmarks/train_speed.py                  # CPU: small and default-sized configs
    python benchmarks/train_speed.py --device cuda    # GPU: fp32 and bf16 autocast side by side

Each configuration runs the real training loop (``experiments.train_gan.train``) with the
diagnostics off and writes kept rare, after ``--warmup`` steps that are not timed; one step is
``n_critic`` critic updates (with gradient penalty) plus one generator update. Configurations
are interleaved over ``--reps`` repetitions and the median is reported. Each configuration's
built-in data is made (or found in the cache) by an untimed one-step run first, so that no timed
run includes it; a run that does not complete (preempted, stopped by health) is an error, not a
figure.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hydra import compose, initialize_config_dir  # noqa: E402

from experiments.train_gan import train  # noqa: E402

QUIET = [
    "diagnostics=off",
    "diagnostics.every=100000",
    "log.slices_every=100000",
    "snapshot.every=100000",
    "checkpoint.every=100000",
]


def timed_run(overrides: list[str], n: int) -> float:
    """Seconds of one completed ``n``-step training run (start-up included)."""
    with initialize_config_dir(config_dir=str(ROOT / "conf" / "gan"), version_base="1.3"):
        cfg = compose("train_gan", overrides=overrides + QUIET + [f"train.steps={n}"])
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        out = train(cfg, d)
        dt = time.perf_counter() - t0
    if out.get("status") != "completed" or out.get("step") != n:
        raise SystemExit(f"train_speed: the {n}-step run {overrides} ended {out}: no figure")
    return dt


def steps_per_s(overrides: list[str], steps: int, warmup: int) -> float:
    """Steps/s over ``steps`` after ``warmup``: two runs, the difference removes start-up cost."""
    t_short, t_long = timed_run(overrides, warmup), timed_run(overrides, warmup + steps)
    if t_long <= t_short:
        raise SystemExit(
            f"train_speed: {warmup + steps} steps took {t_long:.2f} s, {warmup} took "
            f"{t_short:.2f} s: start-up varies more than the steps cost; use more --steps"
        )
    return steps / (t_long - t_short)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    base = [f"device={args.device}", f"threads={args.threads}"]
    configs = {
        "small": ["+exp=small"],
        "default-size": ["+exp=default_size"],
    }
    precisions = ["none", "bf16"] if args.device == "cuda" else ["none"]
    results: dict[tuple[str, str], list[float]] = {}
    for ov in configs.values():  # built-in data made or found now, not in a timed run
        timed_run(base + ov, 1)
    for _ in range(args.reps):
        for name, ov in configs.items():
            for amp in precisions:
                r = steps_per_s(base + ov + [f"amp={amp}"], args.steps, args.warmup)
                results.setdefault((name, amp), []).append(r)
    dev = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    print(
        f"device: {dev}; torch {torch.__version__}; threads {args.threads}; "
        f"{args.steps} timed steps after {args.warmup}, median of {args.reps}"
    )
    print(f"{'config':<14} {'precision':<10} {'steps/s':>9} {'s/step':>8}")
    for (name, amp), rs in results.items():
        med = statistics.median(rs)
        print(f"{name:<14} {('fp32' if amp == 'none' else amp):<10} {med:>9.3f} {1 / med:>8.3f}")


if __name__ == "__main__":
    main()
