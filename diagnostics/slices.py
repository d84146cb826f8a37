"""Slice panels of 3D fields: upsampled input, generated, truth and difference.

One panel per probe sample; rows are input / generated / truth / difference, one column per
variable, each cell titled with its row and ``v=<variable>, r=<radius> km`` (shrunk to fit, never
cut) above the picture and a colour bar below it. Colour limits are fixed per variable for the whole
run (passed in), so panels written at different steps compare directly; given the run's scaling
(per-variable physical ``(vmin, vmax)`` that maps to [0, 1]) the bars are in physical values.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from .render import (
    CMAPS,
    apply_cmap,
    fit_label_above,
    tile,
    upscale_factor,
    upscale_nearest,
    with_colorbar,
)

ROWS = ("input", "generated", "truth", "difference")
TITLE_H = 42  # three title lines per cell: row, variable, radius
BAR_H = 34  # colour bar below each cell (render.colorbar's default height)


def physical_ranges(scaling: Mapping | None) -> dict[str, tuple[float, float]] | None:
    """``{variable: (vmin, vmax)}`` from a run's scaling record (``normalisation.json`` / snapshot meta
    ``scaling``: lists ``variables``, ``vmin``, ``vmax``); None when there is none."""
    if not scaling or not all(k in scaling for k in ("variables", "vmin", "vmax")):
        return None
    return {
        str(n): (float(a), float(b))
        for n, a, b in zip(scaling["variables"], scaling["vmin"], scaling["vmax"], strict=True)
    }


def take_slices(volume: torch.Tensor, r_index: int) -> torch.Tensor:
    """The lat-lon plane at radial index ``r_index``: (B, V, R, LAT, LON) -> (B, V, LAT, LON)."""
    if volume.dim() != 5:
        raise ValueError(f"expected (B, V, R, LAT, LON), got {tuple(volume.shape)}")
    if not 0 <= r_index < volume.shape[2]:
        raise ValueError(f"r_index {r_index} outside 0..{volume.shape[2] - 1}")
    return volume[:, :, r_index]


def slice_panel(
    input_up: np.ndarray,
    fake: np.ndarray,
    truth: np.ndarray,
    variables: Sequence[str],
    radius_km: float,
    clim: Mapping[str, Sequence[float]],
    *,
    diff_lim: float = 0.25,
    cmap: str = CMAPS["field"],
    diff_cmap: str = CMAPS["difference"],
    cell_px: int = 224,
    scaling: Mapping[str, Sequence[float]] | None = None,
) -> np.ndarray:
    """RGB panel (H, W, 3) uint8 for one sample; arrays are (V, LAT, LON) on the host.

    Args:
        scaling: per variable, the physical (vmin, vmax) that the data's 0 and 1 stand for; the
            colour bars then read in physical values (None: in the data's own units).
    """
    arrays = [np.asarray(a, dtype=np.float32) for a in (input_up, fake, truth)]
    shape = arrays[0].shape
    if any(a.shape != shape for a in arrays) or len(shape) != 3 or shape[0] != len(variables):
        raise ValueError(
            f"slice_panel expects three (V={len(variables)}, LAT, LON) arrays, got {[a.shape for a in arrays]}"
        )
    f = upscale_factor(shape[1:], cell_px)
    cells = []
    for row in ROWS:
        for v, name in enumerate(variables):
            a, b = (float(x) for x in scaling[name]) if scaling and name in scaling else (0.0, 1.0)
            unit = "" if scaling and name in scaling else " (scaled)"
            if row == "difference":
                lo, hi = -diff_lim, diff_lim
                img = apply_cmap(arrays[1][v] - arrays[2][v], lo, hi, diff_cmap)
                bar = (lo * (b - a), hi * (b - a), diff_cmap, f"gen-truth{unit}")
            else:
                lo, hi = clim[name]
                img = apply_cmap(arrays[ROWS.index(row)][v], lo, hi, cmap)
                bar = (a + lo * (b - a), a + hi * (b - a), cmap, unit.strip())
            img = with_colorbar(upscale_nearest(img, f), bar[0], bar[1], bar[2], label=bar[3])
            title = f"{row}\nv={name}\nr={radius_km:.0f} km"
            cells.append(fit_label_above(img, title, height=TITLE_H, size=12))
    return tile(cells, ncols=len(variables), pad=3)
