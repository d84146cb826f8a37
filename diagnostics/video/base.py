"""Constants, the error type and the panel layout shared by every video kind (header strip,
panels side by side)."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from ..render import fit_label_above, pad_even

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


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)
