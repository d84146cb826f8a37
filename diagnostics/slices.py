"""Slice panels of 3D fields: upsampled input, generated, truth and difference.

One panel per probe sample; rows are input / generated / truth / difference, one column per
variable, each cell titled ``v=<variable>, r=<radius> km``. Colour limits are fixed per variable
for the whole run (passed in), so panels written at different steps compare directly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from .render import apply_cmap, label_above, tile, upscale_factor, upscale_nearest

ROWS = ("input", "generated", "truth", "difference")


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
    cmap: str = "inferno",
    diff_cmap: str = "RdBu_r",
    cell_px: int = 224,
) -> np.ndarray:
    """RGB panel (H, W, 3) uint8 for one sample; arrays are (V, LAT, LON) on the host."""
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
            if row == "difference":
                img = apply_cmap(arrays[1][v] - arrays[2][v], -diff_lim, diff_lim, diff_cmap)
            else:
                data = arrays[ROWS.index(row)][v]
                lo, hi = clim[name]
                img = apply_cmap(data, lo, hi, cmap)
            title = f"input  v={name}, r={radius_km:.0f} km" if row == "input" else row
            cells.append(label_above(upscale_nearest(img, f), title, height=18, size=12))
    return tile(cells, ncols=len(variables), pad=3)
