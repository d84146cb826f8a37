"""Jobs (one video each) and the frame image of each video kind: weights, weights_small line
plots, GAN slices, the colorful dimension, the autoencoder summary."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..render import colorbar, lines_panel, pad_even, tile
from ..weight_images import GAP_RGB, weight_frame
from .base import BACKGROUND, MAX_PX, MIN_PANEL_W, PAD, header, hstack_panels
from .runs import _load_keys


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
    from ..slices import slice_panel

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
    from ..render import colorful_panel

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
    from ..snapshots import load_snapshot
    from ..weightmaps import render_summary_frame

    return render_summary_frame(job.params["ctx"][r], load_snapshot(job.paths[i][r]))


_RENDERERS: dict[str, Callable[[Job, int, int], np.ndarray]] = {
    "weights": _render_weights,
    "slices": _render_slices,
    "colordim": _render_colordim,
    "summary": _render_summary,
    "small": _render_small,
}
