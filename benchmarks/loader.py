"""Crops per second and peak memory of the GAN's data path on full-grid SciVis files.

    nice -n 5 python benchmarks/loader.py                 # 4, 16, 32 files of 180 x 201 x 360
    python benchmarks/loader.py --files 2 4 --grid 45 51 90 # quicker, smaller grid

Writes ``max(--files)`` synthetic files (4 variables, float32, the contest grid by default) into a
temporary directory (deleted at the end; ~206 MB per full-grid file). For each file count a fresh
process runs the GAN's ``load_data`` (validation, the per-layer plausibility pass, scaling
statistics, lazy crop datasets), then reads crops through ``Batches`` for ``--seconds``; it reports
crops/s and the process's peak RSS. Beside them, the rate a default-size GAN step consumes crops:
``batch_size x (n_critic + 1)`` crops per step times the steps/s of
``benchmarks/train_speed.steps_per_s`` on the same files.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def cfg_for(data_dir: str, steps: list[int], extra: list[str] = ()):
    from hydra import compose, initialize_config_dir

    ov = [
        f"data.dir={data_dir}",
        f"data.train_steps={steps}",
        "data.val_steps=[]",
        "data.lazy=true",
        "threads=1",
        "diagnostics=off",
        *extra,
    ]
    with initialize_config_dir(config_dir=str(ROOT / "conf" / "gan"), version_base="1.3"):
        return compose("train_gan", overrides=ov)


def child(data_dir: str, n_files: int, seconds: float, n_workers: int) -> dict:
    """In a fresh process: load_data over n_files, then read batches for `seconds`."""
    import torch

    from experiments import distributed
    from experiments.train_gan import Batches, BatchStream, load_data

    torch.set_num_threads(1)
    cfg = cfg_for(data_dir, list(range(1, n_files + 1)), [f"data.n_workers={n_workers}"])
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as run:
        _, train_ds, *_ = load_data(cfg, Path(run), write=False)
    t_load = time.perf_counter() - t0
    B = int(cfg.train.batch_size)
    info = distributed.DistInfo()
    batches = Batches(train_ds, BatchStream(len(train_ds), B, info, 0), n_workers)
    batches.next()  # open files / start workers outside the timing
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        batches.next()
        n += B
    rate = n / (time.perf_counter() - t0)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    return {
        "files": n_files,
        "load_s": t_load,
        "crops_per_s": rate,
        "rss_gb": rss,
        "workers_rss_gb": kids,
    }


def consumption(data_dir: str, steps: int, warmup: int) -> tuple[float, float]:
    """(steps/s, crops/s) of the default-size GAN step on these files (train_speed's timing)."""
    from benchmarks.train_speed import steps_per_s

    cfg = cfg_for(data_dir, [1])
    per_step = int(cfg.train.batch_size) * (int(cfg.train.n_critic) + 1)
    ov = [
        f"data.dir={data_dir}",
        "data.train_steps=[1, 2]",
        "data.val_steps=[3]",
        "data.lazy=true",
        "threads=1",
        "+exp=default_size",
    ]
    sps = steps_per_s(ov, steps, warmup)
    return sps, sps * per_step


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--files", type=int, nargs="+", default=[4, 16, 32])
    ap.add_argument("--grid", type=int, nargs=3, default=[180, 201, 360], help="lat r lon")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--workers", type=int, default=0, help="data.n_workers of the crop readers")
    ap.add_argument("--gan-steps", type=int, default=3)
    ap.add_argument("--gan-warmup", type=int, default=1)
    ap.add_argument("--dir", default=None, help="parent of the temporary directory (default /tmp)")
    ap.add_argument("--child", nargs=2, metavar=("DIR", "N"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]), args.seconds, args.workers)))
        return

    import torch

    from experiments.data import synthetic

    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="fieldscope-loader-", dir=args.dir))
    try:
        t0 = time.perf_counter()
        synthetic.write_set(tmp, max(args.files), shape=args.grid)
        print(
            f"wrote {max(args.files)} files of (lat, r, lon) = {args.grid} in {time.perf_counter() - t0:.0f} s"
        )
        rows = []
        for n in args.files:
            out = subprocess.run(
                [sys.executable, __file__, "--child", str(tmp), str(n), "--seconds", str(args.seconds),
                 "--workers", str(args.workers)],
                stdout=subprocess.PIPE, text=True, check=True,
            )  # fmt: skip
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
        sps, need = consumption(str(tmp), args.gan_steps, args.gan_warmup)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(
        f"\ntorch {torch.__version__}; 1 torch thread; data.n_workers={args.workers}; "
        f"grid (lat, r, lon) = {args.grid}, 4 variables, crop 16x16x32, batch 4"
    )
    print(f"default-size GAN step: {sps:.3f} steps/s = {need:.1f} crops/s consumed")
    print(f"{'files':>5} {'load s':>8} {'crops/s':>9} {'x need':>7} {'peak RSS GB':>12}")
    for r in rows:
        print(
            f"{r['files']:>5} {r['load_s']:>8.1f} {r['crops_per_s']:>9.1f} "
            f"{r['crops_per_s'] / need:>7.1f} {r['rss_gb'] + r['workers_rss_gb']:>12.2f}"
        )


if __name__ == "__main__":
    main()
