"""Embeddings: clustering, dendrogram/scatter figures, NetCDF round trip, projector export."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
import xarray as xr
from PIL import Image
from tensorboard.backend.event_processing import event_accumulator as ea

from diagnostics import embeddings as E
from diagnostics.render import figure_to_array
from diagnostics.writer import Writer


def two_clusters(n_a=12, n_b=8, d=4, seed=0):
    """Group A around 0, group B around 50 (sd 1): any linkage splits them at the root."""
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.normal(0, 1, (n_a, d)), rng.normal(50, 1, (n_b, d))]).astype(
        np.float32
    )


def grid_image(fig) -> np.ndarray:
    """The thumbnail grid drawn under the dendrogram (second axes)."""
    (img,) = fig.axes[1].get_images()
    return np.asarray(img.get_array())


def tick_texts(fig) -> list[str]:
    return [t.get_text() for t in fig.axes[0].get_xticklabels()]


# ------------------------------------------------------------------------------- features
def small_net():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU(), torch.nn.Linear(3, 1))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
        net[0].bias.copy_(torch.tensor([0.0, -1.0, -10.0]))
    return net


def test_layer_features_by_hand_and_leaves_the_model_as_found():
    net = small_net().train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.tensor([[2.0, 3.0], [-1.0, 0.5]])
    # ReLU([x0, x1 - 1, x0 + x1 - 10]): [2, 2, 0] and [0, 0, 0]
    feats = E.layer_features(net, "1", x)
    assert feats.tolist() == [[2.0, 2.0, 0.0], [0.0, 0.0, 0.0]]
    assert net.training and not net[1]._forward_hooks
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    assert E.layer_features(net, None, x).shape == (2, 1)
    # a (B, C, H, W) layer is averaged over H, W; or kept whole with pool="flatten"
    conv = torch.nn.Sequential(torch.nn.Identity())
    y = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(2, 3, 2, 2)
    assert E.layer_features(conv, "0", y)[0].tolist() == [1.5, 5.5, 9.5]
    assert E.layer_features(conv, "0", y, pool="flatten").shape == (2, 12)
    with pytest.raises(KeyError, match="'nope'"):
        E.layer_features(net, "nope", x)


def test_layer_features_cleans_up_when_the_forward_raises():
    net = small_net().train()
    with pytest.raises(RuntimeError):
        E.layer_features(net, "1", torch.zeros(2, 5))  # wrong width: Linear raises
    assert net.training and not net[1]._forward_hooks


# ------------------------------------------------------------------------------ clustering
def test_two_clusters_split_at_root_and_every_sample_labelled():
    x = two_clusters()
    thumbs = np.zeros((20, 6, 6), np.float32)
    fig, labels = E.dendrogram(x, thumbs, n_clusters_max=2, n_samples=3)
    # the root's two children are exactly group A (first 12) and group B (last 8)
    assert len(set(labels[:12])) == 1 and len(set(labels[12:])) == 1
    assert labels[0] != labels[12]
    ticks = tick_texts(fig)
    assert ticks[labels[0]] == "12" and ticks[labels[12]] == "8"

    # with the default 14 leaves no leaf mixes the groups and the counts add up
    fig, labels = E.dendrogram(x, thumbs)
    assert len(tick_texts(fig)) == 14
    assert set(labels[:12].tolist()).isdisjoint(labels[12:].tolist())
    assert sum(int(t) for t in tick_texts(fig)) == 20
    assert np.array_equal(np.bincount(labels, minlength=14), [int(t) for t in tick_texts(fig)])


def test_truncated_tree_labels_by_hand():
    # 1D points 0, 1, 10, 11, 30: the first merges are {0,1} and {10,11} (distance 1 each), so
    # cut to 3 leaves the clusters are {0,1}, {10,11}, {30}, left to right in that order
    x = np.array([[0.0], [1.0], [10.0], [11.0], [30.0]])
    _, leaves, labels = E.cluster_tree(x, n_clusters_max=3)
    assert len(leaves) == 3
    assert labels[0] == labels[1] and labels[2] == labels[3]
    assert len({labels[0], labels[2], labels[4]}) == 3
    # cut to 5 (>= N) every sample is its own leaf
    _, leaves, labels = E.cluster_tree(x, n_clusters_max=5)
    assert sorted(leaves) == [0, 1, 2, 3, 4] and sorted(labels.tolist()) == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="at least 2"):
        E.cluster_tree(x[:1])


def test_leaves_and_thumbnails_as_configured():
    # three groups of 14, 10 and 6 samples; each group's thumbnails are one solid colour
    rng = np.random.default_rng(1)
    sizes = [14, 10, 6]
    x = np.concatenate([rng.normal(100 * g, 1, (n, 3)) for g, n in enumerate(sizes)])
    colours = np.array([[200, 0, 0], [0, 200, 0], [0, 0, 200]], np.uint8)
    group = np.repeat(np.arange(3), sizes)
    thumbs = np.broadcast_to(colours[group][:, None, None, :], (30, 5, 5, 3)).copy()
    px = 10
    fig, labels = E.dendrogram(
        x, thumbs, n_clusters_max=3, n_samples=8, label_clusters=True, thumb_px=px
    )
    ticks = tick_texts(fig)
    assert len(ticks) == 3
    counts = np.bincount(labels)
    assert ticks == [f"{'ABC'[k]}\n{counts[k]}" for k in range(3)]
    grid = grid_image(fig)
    # rows = min(n_samples, largest cluster) = 8; cells are px wide with 2 px padding
    assert grid.shape == (8 * (px + 2) + 2, 3 * (px + 2) + 2, 3)
    for k in range(3):
        colour = colours[group[labels == k][0]]
        col = [grid[2 + r * (px + 2) + px // 2, 2 + k * (px + 2) + px // 2] for r in range(8)]
        n_thumbs = sum(np.array_equal(c, colour) for c in col)
        # a leaf shows min(n_samples, its size) thumbnails, all of its own group
        assert n_thumbs == min(8, counts[k])
        assert all(np.array_equal(c, colour) or np.array_equal(c, [255, 255, 255]) for c in col)


def test_thumbnail_limits_come_from_all_samples_not_only_those_drawn():
    from diagnostics.render import colormap_lut

    x = two_clusters()
    thumbs = np.full((20, 4, 4), 0.5, np.float32)
    thumbs[12:] = 1.0
    thumbs[11] = 0.0  # in group A, never drawn: center_dist with n_samples=1 picks the most central
    x[11] += 3.0  # ... so make sample 11 the least central of group A
    fig, labels = E.dendrogram(
        x, thumbs, n_clusters_max=2, n_samples=1, sampling="center_dist", thumb_px=4
    )
    grid = grid_image(fig)
    cell_a = grid[2 + 2, 2 + labels[0] * 6 + 2]
    # limits [0, 1] over all 20 thumbnails: 0.5 maps to LUT index int(0.5 * 255 + 0.5) = 128
    assert np.array_equal(cell_a, colormap_lut("viridis")[128])


def test_sampling_center_dist_and_random():
    x = np.array([[0.0], [1.0], [2.0], [3.0], [4.0]])
    labels = np.zeros(5, np.int64)
    # centroid 2: the closest is 2, then 1 and 3 tie (stable order keeps 1 first)
    (picks,) = E.pick_samples(x, labels, n_samples=2, sampling="center_dist")
    assert picks.tolist() == [2, 1]
    a = E.pick_samples(x, labels, n_samples=3, sampling="random", seed=7)[0]
    b = E.pick_samples(x, labels, n_samples=3, sampling="random", seed=7)[0]
    assert a.tolist() == b.tolist() and len(set(a.tolist())) == 3
    with pytest.raises(ValueError, match="sampling"):
        E.pick_samples(x, labels, sampling="best")


def test_same_seed_same_figure():
    x = two_clusters()
    thumbs = np.random.default_rng(3).normal(size=(20, 8, 8))
    a = figure_to_array(E.dendrogram(x, thumbs, seed=4, vmin=-2, vmax=2)[0])
    b = figure_to_array(E.dendrogram(x, thumbs, seed=4, vmin=-2, vmax=2)[0])
    assert np.array_equal(a, b)


def test_cluster_letters():
    assert [E.cluster_letter(k) for k in (0, 1, 25, 26, 27)] == ["A", "B", "Z", "AA", "AB"]


# ------------------------------------------------------------------------------- scatter
def test_pca_of_points_on_a_line():
    # points along emb_dim 2 at -2, -1, 0, 1, 2: PC1 is that axis and carries all the variance
    x = np.zeros((5, 4))
    x[:, 2] = [-2, -1, 0, 1, 2]
    x[:, 0] = 7.0
    proj, frac = E.pca2(x)
    assert np.allclose(proj[:, 0], [-2, -1, 0, 1, 2])
    assert np.allclose(proj[:, 1], 0) and np.allclose(frac, [1.0, 0.0])


def test_scatter_highlights_n_points_with_thumbnails():
    from matplotlib.offsetbox import AnnotationBbox

    x = two_clusters()
    thumbs = np.random.default_rng(0).normal(size=(20, 6, 9))
    fig = E.scatter_annotated(x, thumbs, dims=(1, 3), n_points=5, seed=2)
    ax = fig.axes[0]
    faint, bold = ax.collections
    assert np.allclose(faint.get_offsets(), x[:, [1, 3]])
    assert len(bold.get_offsets()) == 5
    boxes = [a for a in ax.artists if isinstance(a, AnnotationBbox)]
    assert len(boxes) == 5
    # each connector starts at a highlighted point
    assert {tuple(np.round(b.xy, 4)) for b in boxes} == {
        tuple(np.round(p, 4)) for p in bold.get_offsets()
    }
    assert ax.get_xlabel() == "emb_dim 1"
    fig = E.scatter_annotated((x[:, 0], x[:, 1]), thumbs, n_points=3)
    assert len(fig.axes[0].artists) == 3


# ------------------------------------------------------------------------------ NetCDF
def test_netcdf_round_trip(tmp_path):
    values = np.arange(12, dtype=np.float32).reshape(4, 3) / 7
    coords = {
        "step": np.array([0, 10, 20, 30]),
        "time": np.array([1.5, 2.5, 3.5, 4.5]),
        "position": np.array(["a", "b", "c", "d"]),
    }
    attrs = {"source": "AE.encoder.fc", "n_fields": 4, "scale": 0.5, "bias": True, "shape": [2, 3]}
    da = E.embeddings_dataarray(values, coords, attrs)
    assert da.dims == ("sample", "emb_dim")
    E.save_embeddings(da, tmp_path / "embeddings" / "AE_step00000010.nc")
    back = E.load_embeddings(tmp_path / "embeddings" / "AE_step00000010.nc")
    assert np.array_equal(back.values, values)
    for k, v in coords.items():
        assert np.array_equal(back[k].values, v)
    assert back.attrs["source"] == "AE.encoder.fc" and back.attrs["n_fields"] == 4
    assert back.attrs["scale"] == 0.5 and back.attrs["bias"] == 1
    assert np.array_equal(back.attrs["shape"], [2, 3])
    assert E.list_embeddings(tmp_path) == [(10, tmp_path / "embeddings" / "AE_step00000010.nc")]
    assert E.load_thumbnails(tmp_path / "embeddings" / "AE_step00000010.nc") is None
    with pytest.raises(TypeError, match="'cfg'"):
        E.embeddings_dataarray(values, attrs={"cfg": {"a": 1}})
    with pytest.raises(ValueError, match="coord 'step'"):
        E.embeddings_dataarray(values, {"step": np.arange(3)})


def test_shrink_thumbnails_by_hand():
    # 4 x 6 map, max 3 px: factor ceil(6 / 3) = 2, so 2 x 3 blocks of 2 x 2 cells
    a = np.arange(24, dtype=np.float32).reshape(1, 4, 6)
    a[0, 0, 0] = np.nan
    out = E.shrink_thumbnails(a, max_px=3)
    assert out.shape == (1, 2, 3)
    # block (0, 0) holds nan, 1, 6, 7 -> nanmean 14 / 3; block (1, 2) holds 16, 17, 22, 23 -> 19.5
    assert np.isclose(out[0, 0, 0], 14 / 3) and out[0, 1, 2] == 19.5
    b = np.full((1, 4, 4), np.nan, np.float32)
    assert np.isnan(E.shrink_thumbnails(b, max_px=2)).all()
    kept = E.shrink_thumbnails(a, max_px=6)  # already small enough: unchanged
    assert kept.shape == a.shape and np.array_equal(kept[0, 1:], a[0, 1:])


# ------------------------------------------------------------------------------ projector
def test_sprite_layout_by_hand():
    assert E.sprite_layout(40, 32) == (40, 32)  # 7 * 32 = 224 px
    assert E.sprite_layout(100_000, 48) == (100_000, 25)  # ceil(sqrt) = 317, 8192 // 317 = 25
    # ceil(sqrt(2e6)) = 1415 gives 5 px < 8: cap at (8192 // 8)**2 samples of 8 px
    assert E.sprite_layout(2_000_000, 48) == (1024**2, 8)
    for n in (1, 2, 40, 100_000, 2_000_000):
        m, side = E.sprite_layout(n, 48)
        assert math.ceil(math.sqrt(m)) * side <= E.SPRITE_MAX_PX


def test_logger_writes_figures_netcdf_and_projector(tmp_path):
    x = two_clusters(24, 16, d=5)
    thumbs = np.random.default_rng(0).normal(size=(40, 12, 20)).astype(np.float32)
    coords = {"time": np.arange(40) * 6.0}
    cfg = {
        "every": 5,
        "n_clusters_max": 4,
        "n_samples": 3,
        "n_points": 4,
        "sprite_px": 32,
        "sprite_max_px": 100,
    }
    with Writer(tmp_path) as w:
        logger = E.EmbeddingLogger(w, tmp_path, "AE", cfg)
        assert logger.due(0) and not logger.due(3) and logger.due(5) and logger.due(7, last=True)
        lab0 = logger.log(0, x, thumbs, coords, {"source": "encoder.fc"})
        assert not logger.due(0)
        lab5 = logger.log(5, x + 1, thumbs, coords)
    assert set(lab0[:24].tolist()).isdisjoint(lab0[24:].tolist())

    acc = ea.EventAccumulator(str(tmp_path), size_guidance={ea.IMAGES: 0, ea.SCALARS: 0})
    acc.Reload()
    for tag in ("embed/AE/dendrogram", "embed/AE/scatter"):
        events = acc.Images(tag)
        assert [e.step for e in events] == [0, 5]
        img = Image.open(io.BytesIO(events[0].encoded_image_string))
        assert img.size == (events[0].width, events[0].height) and img.width > 300

    files = E.list_embeddings(tmp_path, "AE")
    assert [s for s, _ in files] == [0, 5]
    da = E.load_embeddings(files[1][1])
    assert np.allclose(da.values, x + 1)
    assert np.array_equal(da["cluster"].values, lab5)
    assert np.array_equal(da["time"].values, coords["time"])
    assert da.attrs["model"] == "AE" and da.attrs["step"] == 5
    assert E.load_embeddings(files[0][1]).attrs["source"] == "encoder.fc"
    # 12 x 20 thumbnails fit in 64 px: stored unchanged for the notebooks
    assert np.array_equal(E.load_thumbnails(files[1][1]), thumbs)

    d = tmp_path / "projector" / "embed_AE_00000005"
    tensors = np.loadtxt(d / "tensors.tsv", delimiter="\t")
    assert tensors.shape == (40, 5) and np.allclose(tensors, x + 1, atol=1e-5)
    meta = (d / "metadata.tsv").read_text().splitlines()
    assert meta[0].split("\t") == ["sample", "time", "cluster"]
    assert len(meta) == 41
    assert [r.split("\t")[2] for r in meta[1:]] == [E.cluster_letter(k) for k in lab5]
    assert meta[2].split("\t")[:2] == ["1", "6.0"]
    # ceil(sqrt(40)) = 7 per row; 32 px would make 224 > 100, so thumbnails shrink to 100 // 7 = 14
    sprite = Image.open(d / "sprite.png")
    assert sprite.size == (7 * 14, 7 * 14)
    assert not list(tmp_path.glob("0000*"))  # no <step>/<tag%2f> folders any more

    # TensorBoard's projector plugin reads the config: newest export first, shapes given
    from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.projector import projector_plugin

    def projector_configs(logdir):
        mux = plugin_event_multiplexer.EventMultiplexer()
        mux.AddRunsFromDirectory(str(logdir))
        mux.Reload()
        plugin = projector_plugin.ProjectorPlugin(
            base_plugin.TBContext(
                logdir=str(logdir),
                multiplexer=mux,
                data_provider=data_provider.MultiplexerDataProvider(mux, str(logdir)),
            )
        )
        plugin._update_configs()
        return plugin._configs

    (config,) = projector_configs(tmp_path).values()
    embs = list(config.embeddings)
    assert [e.tensor_name for e in embs] == ["embed/AE:00000005", "embed/AE:00000000"]
    assert list(embs[0].tensor_shape) == [40, 5] and list(embs[0].sprite.single_image_dim) == [
        14,
        14,
    ]
    # a long run lists only the newest 3 exports (the projector reads every listed tensor first)
    with Writer(tmp_path) as w:
        for step in (10, 15, 20):
            w.embedding(x, step=step, tag="embed/AE")
    (config,) = projector_configs(tmp_path).values()
    assert [e.tensor_name for e in config.embeddings] == [
        "embed/AE:00000020",
        "embed/AE:00000015",
        "embed/AE:00000010",
    ]
    assert (tmp_path / "projector" / "embed_AE_00000000" / "tensors.tsv").is_file()  # kept on disk


def test_logger_is_silent_off_rank_zero(tmp_path):
    x = two_clusters()
    with Writer(tmp_path / "r1", rank=1) as w:
        labels = E.EmbeddingLogger(w, tmp_path / "r1", "D", {"n_clusters_max": 2}).log(
            0, x, np.zeros((20, 4, 4))
        )
    assert labels[0] != labels[12]
    # the same labels rank 0 would draw, without drawing anything
    assert np.array_equal(labels, E.dendrogram(x, np.zeros((20, 4, 4)), n_clusters_max=2)[1])
    assert not (tmp_path / "r1").exists()


def test_dataarray_input_and_shape_checks():
    x = two_clusters()
    da = E.embeddings_dataarray(x, {"step": np.arange(20)})
    _, labels = E.dendrogram(da, np.zeros((20, 4, 4)), n_clusters_max=2)
    assert labels[0] != labels[12]
    with pytest.raises(ValueError, match="thumbnails"):
        E.dendrogram(x, np.zeros((19, 4, 4)))
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        E.embeddings_dataarray(np.zeros(5))
    assert isinstance(da, xr.DataArray) and da.sizes == {"sample": 20, "emb_dim": 4}
