"""The command line of ``python -m diagnostics.video`` (``make video``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .base import MAX_PX, MAX_WEIGHT_VIDEOS, VideoError
from .driver import render_runs
from .encode import Encoding


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m diagnostics.video``."""
    p = argparse.ArgumentParser(
        prog="python -m diagnostics.video",
        description=(
            "Render training videos from run snapshots (RUN/snapshots/) into RUN/videos/: weight "
            "evolution per parameter tensor; GAN slice evolution per probe sample and the colorful "
            "dimension of the hooked layers; the autoencoder summary video. Up-to-date videos are "
            "skipped; a run still training renders the snapshots written so far."
        ),
        epilog=(
            "Comparison: --compare B C renders A, B, C side by side over the steps all of them have "
            "(intersection), with shared colour limits, into A/videos/compare_B_C/. "
            "Exit status 2 when a run is missing, empty or has no readable snapshots."
        ),
    )
    p.add_argument(
        "runs", nargs="+", metavar="RUN", help="run directory (each rendered on its own)"
    )
    p.add_argument(
        "--compare", nargs="+", metavar="RUN", default=[], help="runs to show beside the first RUN"
    )
    p.add_argument("--fps", type=float, default=12, help="frames per second (default 12)")
    p.add_argument(
        "--min-seconds",
        type=float,
        default=Encoding.min_seconds,
        help="shortest video: each snapshot's frame is held (repeated) to last at least this "
        f"long (default {Encoding.min_seconds:g})",
    )
    p.add_argument(
        "--all-weights",
        action="store_true",
        help=f"a video for every weight matrix and kernel bank (default: {MAX_WEIGHT_VIDEOS}, "
        "evenly over the tensors); biases and other small tensors are always line plots in "
        "weights_small",
    )
    p.add_argument(
        "--jobs", type=int, default=1, help="render processes (default 1: in this process)"
    )
    p.add_argument("--force", action="store_true", help="re-render videos that are up to date")
    p.add_argument(
        "--only", metavar="NAME", help="only videos whose name matches this glob or substring"
    )
    p.add_argument(
        "--per-frame", action="store_true", help="weight colour limits per frame, not per sequence"
    )
    p.add_argument(
        "--max-px", type=int, default=MAX_PX, help="longest side of a weight image (default 1920)"
    )
    p.add_argument(
        "--crf",
        type=int,
        default=Encoding.crf,
        help=f"x264 constant rate factor (default {Encoding.crf})",
    )
    p.add_argument(
        "--preset", default=Encoding.preset, help=f"x264 preset (default {Encoding.preset})"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (2 when a run cannot be rendered)."""
    args = build_parser().parse_args(argv)
    enc = Encoding(fps=args.fps, crf=args.crf, preset=args.preset, min_seconds=args.min_seconds)
    groups = [[args.runs[0], *args.compare]] if args.compare else [[r] for r in args.runs]
    if args.compare and len(args.runs) > 1:
        print("error: --compare takes exactly one RUN before it", file=sys.stderr)
        return 2
    try:
        for group in groups:
            written = render_runs(
                group,
                enc=enc,
                jobs=max(1, args.jobs),
                force=args.force,
                only=args.only,
                max_px=args.max_px,
                per_frame=args.per_frame,
                progress=not args.no_progress,
                max_weight_videos=None if args.all_weights else MAX_WEIGHT_VIDEOS,
            )
            for path in written.values():
                print(path)
    except VideoError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
