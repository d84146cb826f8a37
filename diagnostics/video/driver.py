"""The driver: render every video of one run or a comparison, skipping the up-to-date ones
(``videos/.index.json``)."""

from __future__ import annotations

import fnmatch
import json
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from ..rundir import atomic_write_text
from .base import INDEX_FORMAT, INDEX_NAME, MAX_PX, MAX_WEIGHT_VIDEOS, VideoError, _safe
from .encode import Encoding, encode_video, frame_hold
from .parallel import iter_frames, scan_runs
from .plan import plan_jobs
from .runs import Run, open_run


def _signature(runs: Sequence[Run]) -> list:
    sig = []
    for r in runs:
        files = [
            (p.name, p.stat().st_size, p.stat().st_mtime_ns) for _, p in sorted(r.snapshots.items())
        ]
        meta = r.run_dir / "snapshots" / "meta.json"
        sig.append([str(r.run_dir.resolve()), meta.stat().st_mtime_ns, files])
    return sig


def _read_index(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
        return data if data.get("format") == INDEX_FORMAT else {}
    except (OSError, ValueError):
        return {}


def _write_index(path: Path, index: dict) -> None:
    atomic_write_text(json.dumps(index, indent=1), path)


def render_runs(
    run_dirs: Sequence[str | os.PathLike],
    *,
    out_dir: str | os.PathLike | None = None,
    enc: Encoding = Encoding(),  # noqa: B008 - frozen dataclass, immutable
    jobs: int = 1,
    force: bool = False,
    only: str | None = None,
    max_px: int = MAX_PX,
    per_frame: bool = False,
    progress: bool = True,
    max_weight_videos: int | None = MAX_WEIGHT_VIDEOS,
) -> dict[str, Path]:
    """Render every video the runs support together (one run, or a comparison); name -> path written.

    Videos that are up to date are skipped (not in the result). ``out_dir`` defaults to
    ``RUN/videos`` for one run and ``RUN/videos/compare_<b>_<c>`` for a comparison.
    """
    runs = [open_run(p) for p in run_dirs]
    first = runs[0].run_dir
    if out_dir is None:
        out_dir = first / "videos"
        if len(runs) > 1:
            out_dir = out_dir / _safe(
                "compare_" + "_".join(r.run_dir.resolve().name for r in runs[1:])
            )
    out = Path(out_dir)
    index_path = out / INDEX_NAME
    options = {
        "enc": [enc.fps, enc.crf, enc.preset, enc.min_seconds],
        "max_px": max_px,
        "per_frame": per_frame,
        "max_weight_videos": max_weight_videos,
    }
    index = {} if force else _read_index(index_path)
    signature = _signature(runs)
    done = index.get("videos", {})
    if (
        index.get("signature") == signature
        and index.get("options") == options
        and index.get("planned")
        and set(index["planned"]) <= set(done)
        and all((out / f"{name}.mp4").is_file() for name in index["planned"])
    ):
        print(f"{out}: all {len(done)} videos up to date", file=sys.stderr)
        return {}

    scan_runs(runs, jobs)
    planned = planned_all = plan_jobs(
        runs, max_px=max_px, per_frame=per_frame, max_weight_videos=max_weight_videos
    )
    if only:
        planned = [j for j in planned if fnmatch.fnmatch(j.name, only) or only in j.name]
        if not planned:
            raise VideoError(f"--only {only!r} matches none of the videos these runs support")
    if index.get("options") != options:
        done = {}
    todo = [
        j
        for j in planned
        if not (done.get(j.name) == j.steps and (out / f"{j.name}.mp4").is_file())
    ]
    if len(todo) < len(planned):
        print(
            f"{out}: {len(planned) - len(todo)} of {len(planned)} videos up to date",
            file=sys.stderr,
        )
    from tqdm import tqdm

    written: dict[str, Path] = {}
    bar = tqdm(
        total=sum(len(j.steps) for j in todo),
        unit="frame",
        disable=not (progress and todo),
        file=sys.stderr,
    )
    try:
        for j in todo:
            bar.set_description(j.name)
            target = out / f"{j.name}.mp4"

            def counted(frames: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
                for f in frames:
                    yield f
                    bar.update(1)

            encode_video(
                counted(iter_frames(j, jobs)), target, enc, hold=frame_hold(len(j.steps), enc)
            )
            written[j.name] = target
            done[j.name] = j.steps
            _write_index(
                index_path,
                {
                    "format": INDEX_FORMAT,
                    "signature": signature,
                    "options": options,
                    "planned": [p.name for p in planned_all],
                    "videos": done,
                },
            )
    finally:
        bar.close()
    return written
