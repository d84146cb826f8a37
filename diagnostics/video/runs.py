"""Run directories: identity and overrides, snapshot listing, the per-snapshot scan the
run-wide limits need."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..weight_images import picture_worthy
from .base import SMALL_LINES, VideoError


@dataclass
class Run:
    """One run directory with its readable snapshots."""

    run_dir: Path
    name: str
    overrides: list[str]
    meta: dict
    snapshots: dict[int, Path]
    stats: dict[int, dict] = field(default_factory=dict)
    label: str = ""


def _run_identity(run_dir: Path, meta: dict) -> tuple[str, list[str]]:
    name = str(meta.get("run_name") or run_dir.resolve().name)
    hydra = run_dir / ".hydra" / "overrides.yaml"
    if hydra.is_file():
        import yaml

        loaded = yaml.safe_load(hydra.read_text()) or []
        return name, [str(o) for o in loaded]
    return name, [str(o) for o in meta.get("overrides", [])]


def distinguishing_overrides(overrides: Sequence[Sequence[str]]) -> list[list[str]]:
    """For each run, its overrides that not every run has (order kept)."""
    common = set(overrides[0]).intersection(*map(set, overrides[1:])) if overrides else set()
    return [[o for o in ov if o not in common] for ov in overrides]


def open_run(path: str | os.PathLike) -> Run:
    """Check a run directory and list its snapshots; VideoError naming what is missing."""
    from ..snapshots import list_snapshots

    run_dir = Path(path)
    if not str(path):
        raise VideoError(
            "RUN is empty: give a run directory, e.g. RUN=outputs/gan/2026-01-01_00-00-00"
        )
    if not run_dir.exists():
        raise VideoError(f"run directory {run_dir} does not exist")
    if not run_dir.is_dir():
        raise VideoError(f"{run_dir} is not a directory")
    if not any(run_dir.iterdir()):
        raise VideoError(f"run directory {run_dir} is empty")
    meta_path = run_dir / "snapshots" / "meta.json"
    if not meta_path.is_file():
        raise VideoError(
            f"{meta_path} is missing: {run_dir} has no snapshots (was it trained with snapshots on?)"
        )
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as e:
        raise VideoError(f"{meta_path} is unreadable: {e}") from e
    snaps = dict(list_snapshots(run_dir))
    if not snaps:
        raise VideoError(f"{run_dir / 'snapshots'} holds no snapshot files (step_XXXXXXXX.npz)")
    name, overrides = _run_identity(run_dir, meta)
    return Run(run_dir, name, overrides, meta, snaps)


def _load_keys(path: Path, keys: Iterable[str]) -> dict[str, np.ndarray]:
    # np.load on an .npz reads only the members asked for; a weight video needs one tensor
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in keys}


def scan_snapshot(path: Path) -> dict:
    """Everything the run-wide limits need from one snapshot (small, picklable)."""
    out: dict = {
        "weights": {},
        "shapes": {},
        "small": {},
        "act_hist": {},
        "act_edges": {},
        "probe_diff": None,
        "probe_range": None,
        "keys": [],
    }
    with np.load(path, allow_pickle=False) as z:
        keys = list(z.files)
        out["keys"] = keys
        for k in keys:
            if k.startswith("weights/"):
                a = z[k]
                # buffers such as num_batches_tracked are not weights to watch
                if a.dtype.kind == "f" and a.size:
                    out["weights"][k] = float(np.nanmax(np.abs(a)))
                    out["shapes"][k] = tuple(int(x) for x in a.shape)
                    if not picture_worthy(a.shape):
                        # a line per value, or min / mean / max of a longer vector
                        v = a.astype(np.float64).reshape(-1)
                        out["small"][k] = (
                            v if v.size <= SMALL_LINES else np.array([v.min(), v.mean(), v.max()])
                        )
            elif k.startswith("act_hist/"):
                out["act_hist"][k] = np.asarray(z[k], dtype=np.int64)
            elif k.startswith("act_edges/"):  # per-layer edges (auto bins), keyed like act_hist
                out["act_edges"]["act_hist/" + k.removeprefix("act_edges/")] = np.asarray(
                    z[k], dtype=np.float64
                )
        if "probe/fake" in keys and "probe/truth" in keys:
            fake, truth = z["probe/fake"], z["probe/truth"]
            out["probe_diff"] = float(np.nanmax(np.abs(fake - truth)))
            # (n_probe, n_var, H, W): per-variable range, for runs whose meta lacks clim
            out["probe_range"] = (
                np.nanmin(truth, axis=(0, 2, 3)).tolist(),
                np.nanmax(truth, axis=(0, 2, 3)).tolist(),
            )
    return out


def _scan_task(path: Path) -> tuple[Path, dict | None, str | None]:
    try:
        return path, scan_snapshot(path), None
    except Exception as e:  # noqa: BLE001 - any unreadable snapshot is reported and skipped
        return path, None, f"{type(e).__name__}: {e}"


def _labels(runs: Sequence[Run]) -> list[str]:
    if len(runs) == 1:
        return [" ".join([runs[0].name, *runs[0].overrides])]
    diff = distinguishing_overrides([r.overrides for r in runs])
    return [" ".join([r.name, *d]) for r, d in zip(runs, diff, strict=True)]
