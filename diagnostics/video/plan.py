"""Planning: every video the runs support together, over the steps they share."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import numpy as np

from ..weight_images import layout_note, picture_worthy, weight_image, weight_to_2d
from .base import BAR, FRAME_H, HEADER, MAX_PX, MAX_WEIGHT_VIDEOS, PAD, VideoError, _safe
from .frames import Job
from .runs import Run, _labels, _load_keys
from .weights import _evenly_per_model, _plan_small


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
        from ..slices import BAR_H, TITLE_H, physical_ranges

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
        from ..activations import VALUE_LABELS

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
        from ..render import AX_BOTTOM, AX_TITLE

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
        from ..weightmaps import summary_context
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
