"""Run snapshots: what the videos and notebooks need, kept beside the event file.

Format (version 1), inside a run directory::

    snapshots/meta.json            experiment kind and run-wide facts (variables, radii, edges, ...)
    snapshots/step_00000100.npz    one uncompressed .npz per snapshot step, written atomically

Keys inside a snapshot (all numpy arrays; unknown keys are allowed and ignored by readers):

    step                         0-d int64
    scalar/<tag>                 0-d float64, e.g. scalar/loss/G
    weights/<model>/<param>      float32 parameter tensor as in the model
    probe/<name>                 float32 arrays of the fixed probe samples (e.g. probe/fake)
    act_hist/<model>/<layer>     int64 counts (n_bins + 2: underflow, bins, overflow) over the
                                 steps since the previous snapshot
    act_edges/<model>/<layer>    float64 (n_bins + 1,) edges of those counts (log10|a| with the
                                 default per-layer bins; a fixed grid's edges are also in
                                 meta.json ``act_edges``)
    act_dead/<model>/<layer>     0-d float64 dead fraction, mean over the writes since then

A snapshot is written to ``step_XXXXXXXX.npz.tmp`` and renamed when complete, so a reader sees
either the whole snapshot or none. Only rank 0 writes.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from .rundir import atomic_write_text, commit, tmp_path
from .stats import to_numpy

FORMAT_VERSION = 1
_NAME = re.compile(r"^step_(\d{8})\.npz$")


_host = to_numpy  # diagnostics.stats: the one host copy of an array


class SnapshotWriter:
    """Writes snapshots and the run's ``meta.json`` (rank 0 only)."""

    def __init__(self, run_dir: str | os.PathLike, *, rank: int = 0) -> None:
        self.dir = Path(run_dir) / "snapshots"
        self.is_writer = rank == 0
        if self.is_writer:
            self.dir.mkdir(parents=True, exist_ok=True)

    def write_meta(self, meta: Mapping) -> None:
        """Write (or replace) ``meta.json``; adds ``format``."""
        if not self.is_writer:
            return
        data = {"format": FORMAT_VERSION, **meta}
        atomic_write_text(json.dumps(data, indent=2, default=_json_default), self.dir / "meta.json")

    def write(self, step: int, arrays: Mapping[str, object]) -> Path | None:
        """Write one snapshot atomically and return its path."""
        if not self.is_writer:
            return None
        host = {k: _host(v) for k, v in arrays.items()}
        host["step"] = np.asarray(step, dtype=np.int64)
        final = self.dir / f"step_{step:08d}.npz"
        tmp = tmp_path(final)
        with open(tmp, "wb") as f:
            np.savez(f, **host)
        commit(tmp, final)
        return final


def _json_default(o):
    if isinstance(o, np.ndarray | torch.Tensor):
        return _host(o).tolist()
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o)}")


def list_snapshots(run_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """(step, path) of every complete snapshot in the run, sorted by step."""
    d = Path(run_dir) / "snapshots"
    if not d.is_dir():
        return []
    out = []
    for p in d.iterdir():
        m = _NAME.match(p.name)
        if m:
            out.append((int(m.group(1)), p))
    return sorted(out)


def read_meta(run_dir: str | os.PathLike) -> dict:
    """The run's ``snapshots/meta.json``; a clear error when it is missing."""
    p = Path(run_dir) / "snapshots" / "meta.json"
    if not p.is_file():
        raise FileNotFoundError(
            f"{p}: no snapshot metadata (is {run_dir} a run directory with snapshots?)"
        )
    return json.loads(p.read_text())


def load_snapshot(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """All arrays of one snapshot, loaded eagerly (no pickles allowed)."""
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def resolve_run_dir(value: str | os.PathLike | None = None) -> Path:
    """The run directory named by ``value`` (default: the ``RUN`` environment variable).

    A relative path is looked up from the current directory, then from the directory the command
    was typed in (``PWD``, which a Jupyter kernel started from the repository root inherits while
    it runs in ``notebooks/``), then from each parent of the current directory. So
    ``RUN=outputs/gan/<run> jupyter lab notebooks/gan.ipynb`` works as written. Raises
    ``FileNotFoundError`` saying what was set and where it was looked for.
    """
    raw = os.environ.get("RUN", "") if value is None else str(value)
    if not raw:
        raise FileNotFoundError(
            "RUN is not set: start with RUN=<run directory>, e.g. "
            "RUN=outputs/gan/<run> jupyter lab notebooks/gan.ipynb"
        )
    p = Path(raw).expanduser()
    if p.is_absolute():
        bases = [Path("/")]
    else:
        cwd = Path.cwd()
        bases = [cwd]
        if os.environ.get("PWD"):
            bases.append(Path(os.environ["PWD"]))
        bases += list(cwd.parents)
    tried = []
    for b in bases:
        cand = (b / p).resolve()
        if cand in tried:
            continue
        tried.append(cand)
        if cand.is_dir():
            return cand
    raise FileNotFoundError(
        f"RUN={raw!r} is not a directory; looked for it at: "
        + ", ".join(map(str, tried[:4]))
        + (f" and {len(tried) - 4} parent directories" if len(tried) > 4 else "")
    )
