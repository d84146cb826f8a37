"""Parallel rendering and scanning in worker processes (forkserver, or spawn)."""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import sys
from collections.abc import Iterator, Sequence

import numpy as np

from .base import VideoError
from .frames import Job
from .runs import Run, _scan_task

_JOB: Job | None = None
PRELOAD = [
    "diagnostics.video",
    "diagnostics.snapshots",
    "diagnostics.weightmaps",
    "diagnostics.slices",
    "matplotlib.figure",
    "matplotlib.backends.backend_agg",
]


def _init_worker(job: Job | None) -> None:
    global _JOB
    _JOB = job
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)


def _render_task(i: int) -> np.ndarray:
    return _JOB.render(i)


def mp_context() -> mp.context.BaseContext:
    """forkserver where available (safe with torch imported, workers start cheap), else spawn."""
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        # workers fork from a server that has imported these once (torch included, via snapshots),
        # instead of paying the imports in every worker
        ctx.set_forkserver_preload(PRELOAD)
        return ctx
    return mp.get_context("spawn")


@contextlib.contextmanager
def _main_not_reimported() -> Iterator[None]:
    """Under ``python -m diagnostics.video``, workers do not re-run ``diagnostics.video.__main__``
    as their ``__mp_main__``: that re-import printed a runpy RuntimeWarning per worker and pool (64
    with ``--jobs 2``) and cost a second import. Jobs pickle as ``diagnostics.video.frames.Job``
    (the ``__main__`` module calls the imported package's ``cli.main``), so workers need nothing
    from ``__main__``."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if main is None or getattr(spec, "name", None) != f"{__package__}.__main__":
        yield
        return
    path = main.__dict__.pop("__file__", None)
    main.__spec__ = None
    try:
        yield
    finally:
        main.__spec__ = spec
        if path is not None:
            main.__file__ = path


def iter_frames(job: Job, jobs: int = 1) -> Iterator[np.ndarray]:
    """Frames of ``job`` in order, rendered in ``jobs`` worker processes (in this process when 1)."""
    if jobs <= 1:
        for i in range(len(job.steps)):
            yield job.render(i)
        return
    with (
        _main_not_reimported(),
        mp_context().Pool(jobs, initializer=_init_worker, initargs=(job,)) as pool,
    ):
        yield from pool.imap(_render_task, range(len(job.steps)), chunksize=1)


def scan_runs(runs: Sequence[Run], jobs: int = 1) -> None:
    """Fill each run's ``stats`` from its snapshots; unreadable ones are reported and dropped."""
    tasks = [p for r in runs for p in r.snapshots.values()]
    if jobs > 1 and len(tasks) > 1:
        with (
            _main_not_reimported(),
            mp_context().Pool(jobs, initializer=_init_worker, initargs=(None,)) as pool,
        ):
            results = pool.map(_scan_task, tasks, chunksize=max(1, len(tasks) // (4 * jobs)))
    else:
        results = [_scan_task(p) for p in tasks]
    by_path = {p: (s, err) for p, s, err in results}
    for r in runs:
        for step, p in sorted(r.snapshots.items()):
            stats, err = by_path[p]
            if err is not None:
                print(f"warning: skipping unreadable snapshot {p}: {err}", file=sys.stderr)
            else:
                r.stats[step] = stats
        if not r.stats:
            raise VideoError(
                f"{r.run_dir / 'snapshots'}: none of the {len(r.snapshots)} snapshots is readable"
            )
