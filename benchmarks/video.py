"""Frames per second from run snapshots to a finished MP4, for the autoencoder summary video.

    .venv/bin/python benchmarks/video.py [--frames 32] [--jobs 2] [--shape 91 180]

Side by side, in one run, on the same synthetic autoencoder run (32 hidden neurons, Brohan's
91 x 180 field, weights drifting smoothly from a random start to a final state):

  (a) ours: ``diagnostics.video`` (numpy/LUT frames from ``render_summary_frame``, streamed to ffmpeg),
      with 1 process and with ``--jobs`` processes;
  (b) a matplotlib figure per frame (Brohan's layout: 64 pcolorfast maps, bar chart, contours, loss
      curve) saved as PNG, then ffmpeg over the PNGs; one process;
  (c) one Python process per frame, as Brohan ran ``compare_full.py --epoch=N``: each process imports
      matplotlib, loads the final and its own snapshot, draws the figure and saves a PNG; ``--jobs``
      processes at a time; then ffmpeg over the PNGs.

All three encode with the same x264 settings (``diagnostics.video.Encoding`` defaults, yuv420p).
Threads: OMP/MKL/OpenBLAS 1, torch 1 (set below, before numpy and torch load).
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_v] = "1"
os.environ.setdefault("MPLBACKEND", "Agg")

import argparse  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from diagnostics.video import Encoding  # noqa: E402

# the same x264 settings for all three pipelines: ours' defaults
ENC = [
    "-c:v",
    "libx264",
    "-preset",
    Encoding.preset,
    "-crf",
    str(Encoding.crf),
    "-pix_fmt",
    "yuv420p",
]


def smooth_fields(rng: np.random.Generator, n: int, shape: tuple[int, int]) -> np.ndarray:
    """n smooth random lat-lon fields (n, H*W): sums of a few low-wavenumber waves."""
    h, w = shape
    y, x = np.meshgrid(np.linspace(0, np.pi, h), np.linspace(0, 2 * np.pi, w), indexing="ij")
    out = np.zeros((n, h, w))
    for _ in range(4):
        ky, kx = rng.integers(1, 4, n), rng.integers(1, 5, n)
        ph, amp = rng.uniform(0, 2 * np.pi, n), rng.normal(size=n)
        out += (
            amp[:, None, None]
            * np.sin(ky[:, None, None] * y + ph[:, None, None])
            * np.cos(kx[:, None, None] * x)
        )
    return out.reshape(n, h * w).astype(np.float32)


def make_run(root: Path, n_frames: int, shape: tuple[int, int], n_hidden: int = 32) -> Path:
    """A synthetic autoencoder run in the snapshot layout of experiments/train_autoencoder.py."""
    from diagnostics.snapshots import SnapshotWriter

    h, w = shape
    f = h * w
    rng = np.random.default_rng(0)
    run = root / "ae_run"
    sw = SnapshotWriter(run)
    sw.write_meta(
        {
            "kind": "autoencoder",
            "shape": [h, w],
            "lat": np.linspace(90, -90, h).tolist(),
            "lon": np.linspace(0, 358, w).tolist(),
            "normalisation": {"offset": 101325.0, "scale": 3000.0},
            "variable": "prmsl",
            "units": "Pa",
            "probe_label": "2009-03-12:06",
            "total_steps": 100 * n_frames,
            "n_hidden": n_hidden,
        }
    )
    enc0, enc1 = 0.01 * rng.normal(size=(n_hidden, f)), 0.02 * smooth_fields(rng, n_hidden, shape)
    dec0, dec1 = 0.01 * rng.normal(size=(n_hidden, f)), 0.02 * smooth_fields(rng, n_hidden, shape)
    b0, b1 = 0.01 * rng.normal(size=n_hidden), rng.normal(size=n_hidden)
    field = smooth_fields(rng, 1, shape)[0]
    for k in range(n_frames):
        t = (k + 1) / n_frames
        sw.write(
            100 * (k + 1),
            {
                "weights/AE/encoder.weight": ((1 - t) * enc0 + t * enc1).astype(np.float32),
                "weights/AE/encoder.bias": ((1 - t) * b0 + t * b1).astype(np.float32),
                "weights/AE/decoder.weight": ((1 - t) * dec0 + t * dec1).T.astype(np.float32),
                "weights/AE/decoder.bias": np.zeros(f, np.float32),
                "probe/field": field.reshape(h, w),
                "probe/recon": (
                    t * field + (1 - t) * 0.3 * rng.normal(size=f).astype(np.float32)
                ).reshape(h, w),
                "scalar/loss/train": np.float64(1.0 / (1 + 5 * t)),
                "scalar/loss/val": np.float64(1.1 / (1 + 5 * t)),
            },
        )
    return run


# ---------------------------------------------------------------- (b), (c): Brohan's matplotlib frame
def mpl_frame_png(run: Path, step_index: int, out_png: Path) -> None:
    """Draw Brohan's summary figure (1920 x 1080) for one snapshot with matplotlib and save a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from diagnostics.snapshots import list_snapshots, load_snapshot, read_meta

    meta = read_meta(run)
    snaps = list_snapshots(run)
    final = load_snapshot(
        snaps[-1][1]
    )  # as compare_full.py: order and bar limit from the final model
    snap = load_snapshot(snaps[step_index][1])
    h, w = meta["shape"]
    lat, lon = np.asarray(meta["lat"]), np.asarray(meta["lon"])
    # cell edges for pcolorfast (one more than the cells)
    lon_e = np.linspace(lon[0] - 1, lon[-1] + 1, w + 1)
    lat_e = np.linspace(lat[-1] - 1, lat[0] + 1, h + 1)
    bf = final["weights/AE/encoder.bias"]
    order = np.argsort(np.abs(bf))[::-1]
    hw_max = float(np.abs(bf).max())
    b = snap["weights/AE/encoder.bias"]
    s = np.where(b < 0, -1.0, 1.0)
    enc = snap["weights/AE/encoder.weight"] * s[:, None]
    dec = snap["weights/AE/decoder.weight"].T * s[:, None]

    fig = Figure(figsize=(19.2, 10.8), dpi=100, facecolor=(0.88, 0.88, 0.88))
    FigureCanvasAgg(fig)
    for maps, (x0, y0, bw, bh) in ((enc, (0.0, 0.6, 0.5, 0.4)), (dec, (0.0, 0.0, 0.5, 0.4))):
        vmin, vmax = maps.mean() - 3 * maps.std(), maps.mean() + 3 * maps.std()
        for slot, ch in enumerate(order):
            r, c = divmod(slot, 6)
            ax = fig.add_axes(
                [
                    x0 + c * bw / 6 + 0.0025,
                    y0 + bh - (r + 1) * bh / 6 + 0.0025,
                    bw / 6 - 0.005,
                    bh / 6 - 0.005,
                ]
            )
            ax.set_axis_off()
            ax.pcolorfast(
                lon_e, lat_e, maps[ch].reshape(h, w)[::-1], cmap="coolwarm", vmin=vmin, vmax=vmax
            )
    ax = fig.add_axes([0.05, 0.425, 0.425, 0.15])
    ax.bar(range(len(order)), np.abs(b[order]), color="grey", tick_label=[str(o) for o in order])
    ax.set_ylim(0, 1.05 * hw_max)
    ax = fig.add_axes([0.505, 0.51, 0.475, 0.47])
    field = snap["probe/field"] * 3000 + 101325
    recon = snap["probe/recon"] * 3000 + 101325
    levels = np.linspace(field.min(), field.max(), 12)
    ax.contour(lon, lat, field / 100, levels / 100, colors="red", linewidths=1)
    ax.contour(lon, lat, recon / 100, levels / 100, colors="blue", linewidths=1)
    ax.set_axis_off()
    ax = fig.add_axes([0.55, 0.05, 0.425, 0.4])
    losses = [float(load_snapshot(p)["scalar/loss/train"]) for _, p in snaps[: step_index + 1]]
    ax.plot(range(1, len(losses) + 1), losses, color="grey")
    ax.set_xlim(0, len(snaps))
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("Epochs of training")
    fig.savefig(out_png)


def ffmpeg_pngs(png_dir: Path, out: Path, fps: float = 12) -> None:
    """Encode frame_%04d.png in ``png_dir`` with the shared x264 settings."""
    import imageio_ffmpeg

    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-framerate", str(fps)]
    cmd += ["-i", str(png_dir / "frame_%04d.png"), *ENC, str(out)]
    subprocess.run(cmd, check=True)


def count_frames(path: Path) -> int:
    import imageio_ffmpeg

    return imageio_ffmpeg.count_frames_and_secs(str(path))[0]


def bench_ours(run: Path, jobs: int) -> tuple[float, int]:
    from diagnostics.video import render_runs

    t = time.perf_counter()
    written = render_runs([run], only="summary", jobs=jobs, force=True, progress=False)
    dt = time.perf_counter() - t
    return dt, count_frames(written["summary"])


def bench_matplotlib(run: Path, n: int, tmp: Path) -> tuple[float, int]:
    d = tmp / "pngs_b"
    d.mkdir()
    t = time.perf_counter()
    for k in range(n):
        mpl_frame_png(run, k, d / f"frame_{k:04d}.png")
    ffmpeg_pngs(d, tmp / "b.mp4")
    dt = time.perf_counter() - t
    return dt, count_frames(tmp / "b.mp4")


def bench_process_per_frame(run: Path, n: int, jobs: int, tmp: Path) -> tuple[float, int]:
    d = tmp / "pngs_c"
    d.mkdir()
    cmds = [
        [sys.executable, __file__, "--one-frame", str(run), str(k), str(d / f"frame_{k:04d}.png")]
        for k in range(n)
    ]
    t = time.perf_counter()
    running: list[subprocess.Popen] = []
    for cmd in cmds:
        if len(running) >= jobs:
            running.pop(0).wait()
        running.append(subprocess.Popen(cmd))
    for p in running:
        p.wait()
    if any(not (d / f"frame_{k:04d}.png").is_file() for k in range(n)):
        raise RuntimeError("a per-frame process failed")
    ffmpeg_pngs(d, tmp / "c.mp4")
    dt = time.perf_counter() - t
    return dt, count_frames(tmp / "c.mp4")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=32)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--shape", type=int, nargs=2, default=(91, 180))
    p.add_argument(
        "--ours-only", action="store_true", help="only (a): how it scales with frames and jobs"
    )
    p.add_argument("--one-frame", nargs=3, metavar=("RUN", "INDEX", "PNG"), help=argparse.SUPPRESS)
    args = p.parse_args()
    torch.set_num_threads(1)
    if args.one_frame:
        run, k, png = args.one_frame
        mpl_frame_png(Path(run), int(k), Path(png))
        return
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        run = make_run(tmp, args.frames, tuple(args.shape))
        print(
            f"autoencoder summary video, 1920x1080, {args.frames} frames, 32 neurons, field {args.shape[0]}x{args.shape[1]}; "
            f"torch threads {torch.get_num_threads()}, OMP/MKL/OpenBLAS 1, {os.cpu_count()} cpus; x264 {' '.join(ENC[2:6])}"
        )
        rows = [
            ("(a) ours, jobs=1", bench_ours(run, 1)),
            (f"(a) ours, jobs={args.jobs}", bench_ours(run, args.jobs)),
        ]
        if args.ours_only:
            for name, (dt, n) in rows:
                print(f"{name:62s} {n:4d} frames {dt:7.2f} s {n / dt:7.2f} frames/s")
            return
        rows += [
            (
                "(b) matplotlib PNG per frame + ffmpeg, 1 process",
                bench_matplotlib(run, args.frames, tmp),
            ),
            (
                f"(c) one process per frame (Brohan), {args.jobs} at a time + ffmpeg",
                bench_process_per_frame(run, args.frames, args.jobs, tmp),
            ),
        ]
        # By position: with --jobs 1 the two (a) rows share a label (the second is a warm repeat).
        fps = [n / dt for _, (dt, n) in rows]
        for name, (dt, n) in rows:
            print(f"{name:62s} {n:4d} frames {dt:7.2f} s {n / dt:7.2f} frames/s")
        print(
            f"speed-up over (b): (a) jobs=1 {fps[0] / fps[2]:.1f}x, (a) jobs={args.jobs} {fps[1] / fps[2]:.1f}x; "
            f"over (c): (a) jobs={args.jobs} {fps[1] / fps[3]:.1f}x"
        )


if __name__ == "__main__":
    main()
