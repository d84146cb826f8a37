"""Colour bars: the shared scale every picture carries."""

import numpy as np

from diagnostics.render import CMAPS, apply_cmap, colorbar, colormap_lut, with_colorbar


def test_colorbar_ends_are_the_lut_ends():
    bar = colorbar(200, -2.0, 2.0, CMAPS["weights"], label="w")
    lut = colormap_lut(CMAPS["weights"])
    assert bar.shape == (34, 200, 3)
    assert tuple(bar[5, 4]) == tuple(lut[0])  # vmin at the left end
    assert tuple(bar[5, 195]) == tuple(lut[-1])  # vmax at the right end
    assert np.abs(bar[5, 99].astype(int) - lut[127].astype(int)).max() <= 3  # 0 in the middle


def test_with_colorbar_keeps_the_image_and_pads_narrow_ones():
    img = apply_cmap(np.zeros((4, 10)), -1, 1, CMAPS["weights"])
    out = with_colorbar(img, -1.0, 1.0, CMAPS["weights"])
    assert out.shape[1] == 60  # a readable bar is at least 60 px wide
    assert (out[:4, :10] == img).all()
    assert (out[:4, 10:] == 255).all()
