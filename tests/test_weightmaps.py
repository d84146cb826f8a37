"""Brohan summary frames: sign flip, fixed order and bar limit, frame size, weight images."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from diagnostics.render import CMAPS, colormap_lut
from diagnostics.snapshots import SnapshotWriter, list_snapshots, load_snapshot
from diagnostics.weightmaps import (
    _layout,
    neuron_order,
    neuron_quantity,
    render_summary_frame,
    signed_maps,
    summary_context,
    weight_image,
)

H, W, N = 6, 8, 3
KEYS = ("weights/AE/encoder.weight", "weights/AE/encoder.bias", "weights/AE/decoder.weight")


def test_weight_image_ranks():
    assert weight_image(torch.tensor(2.0)).shape == (1, 1)
    np.testing.assert_array_equal(weight_image(torch.arange(5.0)), [[0, 1, 2, 3, 4]])
    lin = torch.arange(6.0).reshape(2, 3)
    np.testing.assert_array_equal(weight_image(lin), lin.numpy())
    conv2 = torch.arange(24.0).reshape(2, 3, 2, 2)  # (O, I, kh, kw)
    img = weight_image(conv2)
    assert img.shape == (2 * 3 - 1, 3 * 3 - 1)
    np.testing.assert_array_equal(img[0:2, 3:5], conv2[0, 1].numpy())
    np.testing.assert_array_equal(img[3:5, 6:8], conv2[1, 2].numpy())
    assert np.isnan(img[2]).all() and np.isnan(img[:, 2]).all()
    conv3 = torch.arange(36.0).reshape(
        2, 1, 2, 3, 3
    )  # (O, I, kd, kh, kw): depth slices side by side
    img = weight_image(conv3)
    assert img.shape == (7, 6)
    np.testing.assert_array_equal(img[0:3, 0:3], conv3[0, 0, 0].numpy())
    np.testing.assert_array_equal(img[0:3, 3:6], conv3[0, 0, 1].numpy())
    assert weight_image(torch.zeros(4, 2, 3)).shape == (4 * 2 - 1, 2 * 4 - 1)  # Conv1d


def test_sign_flip_negates_both_maps_and_makes_the_bar_positive():
    enc_w = np.arange(N * H * W, dtype=np.float64).reshape(N, H * W) + 1.0
    dec_w = -np.arange(N * H * W, dtype=np.float64).reshape(H * W, N) - 1.0
    bias = np.array([0.5, -2.0, 1.0])
    q = neuron_quantity(enc_w, bias, "bias")
    ins, outs, bars = signed_maps(enc_w, dec_w, q, (H, W))
    np.testing.assert_array_equal(bars, [0.5, 2.0, 1.0])
    np.testing.assert_array_equal(ins[1], -enc_w[1].reshape(H, W))
    np.testing.assert_array_equal(outs[1], -dec_w[:, 1].reshape(H, W))
    np.testing.assert_array_equal(ins[0], enc_w[0].reshape(H, W))
    np.testing.assert_array_equal(outs[2], dec_w[:, 2].reshape(H, W))
    order, bar_max = neuron_order(q)
    np.testing.assert_array_equal(order, [1, 2, 0])
    assert bar_max == pytest.approx(2.1)


def test_norm_quantity():
    enc_w = np.array([[3.0, 4.0], [0.0, -1.0]])
    np.testing.assert_allclose(neuron_quantity(enc_w, np.zeros(2), "norm"), [5.0, 1.0])
    with pytest.raises(ValueError, match="quantity"):
        neuron_quantity(enc_w, np.zeros(2), "mean")


def make_run(run_dir, biases: list[np.ndarray], mask=None) -> None:
    """A run whose neuron j has constant input weights (j + 1) / 10 and output weights -(j + 1) / 10."""
    sw = SnapshotWriter(run_dir)
    mask = np.ones((H, W), bool) if mask is None else mask
    sw.write_meta(
        {
            "kind": "autoencoder",
            "shape": [H, W],
            "lat": np.linspace(50, 40, H).tolist(),
            "lon": np.linspace(0, 70, W).tolist(),
            "mask": mask.astype(int).tolist(),
            "normalisation": {"offset": 101325.0, "scale": 3000.0},
            "variable": "prmsl",
            "units": "Pa",
            "total_steps": 10 * (len(biases) - 1),
        }
    )
    const = (np.arange(N) + 1.0) / 10.0
    yy, xx = np.mgrid[0:H, 0:W]
    field = np.sin(xx / 3.0) + np.cos(yy / 2.0)
    for k, b in enumerate(biases):
        sw.write(
            10 * k,
            {
                KEYS[0]: np.repeat(const[:, None], H * W, axis=1).astype(np.float32),
                KEYS[1]: np.asarray(b, np.float32),
                KEYS[2]: np.repeat(-const[None, :], H * W, axis=0).astype(np.float32),
                "probe/field": field.astype(np.float32),
                "probe/recon": (0.9 * field).astype(np.float32),
                "scalar/loss/train": np.float64(1.0 / (k + 1)),
                "scalar/loss/val": np.float64(1.2 / (k + 1)),
            },
        )


# biases: first the current order would be 0, 1, 2; in the last snapshot it is 1, 2, 0
BIASES = [np.array([0.9, 0.5, 0.1]), np.array([0.3, 0.6, -0.2]), np.array([0.25, -1.0, 0.5])]


def test_order_and_bar_limit_from_the_last_snapshot_fixed_across_frames(tmp_path):
    make_run(tmp_path, BIASES)
    ctx = summary_context(tmp_path)
    np.testing.assert_array_equal(ctx.order, [1, 2, 0])
    assert ctx.bar_max == pytest.approx(1.05)
    lay = _layout(ctx)
    y, x = lay["in_xy"][0]
    frames = [render_summary_frame(ctx, load_snapshot(p)) for _, p in list_snapshots(tmp_path)]
    for f in frames:
        assert f.shape == (1080, 1920, 3) and f.dtype == np.uint8
    # slot 0 always shows neuron 1 (input weight 0.2; neuron 0, first by its own bias at step 0, has
    # 0.1), so its colour changes only with the sign of its bias: +0.5, +0.6, -1.0
    slot0 = [tuple(f[y + 2, x + 2]) for f in frames]
    assert slot0[0] == slot0[1] != slot0[2]
    y2, x2 = lay["in_xy"][2]  # neuron 0 sits last and looks different (0.1, not 0.2)
    assert tuple(frames[0][y2 + 2, x2 + 2]) != slot0[0]
    y, x = lay["in_xy"][1]  # neuron 2: bias +0.1, -0.2, +0.5
    slot1 = [tuple(f[y + 2, x + 2]) for f in frames]
    assert slot1[0] == slot1[2] != slot1[1]
    # bar axis labels (left of the plot area) identical in every frame: same limit
    y0, y1, x0, _ = lay["bar"]
    for f in frames[1:]:
        np.testing.assert_array_equal(
            f[y0 - 10 : y1 + 10, : x0 - 5], frames[0][y0 - 10 : y1 + 10, : x0 - 5]
        )
    # the reference can be chosen: from the first snapshot the order is 0, 1, 2
    np.testing.assert_array_equal(summary_context(tmp_path, reference="first").order, [0, 1, 2])
    np.testing.assert_array_equal(summary_context(tmp_path, reference=10).order, [1, 0, 2])


def test_rendered_sign_flip_and_bar_heights(tmp_path):
    make_run(tmp_path, BIASES)
    ctx = summary_context(tmp_path)
    lay = _layout(ctx)
    last = render_summary_frame(ctx, load_snapshot(list_snapshots(tmp_path)[-1][1]))
    lut = colormap_lut(CMAPS["weights"])  # one weight colormap everywhere
    lim = ctx.clim_in

    def colour(v: float, limit: float) -> np.ndarray:
        return lut[int(np.clip((v + limit) * (len(lut) - 1) / (2 * limit) + 0.5, 0, len(lut) - 1))]

    # slot 0 = neuron 1, bias -1.0: input weights 0.2 drawn as -0.2 and output weights -0.2 as +0.2
    y, x = lay["in_xy"][0]
    np.testing.assert_array_equal(last[y + 1, x + 1], colour(-0.2, lim))
    y, x = lay["out_xy"][0]
    np.testing.assert_array_equal(last[y + 1, x + 1], colour(0.2, ctx.clim_out))
    # slot 1 = neuron 2 (bias +0.5): not flipped
    y, x = lay["in_xy"][1]
    np.testing.assert_array_equal(last[y + 1, x + 1], colour(0.3, lim))
    # bars: |bias| / 1.05 of the plot height, in the fixed order (1, 2, 0)
    y0, y1, x0, x1 = lay["bar"]
    slot = (x1 - x0) / N
    for i, b in enumerate([1.0, 0.5, 0.25]):
        col = last[y0:y1, int(x0 + 1 + (i + 0.5) * slot)]
        n_bar = int((col == 110).all(axis=1).sum())
        assert abs(n_bar - b / 1.05 * (y1 - y0 - 1)) <= 1.0


def test_masked_points_grey_and_frame_clim(tmp_path):
    mask = np.ones((H, W), bool)
    mask[0, :] = False
    make_run(tmp_path, BIASES, mask=mask)
    ctx = summary_context(tmp_path, clim="frame", quantity="norm")
    f = render_summary_frame(ctx, load_snapshot(list_snapshots(tmp_path)[0][1]))
    lay = _layout(ctx)
    y, x = lay["in_xy"][0]
    np.testing.assert_array_equal(f[y, x], [160, 160, 160])  # top row of the map is masked
    assert f.shape == (1080, 1920, 3)


def test_context_pickles_and_renders_the_same(tmp_path):
    make_run(tmp_path, BIASES)
    ctx = summary_context(tmp_path)
    snap = load_snapshot(list_snapshots(tmp_path)[1][1])
    a = render_summary_frame(ctx, snap)
    ctx2 = pickle.loads(pickle.dumps(ctx))  # after a render: the figure cache is not pickled
    assert ctx2._cache == {}
    np.testing.assert_array_equal(render_summary_frame(ctx2, snap), a)
    # and rendering again with the warm context gives the same pixels
    np.testing.assert_array_equal(render_summary_frame(ctx, snap), a)


def test_wrong_kind_is_refused(tmp_path):
    SnapshotWriter(tmp_path).write_meta({"kind": "gan"})
    with pytest.raises(ValueError, match="autoencoder"):
        summary_context(tmp_path)
