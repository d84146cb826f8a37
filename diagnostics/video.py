"""Videos of training, rendered from a run's snapshots after (or during) training.

``python -m diagnostics.video RUN [RUN ...] [--compare RUN ...]`` (``make video RUN=...``) writes every
video the run supports into ``RUN/videos/``:

==========================  =======================================================================
``weights_<model>_<param>``  one per weight matrix or kernel bank (:func:`picture_worthy`), at most
                             ``MAX_WEIGHT_VIDEOS`` (8) shared evenly over the models unless
                             ``--all-weights``; keras_weight_animator style: the tensor mapped to 2D
                             by :func:`weight_to_2d` (thin matrices folded into bands at about
                             16:9), upscaled by the largest integer nearest-neighbour factor (never
                             below 1) that keeps the width <= ``max_px`` (1920) and the height
                             <= ``max_px`` - 40 - 34 (header, colour bar), RdBu_r with fixed
                             symmetric limits +-max|w| over the whole sequence (``--per-frame``: the
                             limits of each frame, as the animator did), colour bar below.
                             Floating-point tensors only (not buffers such as num_batches_tracked).
``weights_small``            biases, scalars and other tensors too small for a picture: one line
                             plot each over the steps (a line per value up to 8 values, else
                             min / mean / max), y limits fixed over the run.
``slices_p<j>``              GAN: probe sample j, rows upsampled input / generated / truth /
                             difference, one column per variable (:func:`diagnostics.slices.slice_panel`);
                             field limits from meta ``clim``, difference limits meta ``diff_lim``
                             or else +-max|fake - truth| over the run; cells scaled to fit 1920 x 1080.
``act_colordim``             GAN: the colorful dimension of every hooked layer (``act_hist/...``),
                             drawn by :func:`diagnostics.render.colorful_panel` as in TensorBoard:
                             log1p(counts) of each snapshot's histogram as one column, bin 0 at the
                             bottom (under/overflow bins included), rows labelled with the bin edges,
                             columns with the steps, growing to the right frame by frame; future
                             columns grey; colour bar 0..max over the run per layer.
``summary``                  autoencoder: Brohan's 1920 x 1080 summary frame
                             (:func:`diagnostics.weightmaps.render_summary_frame`), neuron order from
                             the final snapshot (colour limits per run, also when compared).
==========================  =======================================================================

Frame layout: each run's panel (at least ``MIN_PANEL_W`` px wide) has a white header of ``HEADER`` (40) px, two text lines (shrunk or wrapped, never cut): the run label
(name and its distinguishing overrides) and ``step <N>  <title>``; the panel content follows. Panels
sit side by side left to right with ``PAD`` (4) px of grey between them, padded to even sides; with
N runs each panel gets (max_px - 4 (N - 1)) / N px of width. A single-run summary video is the bare
1920 x 1080 frame (no header); a compared one is N such frames under headers, side by side.

Comparison (``--compare b c``) renders the views all runs support into ``RUN/videos/compare_<b>_<c>/``
over the INTERSECTION of their snapshot steps, so every panel of a frame shows the same step; colour
limits are taken over all runs together. Each panel is labelled with its run name and the overrides
that distinguish it (present in it and not in every other run).

Every video lasts at least ``Encoding.min_seconds`` (5 s, ``--min-seconds``): with few snapshots each
frame is sent several times (:func:`frame_hold`). The first frame is the first snapshot (step 0, the
untrained state, in runs of both scripts).

Videos stream to ffmpeg (imageio-ffmpeg, libx264 superfast crf 23, yuv420p, 12 fps by default; no
PNG files) under a temporary name and are renamed
when complete; ``videos/.index.json`` records the snapshot steps and options of every finished video,
and a re-run skips those that are up to date. Frames render in ``--jobs`` worker processes
(forkserver, or spawn where unavailable), each reading its own snapshots.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import json
import multiprocessing as mp
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .render import colorbar, fit_label_above, lines_panel, pad_even, tile
from .rundir import atomic_write_text, commit
from .weight_images import (  # noqa: F401 - re-exported
    GAP_RGB,
    fit_factor,
    layout_note,
    picture_worthy,
    weight_frame,
    weight_image,
    weight_to_2d,
)

HEADER = 40  # px: two 20 px text lines above every panel
PAD = 4  # px of background between panels of a comparison
BACKGROUND = (224, 224, 224)
MAX_PX = 1920
FRAME_H = 1080  # height budget of slice and colorful-dimension frames
MIN_PANEL_W = 480  # px: narrower panels are padded so their headers stay readable
BAR = 34  # px: the colour bar under a weight frame
MAX_WEIGHT_VIDEOS = 8  # weight videos by default (evenly over the tensors); --all-weights for all
SMALL_LINES = 8  # a tensor with at most this many values is drawn one line per value
INDEX_NAME = ".index.json"
INDEX_FORMAT = 1


class VideoError(RuntimeError):
    """A run cannot be rendered; the message names what is missing."""


# ----------------------------------------------------------------------------------------------
# tensors to pixels


def header(width: int, line1: str, line2: str) -> np.ndarray:
    """White strip of ``HEADER`` px with two text lines (shrunk or wrapped to fit, never cut)."""
    empty = np.zeros((0, width, 3), np.uint8)
    return fit_label_above(empty, f"{line1}\n{line2}", height=HEADER, size=14)


def hstack_panels(panels: Sequence[np.ndarray]) -> np.ndarray:
    """Panels side by side, top-aligned, ``PAD`` px apart on a grey background, even sides."""
    h = max(p.shape[0] for p in panels)
    w = sum(p.shape[1] for p in panels) + PAD * (len(panels) - 1)
    out = np.empty((h, w, 3), np.uint8)
    out[:] = BACKGROUND
    x = 0
    for p in panels:
        out[: p.shape[0], x : x + p.shape[1]] = p[..., :3]
        x += p.shape[1] + PAD
    return pad_even(out, fill=BACKGROUND[0])


# ----------------------------------------------------------------------------------------------
# runs


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
    from .snapshots import list_snapshots

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


# ----------------------------------------------------------------------------------------------
# jobs: one video each


@dataclass
class Job:
    """One video: what to draw, over which steps, from which snapshot of each run."""

    name: str
    kind: str  # weights | small | slices | colordim | summary
    key: str
    steps: list[int]
    paths: list[list[Path]]  # [frame][run]
    labels: list[str]
    params: dict

    def render(self, i: int) -> np.ndarray:
        """Frame ``i`` as RGB uint8 (H, W, 3) with even sides."""
        step = self.steps[i]
        n = len(self.labels)
        panels = []
        for r in range(n):
            content = _RENDERERS[self.kind](self, i, r)
            if self.kind == "summary" and n == 1:
                return pad_even(content, fill=BACKGROUND[0])
            budget = max(1, (self.params.get("max_px", MAX_PX) - PAD * (n - 1)) // n)
            min_w = min(MIN_PANEL_W, budget)
            if content.shape[1] < min_w:
                wide = np.full((content.shape[0], min_w, 3), 255, np.uint8)
                wide[:, : content.shape[1]] = content[..., :3]
                content = wide
            title = self.params.get("title", self.key)
            panels.append(
                np.concatenate(
                    [header(content.shape[1], self.labels[r], f"step {step}  {title}"), content],
                    axis=0,
                )
            )
        return hstack_panels(panels)


def _render_weights(job: Job, i: int, r: int) -> np.ndarray:
    w = _load_keys(job.paths[i][r], [job.key])[job.key]
    lim = float(np.nanmax(np.abs(w))) if job.params["per_frame"] and w.size else job.params["lim"]
    lim = max(lim, 1e-12)
    n = len(job.labels)
    max_px = job.params["max_px"]
    img = weight_frame(
        w, lim, max_w=max(1, (max_px - PAD * (n - 1)) // n), max_h=job.params["max_h"]
    )
    bar = colorbar(img.shape[1], -lim, lim, "RdBu_r", label="weight")
    if bar.shape[1] > img.shape[1]:
        wide = np.full((img.shape[0], bar.shape[1], 3), 255, np.uint8)
        wide[:, : img.shape[1]] = img
        img = wide
    return np.concatenate([img, bar], axis=0)


def _render_small(job: Job, i: int, r: int) -> np.ndarray:
    """Every small tensor (biases, scalars) as a line plot over the steps, up to frame ``i``."""
    p = job.params
    cells = []
    for key in p["keys"]:
        m = p["series"][r][key].copy()  # (k, n_steps)
        m[:, i + 1 :] = np.nan
        cells.append(
            lines_panel(
                m,
                job.steps,
                title=f"{key.removeprefix('weights/')} {p['shapes'][key]}",
                names=p["names"][key],
                ylim=p["ylim"][key],
                plot_w=p["plot_w"],
                plot_h=p["plot_h"],
            )
        )
    h, w = max(c.shape[0] for c in cells), max(c.shape[1] for c in cells)
    return tile([_pad_to(c, h, w) for c in cells], ncols=p["ncols"], pad=3, fill=BACKGROUND)


def _render_slices(job: Job, i: int, r: int) -> np.ndarray:
    from .slices import slice_panel

    p = job.params
    j = p["probe"]
    d = _load_keys(job.paths[i][r], ["probe/input_up", "probe/fake", "probe/truth"])
    radii = p["radii_km"][r]
    return slice_panel(
        d["probe/input_up"][j],
        d["probe/fake"][j],
        d["probe/truth"][j],
        p["variables"],
        float(radii[j]) if j < len(radii) else 0.0,
        p["clim"],
        diff_lim=p["diff_lim"],
        cell_px=p["cell_px"],
        scaling=p.get("scaling"),
    )


def _render_colordim(job: Job, i: int, r: int) -> np.ndarray:
    from .render import colorful_panel

    p = job.params
    cells = []
    for layer in p["layers"]:
        # (n_steps, n_counts) -> (n_counts, n_steps); snapshots after frame i are still to come
        m = p["counts"][r][layer].T.astype(np.float64)
        m[:, i + 1 :] = np.nan
        nb = m.shape[0]
        edges = p["layer_edges"].get(layer)
        if edges is None or len(edges) != nb - 1:
            edges = p["edges"] if len(p["edges"]) == nb - 1 else np.arange(nb - 1)
        cells.append(
            colorful_panel(
                m,
                edges,
                job.steps,
                title=layer.removeprefix("act_hist/"),
                value_label=p["value_label"],
                vmax=p["vmax"][layer],
                plot_w=p["panel_w"],
                plot_h=p["panel_h"],
                gap_rgb=GAP_RGB,
            )
        )
    h, w = max(c.shape[0] for c in cells), max(c.shape[1] for c in cells)
    cells = [_pad_to(c, h, w) for c in cells]
    return tile(cells, ncols=p["ncols"], pad=3, fill=BACKGROUND)


def _pad_to(img: np.ndarray, h: int, w: int, fill=(255, 255, 255)) -> np.ndarray:
    out = np.empty((h, w, 3), np.uint8)
    out[:] = fill
    out[: img.shape[0], : img.shape[1]] = img[..., :3]
    return out


def _render_summary(job: Job, i: int, r: int) -> np.ndarray:
    from .snapshots import load_snapshot
    from .weightmaps import render_summary_frame

    return render_summary_frame(job.params["ctx"][r], load_snapshot(job.paths[i][r]))


_RENDERERS: dict[str, Callable[[Job, int, int], np.ndarray]] = {
    "weights": _render_weights,
    "slices": _render_slices,
    "colordim": _render_colordim,
    "summary": _render_summary,
    "small": _render_small,
}


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def plan_jobs(
    runs: Sequence[Run],
    *,
    max_px: int = MAX_PX,
    per_frame: bool = False,
    max_weight_videos: int | None = MAX_WEIGHT_VIDEOS,
) -> list[Job]:
    """Every video the runs support together, synchronised on the intersection of their steps.

    Weight videos: one per matrix or kernel bank (:func:`picture_worthy`), at most
    ``max_weight_videos`` of them (None: all), chosen evenly over the tensors in name order;
    biases and other small tensors become line plots in one ``weights_small`` video."""
    steps = sorted(set.intersection(*(set(r.stats) for r in runs)))
    if not steps:
        raise VideoError(
            "the runs share no snapshot step: " + ", ".join(str(r.run_dir) for r in runs)
        )
    labels = _labels(runs)
    paths = [[r.snapshots[s] for r in runs] for s in steps]
    jobs: list[Job] = []

    def keys_everywhere(prefix: str) -> list[str]:
        per_run = [set().union(*(set(r.stats[s]["keys"]) for s in steps)) for r in runs]
        return sorted(k for k in set.intersection(*per_run) if k.startswith(prefix))

    float_keys = {k for r in runs for s in steps for k in r.stats[s]["weights"]}
    shapes = {k: v for r in runs for s in steps for k, v in r.stats[s]["shapes"].items()}
    weight_keys = [k for k in keys_everywhere("weights/") if k in float_keys]
    # a picture only where a tensor has one: matrices and kernel banks; the rest are line plots
    big = [k for k in weight_keys if picture_worthy(shapes[k])]
    small = [k for k in weight_keys if not picture_worthy(shapes[k])]
    if max_weight_videos is not None and len(big) > max_weight_videos:
        n_all = len(big)
        big = _evenly_per_model(big, max_weight_videos)
        print(
            f"note: {len(big)} of {n_all} weight videos (evenly over each model's tensors); "
            "--all-weights (make video ALL=1) renders every one",
            file=sys.stderr,
        )
    for key in big:
        # a tensor missing from some snapshot (e.g. logged late) gets a video over the steps holding it
        idx = [i for i, s in enumerate(steps) if all(key in r.stats[s]["weights"] for r in runs)]
        lim = max(r.stats[steps[i]]["weights"][key] for r in runs for i in idx)
        shown = weight_to_2d(np.zeros(shapes[key], np.float32))
        full = weight_image(np.zeros(shapes[key], np.float32))
        fold = (
            f", folded from {full.shape[0]}x{full.shape[1]} into {shown.shape[0]}x{shown.shape[1]}"
            if full.shape != shown.shape
            else ""
        )
        scale = "per frame" if per_frame else f"+-{lim:.3g} over the run"
        jobs.append(
            Job(
                _safe(key.replace("/", "_")),
                "weights",
                key,
                [steps[i] for i in idx],
                [paths[i] for i in idx],
                labels,
                {
                    "lim": lim,
                    "per_frame": per_frame,
                    "max_px": max_px,
                    "max_h": max(1, max_px - HEADER - BAR),
                    "title": f"{key.removeprefix('weights/')} {shapes[key]}, scale {scale}; "
                    f"{layout_note(shapes[key])}{fold}",
                },
            )
        )
    small = [k for k in small if all(k in r.stats[s]["small"] for r in runs for s in steps)]
    if small:
        jobs.append(_plan_small(runs, steps, paths, labels, small, shapes, max_px))
    kinds = {r.meta.get("kind") for r in runs}
    if kinds == {"gan"}:
        jobs += _plan_gan(runs, steps, paths, labels, max_px)
    elif kinds == {"autoencoder"}:
        jobs += _plan_summary(runs, steps, paths, labels)
    return jobs


def _evenly_per_model(keys: list[str], cap: int) -> list[str]:
    """At most ``cap`` of ``weights/<model>/...`` keys: the cap shared out over the models as
    evenly as their counts allow, each model's share spread evenly over its tensors (first and
    last included), name order kept."""
    groups: dict[str, list[str]] = {}
    for k in keys:
        groups.setdefault(k.split("/")[1], []).append(k)
    share = dict.fromkeys(groups, 0)
    left = cap
    while left > 0 and any(share[m] < len(g) for m, g in groups.items()):
        for m, g in groups.items():
            if left and share[m] < len(g):
                share[m] += 1
                left -= 1
    picked = set()
    for m, g in groups.items():
        if share[m]:
            picked |= {g[int(round(x))] for x in np.linspace(0, len(g) - 1, share[m])}
    return [k for k in keys if k in picked]


def _plan_small(runs, steps, paths, labels, keys, shapes, max_px) -> Job:
    series = [
        {k: np.stack([r.stats[s]["small"][k] for s in steps], axis=1) for k in keys} for r in runs
    ]
    ylim = {}
    for k in keys:
        vals = np.concatenate([ser[k].reshape(-1) for ser in series])
        vals = vals[np.isfinite(vals)]
        ylim[k] = (float(vals.min()), float(vals.max())) if vals.size else (0.0, 1.0)
    names = {
        k: (
            ["min", "mean", "max"]
            if int(np.prod(shapes[k])) > SMALL_LINES
            else ([f"[{j}]" for j in range(int(np.prod(shapes[k])))] if shapes[k] else ["value"])
        )
        for k in keys
    }
    from .render import AX_BOTTOM, AX_LEFT, AX_RIGHT, AX_TITLE

    n = len(runs)
    ncols = int(np.ceil(np.sqrt(len(keys))))
    nrows = -(-len(keys) // ncols)
    budget_w = (max_px - PAD * (n - 1)) // n
    plot_w = max(60, min(480, (budget_w - 3) // ncols - AX_LEFT - AX_RIGHT - 3))
    plot_h = max(40, min(240, (FRAME_H - HEADER - 3) // nrows - AX_TITLE - AX_BOTTOM - 3))
    return Job(
        "weights_small",
        "small",
        "weights_small",
        list(steps),
        paths,
        labels,
        {
            "keys": keys,
            "series": series,
            "ylim": ylim,
            "names": names,
            "shapes": {k: shapes[k] for k in keys},
            "ncols": ncols,
            "plot_w": plot_w,
            "plot_h": plot_h,
            "max_px": max_px,
            "title": "small tensors (biases, scalars) over the run",
        },
    )


def _labels(runs: Sequence[Run]) -> list[str]:
    if len(runs) == 1:
        return [" ".join([runs[0].name, *runs[0].overrides])]
    diff = distinguishing_overrides([r.overrides for r in runs])
    return [" ".join([r.name, *d]) for r, d in zip(runs, diff, strict=True)]


def _plan_gan(runs, steps, paths, labels, max_px) -> list[Job]:
    jobs = []
    probe_idx = [
        i for i, s in enumerate(steps) if all(r.stats[s]["probe_diff"] is not None for r in runs)
    ]
    if probe_idx:
        variables = list(runs[0].meta.get("variables") or [])
        first = _load_keys(paths[probe_idx[0]][0], ["probe/truth"])["probe/truth"]
        n_probe, n_var, h, w = first.shape
        variables = variables or [f"var{v}" for v in range(n_var)]
        clim = {}
        for v, name in enumerate(variables):
            lims = []
            for r in runs:
                c = (r.meta.get("clim") or {}).get(name)
                if c is None:
                    lo = min(r.stats[steps[i]]["probe_range"][0][v] for i in probe_idx)
                    hi = max(r.stats[steps[i]]["probe_range"][1][v] for i in probe_idx)
                    c = (lo, hi)
                lims.append(c)
            clim[name] = (min(c[0] for c in lims), max(c[1] for c in lims))
        if all("diff_lim" in r.meta for r in runs):
            # the run's own fixed limit, so the video matches its TensorBoard slice panels
            diff_lim = max(float(r.meta["diff_lim"]) for r in runs)
        else:
            diff_lim = max(r.stats[steps[i]]["probe_diff"] for r in runs for i in probe_idx) or 1e-6
        n = len(runs)
        budget_w = (max_px - PAD * (n - 1)) // n
        # slice_panel: title and colour bar per cell, 3 px padding, 4 rows x n_var columns
        from .slices import BAR_H, TITLE_H, physical_ranges

        f = max(
            1,
            min(
                (budget_w - 3 * (n_var + 1)) // (n_var * w),
                ((FRAME_H - HEADER - 15) // 4 - TITLE_H - BAR_H) // h,
            ),
        )
        for j in range(n_probe):
            jobs.append(
                Job(
                    f"slices_p{j}",
                    "slices",
                    f"slices/p{j}",
                    [steps[i] for i in probe_idx],
                    [paths[i] for i in probe_idx],
                    labels,
                    {
                        "probe": j,
                        "variables": variables,
                        "radii_km": [list(r.meta.get("radii_km") or []) for r in runs],
                        "clim": clim,
                        "diff_lim": float(diff_lim),
                        "cell_px": f * max(h, w),
                        "scaling": physical_ranges(runs[0].meta.get("scaling")),
                        "title": f"probe {j}",
                        "max_px": max_px,
                    },
                )
            )
    layers = sorted(
        set.intersection(
            *(set().union(*(set(r.stats[s]["act_hist"]) for s in steps)) for r in runs)
        )
    )
    if layers:
        from .activations import VALUE_LABELS

        counts = []
        for r in runs:
            per = {}
            for layer in layers:
                nb = max(len(r.stats[s]["act_hist"].get(layer, ())) for s in steps)
                m = np.zeros((len(steps), nb), np.int64)
                for i, s in enumerate(steps):
                    c = r.stats[s]["act_hist"].get(layer)
                    if c is not None:
                        m[i, : len(c)] = c
                per[layer] = m
            counts.append(per)
        vmax = {layer: float(max(np.log1p(c[layer]).max() for c in counts)) for layer in layers}
        nb = max(c[layer].shape[1] for c in counts for layer in layers)
        ncols = int(np.ceil(np.sqrt(len(layers))))
        nrows = -(-len(layers) // ncols)
        from .render import AX_BOTTOM, AX_TITLE

        # a cell is title + plot + x axis + colour bar (34) + 3 px padding; all rows fit FRAME_H
        fit_h = (FRAME_H - HEADER - 3) // nrows - AX_TITLE - AX_BOTTOM - 34 - 3
        jobs.append(
            Job(
                "act_colordim",
                "colordim",
                "act_colordim",
                list(steps),
                paths,
                labels,
                {
                    "layers": layers,
                    "counts": counts,
                    "vmax": vmax,
                    "panel_w": max(len(steps), min(480, (max_px // len(runs)) // ncols - 76)),
                    "panel_h": max(nb, min(160, fit_h)),
                    "edges": list(runs[0].meta.get("act_edges") or []),
                    # auto bins: each layer's edges as its newest snapshot has them
                    "layer_edges": {
                        layer: e
                        for layer in layers
                        for e in [
                            next(
                                (
                                    runs[0].stats[s]["act_edges"][layer]
                                    for s in reversed(steps)
                                    if layer in runs[0].stats[s].get("act_edges", {})
                                ),
                                None,
                            )
                        ]
                        if e is not None
                    },
                    "value_label": VALUE_LABELS.get(str(runs[0].meta.get("act_transform", "abs"))),
                    "ncols": ncols,
                    "max_px": max_px,
                    "title": "colorful dimension",
                },
            )
        )
    return jobs


def _plan_summary(runs, steps, paths, labels) -> list[Job]:
    try:
        from .weightmaps import summary_context
    except ImportError as e:
        print(
            f"note: summary video skipped, diagnostics.weightmaps is not available ({e})",
            file=sys.stderr,
        )
        return []
    try:
        ctx = [summary_context(r.run_dir, reference="last") for r in runs]
    except Exception as e:  # noqa: BLE001 - e.g. a bad snapshot: the other videos still render
        print(
            f"warning: summary video skipped, its context failed: {type(e).__name__}: {e}",
            file=sys.stderr,
        )
        return []
    return [
        Job(
            "summary",
            "summary",
            "summary",
            list(steps),
            paths,
            labels,
            {"ctx": ctx, "title": "summary"},
        )
    ]


# ----------------------------------------------------------------------------------------------
# encoding


@dataclass(frozen=True)
class Encoding:
    """ffmpeg settings; part of a video's up-to-date check."""

    fps: float = 12
    # a few snapshots at 12 fps flash past in under a second: every frame is held (repeated) so
    # that a video lasts at least this long
    min_seconds: float = 5.0
    # superfast/23 encoded 1080p summary frames at 26 fps on one loaded core (veryfast/18 with
    # tune=animation: 7 fps, the bottleneck of the whole pipeline) with the same mean error
    crf: int = 23
    preset: str = "superfast"


def frame_hold(n_frames: int, enc: Encoding) -> int:
    """How many times each of ``n_frames`` frames is sent so the video lasts >= ``enc.min_seconds``."""
    return max(1, int(np.ceil(enc.min_seconds * enc.fps / max(n_frames, 1) - 1e-9)))


def encode_video(
    frames: Iterable[np.ndarray],
    path: str | os.PathLike,
    enc: Encoding = Encoding(),
    *,
    hold: int = 1,
) -> int:
    """Stream RGB frames to an H.264 MP4 at ``path``, each sent ``hold`` times; written under a
    temporary name, renamed when done.

    Returns the number of frames written. If the frame source raises, nothing is left at
    ``path`` or the temporary name and the exception propagates.
    """
    import imageio_ffmpeg

    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.stem}.{os.getpid()}.tmp.mp4")
    writer = None
    size = None
    n = 0
    try:
        for frame in frames:
            # frame: (H, W, 3) uint8 with even sides (yuv420p)
            if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
                raise ValueError(
                    f"frame {n}: expected (H, W, 3) uint8, got {frame.shape} {frame.dtype}"
                )
            if writer is None:
                size = frame.shape[:2]
                if size[0] % 2 or size[1] % 2:
                    raise ValueError(f"frame size {size} has an odd side; yuv420p needs even sides")
                writer = imageio_ffmpeg.write_frames(
                    str(tmp),
                    (size[1], size[0]),
                    fps=enc.fps,
                    codec="libx264",
                    pix_fmt_out="yuv420p",
                    quality=None,
                    macro_block_size=1,  # sides are even already; 16 would make ffmpeg rescale
                    output_params=["-crf", str(enc.crf), "-preset", enc.preset],
                )
                writer.send(None)
            elif frame.shape[:2] != size:
                raise ValueError(f"frame {n} is {frame.shape[:2]}, the video is {size}")
            frame = np.ascontiguousarray(frame)
            for _ in range(hold):
                writer.send(frame)
                n += 1
        if writer is None:
            raise ValueError(f"{final}: no frames to write")
        writer.close()
        writer = None
        commit(tmp, final)
        return n
    finally:
        if writer is not None:
            writer.close()
        tmp.unlink(missing_ok=True)


# ----------------------------------------------------------------------------------------------
# parallel rendering

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
    """Under ``python -m diagnostics.video``, workers do not re-run this module as their
    ``__mp_main__``: that re-import printed a runpy RuntimeWarning per worker and pool (64 with
    ``--jobs 2``) and cost a second import. Jobs pickle as ``diagnostics.video.Job`` (the
    ``__main__`` block calls the imported module), so workers need nothing from ``__main__``."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if main is None or getattr(spec, "name", None) != __name__:
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


# ----------------------------------------------------------------------------------------------
# driver


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
    enc: Encoding = Encoding(),
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


if __name__ == "__main__":
    # run the imported module's main, so that jobs pickle as diagnostics.video.Job
    from diagnostics.video import main as _main

    sys.exit(_main())
