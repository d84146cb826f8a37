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


def test_fit_label_above_shrinks_a_long_name_instead_of_cutting_it():
    from diagnostics.render import fit_label_above

    img = np.zeros((10, 120, 3), np.uint8)
    name = "v=temperature anomaly relative to the reference geotherm"
    out = fit_label_above(img, f"input\n{name}", height=30, size=12)
    assert out.shape == (40, 120, 3)
    strip = out[:30].min(axis=2) < 128  # dark text pixels
    line2 = strip[15:]
    cols = np.flatnonzero(line2.any(axis=0))
    # the whole line is drawn: ink starts at the left margin and ends before the right edge
    assert cols.min() <= 4 and cols.max() < 118
    assert not line2[:, 118:].any()


def test_slice_panel_colour_bar_reads_in_physical_units():
    from diagnostics.render import CMAPS, colormap_lut
    from diagnostics.slices import BAR_H, TITLE_H, physical_ranges, slice_panel

    scaling = physical_ranges({"variables": ["t"], "vmin": [300.0], "vmax": [3800.0]})
    assert scaling == {"t": (300.0, 3800.0)}
    x = np.full((1, 4, 4), 0.5, np.float32)
    panel = slice_panel(x, x, x, ["t"], 4928.0, {"t": (0.0, 1.0)}, cell_px=64, scaling=scaling)
    # 4 rows of (title + 64 px picture + bar) with 3 px padding; 64 px wide plus padding
    assert panel.shape == (4 * (TITLE_H + 64 + BAR_H) + 5 * 3, 64 + 2 * 3, 3)
    # the bar under the first picture runs from the colormap's first to its last colour
    y = 3 + TITLE_H + 64 + 5
    lut = colormap_lut(CMAPS["field"])
    assert np.abs(panel[y, 3 + 4].astype(int) - lut[0]).max() <= 12
    assert np.abs(panel[y, 3 + 59].astype(int) - lut[-1]).max() <= 12


def test_colorful_dimension_is_drawn_one_way_in_tensorboard_and_video(tmp_path, monkeypatch):
    import diagnostics.render as render
    from diagnostics.activations import colorful_image
    from diagnostics.render import AX_LEFT, AX_TITLE, colorful_dimension

    cols = np.zeros((42, 3))  # (n_bins, n_writes)
    cols[0, :] = 1.0  # underflow: the bottom row
    cols[41, 2] = 99.0  # overflow at the last write: the top row, the colour limit
    tb = colorful_image(cols, np.linspace(0, 10, 41), [0, 10, 20])
    # the plot area is colorful_dimension's pixels, 4 px per row, columns stretched over 320 px
    plot = tb[AX_TITLE : AX_TITLE + 168, AX_LEFT : AX_LEFT + 320]
    px = colorful_dimension(cols)
    np.testing.assert_array_equal(plot[::4, [0, 160, 319]], px)
    lut = colormap_lut("viridis")
    np.testing.assert_array_equal(plot[0, -1], lut[-1])  # top right: log1p(99) = vmax
    np.testing.assert_array_equal(plot[0, 0], lut[0])  # top left: no counts
    np.testing.assert_array_equal(plot[-1, 0], lut[round(np.log1p(1) / np.log1p(99) * 255)])
    # the video's act_colordim frames call the same colorful_panel
    from diagnostics.video import open_run, plan_jobs, scan_runs
    from tests.test_video import make_gan_run

    calls = []
    real = render.colorful_panel
    monkeypatch.setattr(render, "colorful_panel", lambda *a, **k: calls.append(k) or real(*a, **k))
    runs = [open_run(make_gan_run(tmp_path, "a", [0, 10]))]
    scan_runs(runs)
    (job,) = [j for j in plan_jobs(runs, max_px=96) if j.name == "act_colordim"]
    job.render(1)
    assert len(calls) == 1 and calls[0]["title"] == "G/c1"


def test_fraction_panel_draws_zero_and_leaves_missing_blank():
    """0 % dead is a value, shown as a line on the floor; a write still to come (NaN) is blank."""
    import numpy as np

    from diagnostics.render import fraction_panel

    zero = fraction_panel([0.0], [10], title="dead")
    missing = fraction_panel([np.nan], [10], title="dead")
    edge = np.array((120, 24, 24), np.uint8)
    assert (zero == edge).all(axis=2).sum() >= 100  # a full-width line in the plot
    assert not (missing == edge).all(axis=2).any()
    assert zero.shape == missing.shape
