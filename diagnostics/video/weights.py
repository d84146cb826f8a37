"""Weight videos: which tensors get one (the cap shared over the models) and the
weights_small line-plot job of the tensors too small for a picture."""

from __future__ import annotations

import numpy as np

from .base import FRAME_H, HEADER, PAD, SMALL_LINES
from .frames import Job


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
    from ..render import AX_BOTTOM, AX_LEFT, AX_RIGHT, AX_TITLE

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
