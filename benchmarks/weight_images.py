"""Cost of the live weight images (``weights_img/...``) against the GAN's training step.

    python benchmarks/weight_images.py            # CPU, 1 torch thread, small and default size

For each configuration: the wall and CPU time of one ``WeightImages.write`` of G and D (median of
``--reps``, event file on a temporary directory), the training step time measured in the same
run by ``benchmarks/train_speed.py``'s method (diagnostics off), and the overhead the images
add at the configuration's own cadence (``log.slices_every``): write time / (cadence x step).
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
sys.path.insert(0, str(ROOT / "benchmarks"))

from hydra import compose, initialize_config_dir  # noqa: E402
from train_speed import steps_per_s  # noqa: E402

from diagnostics.weight_images import WeightImages  # noqa: E402
from diagnostics.writer import Writer  # noqa: E402
from experiments.train_gan import build_models  # noqa: E402


def write_cost(overrides: list[str], reps: int) -> tuple[float, float, int, int]:
    """Median (wall s, CPU s) of one write of G and D; number of layers and of images' pixels."""
    with initialize_config_dir(config_dir=str(ROOT / "conf" / "gan"), version_base="1.3"):
        cfg = compose("train_gan", overrides=overrides)
    G, D = build_models(cfg, len(cfg.data.variables), torch.device("cpu"))
    walls, cpus = [], []
    with tempfile.TemporaryDirectory() as d, Writer(d) as w:
        imgs = WeightImages({"G": G, "D": D}, w, deltas=bool(cfg.log.weight_deltas))
        imgs.write(0)  # the first write fixes the scales; time the later ones
        for i in range(reps):
            t0, c0 = time.perf_counter(), time.process_time()
            imgs.write(i + 1)
            walls.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
    n_layers = sum(len(v) for v in imgs.layers.values())
    return statistics.median(walls), statistics.median(cpus), n_layers, int(cfg.log.slices_every)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--steps", type=int, default=5, help="timed training steps per config")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    base = ["device=cpu", f"threads={args.threads}"]
    print(f"CPU; torch {torch.__version__}; threads {args.threads}; median of {args.reps} writes")
    print(
        f"{'config':<14} {'layers':>6} {'write s':>8} {'write cpu s':>11} {'step s':>7}"
        f" {'every':>6} {'overhead':>9}"
    )
    for name, ov in {"small": ["+exp=small"], "default-size": ["+exp=default_size"]}.items():
        wall, cpu, n_layers, every = write_cost(base + ov, args.reps)
        step = 1.0 / steps_per_s(base + ov, args.steps, 2)
        print(
            f"{name:<14} {n_layers:>6} {wall:>8.3f} {cpu:>11.3f} {step:>7.3f} {every:>6}"
            f" {wall / (every * step):>8.2%}"
        )


if __name__ == "__main__":
    main()
