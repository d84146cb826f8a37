"""Videos from run snapshots, decoded back with ffmpeg (imageio-ffmpeg)."""

from __future__ import annotations

from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest

from diagnostics.render import colormap_lut
from diagnostics.snapshots import SnapshotWriter
from diagnostics.video import (
    HEADER,
    Encoding,
    distinguishing_overrides,
    encode_video,
    main,
    open_run,
    plan_jobs,
    render_runs,
    scan_runs,
    weight_to_2d,
)

# H.264 (yuv420p, crf 18) is lossy: compare the centres of large uniform regions with this tolerance
TOL = 14
RDBU = colormap_lut("RdBu_r")
INFERNO = colormap_lut("inferno")
VIRIDIS = colormap_lut("viridis")


def decode(path: Path) -> np.ndarray:
    """All frames of an MP4 as (n, H, W, 3) uint8, through ffmpeg."""
    gen = imageio_ffmpeg.read_frames(str(path))
    meta = gen.__next__()
    w, h = meta["size"]
    frames = [np.frombuffer(f, np.uint8).reshape(h, w, 3) for f in gen]
    return np.stack(frames)


def close(pixel, rgb, tol=TOL) -> bool:
    return bool(np.abs(pixel.astype(int) - np.asarray(rgb, int)).max() <= tol)


def make_gan_run(
    root: Path, name: str, steps, overrides=(), sign: float = 1.0, last: int = 30
) -> Path:
    """A GAN run whose snapshot contents are known by construction.

    weights/G/lin.weight (4, 6): columns 0-2 = -1, columns 3-5 = sign * step / last.
    weights/D/conv.weight (2, 1, 3, 3): all 0.5.
    probe (1 sample, 2 variables, 6 x 8): truth temperature 1 (= clim max), fake 0, input 0.5;
    vx truth = fake = -1 (= clim min). act_hist/G/c1: 6 bins, 1000 counts in bin 1.
    """
    run = root / name
    w = SnapshotWriter(run)
    w.write_meta(
        {
            "kind": "gan",
            "variables": ["temperature", "vx"],
            "radii_km": [5000.0],
            "clim": {"temperature": [0.0, 1.0], "vx": [-1.0, 1.0]},
            "act_edges": [0.0, 2.5, 5.0, 7.5, 10.0],
            "run_name": name,
            "overrides": list(overrides),
        }
    )
    for s in steps:
        lin = np.full((4, 6), -1.0, np.float32)
        lin[:, 3:] = sign * s / last
        truth = np.zeros((1, 2, 6, 8), np.float32)
        truth[:, 0], truth[:, 1] = 1.0, -1.0
        fake = truth.copy()
        fake[:, 0] = 0.0
        hist = np.zeros(6, np.int64)
        hist[1] = 1000
        w.write(
            s,
            {
                "weights/G/lin.weight": lin,
                "weights/D/conv.weight": np.full((2, 1, 3, 3), 0.5, np.float32),
                "probe/input_up": np.full_like(truth, 0.5),
                "probe/fake": fake,
                "probe/truth": truth,
                "act_hist/G/c1": hist,
                "scalar/loss/G": np.float64(1.0 / s),
            },
        )
    return run


def render(runs, **kw) -> dict:
    kw.setdefault("max_px", 96)
    kw.setdefault("progress", False)
    return render_runs([str(r) for r in runs], **kw)


def test_weight_to_2d_tiles_kernels_and_folds_long_rows():
    # (2, 1, 2, 2) conv kernel: 2 x 1 grid of 2x2 tiles, one NaN row between the output channels
    img = weight_to_2d(np.arange(8, dtype=np.float32).reshape(2, 1, 2, 2))
    assert img.shape == (5, 2)
    np.testing.assert_array_equal(img[[0, 1, 3, 4]], [[0, 1], [2, 3], [4, 5], [6, 7]])
    assert np.isnan(img[2]).all()
    # 10 weights folded at 4 columns: rows 0..3 / NaN / 4..7 / NaN / 8, 9, NaN, NaN
    img = weight_to_2d(np.arange(10, dtype=np.float32), max_cols=4)
    assert img.shape == (5, 4)
    np.testing.assert_array_equal(img[4, :2], [8, 9])
    assert np.isnan(img[4, 2:]).all() and np.isnan(img[1]).all()
    # Brohan's encoder (32, 16380) keeps one pixel per weight: 9 chunks of 1920 -> 9 * 33 - 1 rows
    assert weight_to_2d(np.zeros((32, 16380), np.float32)).shape == (296, 1920)
    # and the (16380, 32) decoder: 9 chunks of 1880 rows (1920 less the header) side by side
    dec = np.arange(16380 * 32, dtype=np.float32).reshape(16380, 32)
    img = weight_to_2d(dec)
    assert img.shape == (1880, 296)
    np.testing.assert_array_equal(img[0, 33:65], dec[1880])  # second chunk starts at row 1880


def test_distinguishing_overrides():
    a, b = distinguishing_overrides([["lr=1e-4", "seed=1"], ["lr=1e-3", "seed=1", "gp=5"]])
    assert a == ["lr=1e-4"] and b == ["lr=1e-3", "gp=5"]


def test_gan_run_videos_frames_sizes_and_colours(tmp_path):
    run = make_gan_run(tmp_path, "a", [10, 20, 30])
    written = render([run])
    assert set(written) == {
        "weights_G_lin.weight",
        "weights_D_conv.weight",
        "slices_p0",
        "act_colordim",
    }
    assert all(p.parent == run / "videos" for p in written.values())

    # weights (4, 6) with max_px 96: factor min(96 // 6, (96 - 40) // 4) = 14 -> 56 x 84, + header
    v = decode(written["weights_G_lin.weight"])
    assert v.shape == (3, HEADER + 56, 84, 3)
    # limits fixed over the sequence: +-1; -1 -> lut[0]; step 30 -> +1 -> lut[255];
    # step 10 -> 1/3 -> index round((1/3 + 1) * 255 / 2) = 170
    y = HEADER + 28
    assert close(v[0, y, 21], RDBU[0]) and close(v[2, y, 21], RDBU[0])
    assert close(v[2, y, 63], RDBU[255])
    assert close(v[0, y, 63], RDBU[170])

    # conv (2, 1, 3, 3): 7 x 3 tiled image, factor min(96 // 3, 56 // 7) = 8 -> 56 x 24; 0.5 of 0.5
    # is the top of the map; the NaN separator row (row 3 -> px 24..31) is grey
    v = decode(written["weights_D_conv.weight"])
    assert v.shape == (3, HEADER + 56, 24, 3)
    assert close(v[1, HEADER + 12, 12], RDBU[255])
    assert close(v[1, HEADER + 28, 12], (160, 160, 160))

    # slices: cell 6 x 8 scaled by f = min((96 - 9) // 16, ...) = 5 -> 30 x 40 under a 42 px title,
    # over a 34 px colour bar whose 60 px minimum width pads the cell to 60 wide; 3 px padding;
    # panel 4 * 106 + 15 = 439 high (+ header 40 = 479), 2 * 60 + 9 = 129 wide -> even: 480 x 130
    v = decode(written["slices_p0"])
    assert v.shape == (3, 480, 130, 3)

    def cell(row, col):
        return HEADER + 3 + row * 109 + 42 + 15, 3 + col * 63 + 20

    for k in range(3):
        assert close(v[k][cell(2, 0)], INFERNO[255])  # truth temperature at clim max
        assert close(v[k][cell(1, 0)], INFERNO[0])  # generated temperature at clim min
        assert close(v[k][cell(0, 0)], INFERNO[128])  # input 0.5 of [0, 1]
        assert close(v[k][cell(3, 0)], RDBU[0])  # difference -1 of +-max|diff| = +-1
        assert close(v[k][cell(3, 1)], RDBU[128])  # vx: no difference

    # colorful dimension: 6 bins x 3 snapshots, panel 90 px wide -> 30 px per column, 160 // 6 = 26
    # px per bin, bin 0 at the bottom; 18 px layer title, tile padding 3
    v = decode(written["act_colordim"])
    assert v.shape == (3, HEADER + 3 + 18 + 156 + 3, 96, 3)

    def px(col, b):
        return HEADER + 3 + 18 + (5 - b) * 26 + 13, 3 + col * 30 + 15

    assert close(v[0][px(0, 1)], VIRIDIS[255])  # the only full bin, log1p(1000) = the run's max
    assert close(v[0][px(0, 3)], VIRIDIS[0])  # empty bin
    assert close(v[0][px(1, 1)], (160, 160, 160)) and close(v[0][px(2, 1)], (160, 160, 160))
    assert close(v[2][px(2, 1)], VIRIDIS[255])  # column grows in by the last frame


def test_rerun_skips_up_to_date_and_renders_new_snapshots(tmp_path, capsys):
    run = make_gan_run(tmp_path, "a", [10, 20, 30])
    assert render([run], only="weights_G*")
    assert render([run], only="weights_G*") == {}
    assert "up to date" in capsys.readouterr().err
    # training goes on: a snapshot being written (.tmp) is ignored, a complete one is rendered
    (run / "snapshots" / "step_00000050.npz.tmp").write_bytes(b"half written")
    make_gan_run(tmp_path, "a", [40], last=40)
    written = render([run], only="weights_G*")
    assert decode(written["weights_G_lin.weight"]).shape[0] == 4
    # a full render then does only the videos the --only runs left out, and a third one nothing
    assert set(render([run])) == {"weights_D_conv.weight", "slices_p0", "act_colordim"}
    assert render([run]) == {}


def test_bad_snapshot_is_reported_and_skipped(tmp_path, capsys):
    run = make_gan_run(tmp_path, "a", [10, 20, 30])
    (run / "snapshots" / "step_00000040.npz").write_bytes(b"not a zip file")
    written = render([run], only="weights_G*")
    err = capsys.readouterr().err
    assert "step_00000040.npz" in err and "skipping" in err
    assert decode(written["weights_G_lin.weight"]).shape[0] == 3


def test_comparison_two_runs_side_by_side_in_step(tmp_path):
    a = make_gan_run(tmp_path, "a", [10, 20, 30], ["model.lr=1e-4", "seed=1"])
    b = make_gan_run(tmp_path, "b", [10, 20, 30, 40], ["model.lr=1e-3", "seed=1"], sign=-1.0)
    written = render([a, b], max_px=192, jobs=2, only="weights_G*")
    path = written["weights_G_lin.weight"]
    assert path.parent == a / "videos" / "compare_b"
    v = decode(path)
    # intersection of steps: 10, 20, 30; panel budget (192 - 4) // 2 = 94 -> factor 15 -> 60 x 90
    assert v.shape == (3, HEADER + 60, 90 + 4 + 90, 3)
    y = HEADER + 30
    for k, step in enumerate([10, 20, 30]):
        # shared limits +-1 (left half -1 in both); right half +step/30 in a, -step/30 in b
        ia = round((step / 30 + 1) * 255 / 2)
        ib = round((-step / 30 + 1) * 255 / 2)
        assert close(v[k, y, 75], RDBU[ia]), (k, v[k, y, 75], RDBU[ia])
        assert close(v[k, y, 94 + 75], RDBU[ib]), (k, v[k, y, 94 + 75], RDBU[ib])
    # "step N" opens the second header line (rows 20..40, first 60 px): the same in both panels,
    # different between steps 10 and 30
    # (compared as ink masks: the panels sit differently on the codec's blocks)
    ink = v[:, 20:40].mean(axis=-1) < 128
    same = (ink[:, :, :60] != ink[:, :, 94:154]).mean()
    apart = (ink[0, :, :60] != ink[2, :, :60]).mean()
    assert apart > 0.008 and same < apart / 3, (same, apart)
    # run line (rows 0..20) names each run with its distinguishing override: panels differ there
    runs_apart = np.abs(v[0, :20, :90].astype(int) - v[0, :20, 94:184].astype(int)).mean()
    assert runs_apart > 1.0
    # the same, exactly, on the frames before encoding
    runs = [open_run(a), open_run(b)]
    scan_runs(runs)
    job = next(j for j in plan_jobs(runs, max_px=192) if j.name == "weights_G_lin.weight")
    assert job.steps == [10, 20, 30]
    f0, f2 = job.render(0), job.render(2)
    np.testing.assert_array_equal(f0[20:40, :60], f0[20:40, 94:154])
    assert (f0[20:40, :60] != f2[20:40, :60]).any()


def test_interrupted_render_leaves_nothing(tmp_path):
    target = tmp_path / "v.mp4"

    def frames():
        for k in range(5):
            if k == 2:
                raise RuntimeError("renderer died")
            yield np.full((16, 16, 3), 40 * k, np.uint8)

    with pytest.raises(RuntimeError, match="renderer died"):
        encode_video(frames(), target, Encoding(fps=4))
    assert list(tmp_path.iterdir()) == []
    # the same source without the failure yields a complete file
    n = encode_video((np.full((16, 16, 3), 40 * k, np.uint8) for k in range(5)), target)
    assert n == 5 and decode(target).shape == (5, 16, 16, 3)


@pytest.mark.parametrize(
    "setup, needle",
    [
        (lambda p: p / "missing", "does not exist"),
        (lambda p: p, "is empty"),
        (lambda p: (p / "train.log").write_text("x") and p, "meta.json is missing"),
        (lambda p: SnapshotWriter(p).write_meta({"kind": "gan"}) or p, "holds no snapshot files"),
    ],
)
def test_bad_runs_exit_2_naming_what_is_missing(tmp_path, capsys, setup, needle):
    run = setup(tmp_path)
    assert main([str(run), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert needle in err and str(run) in err


def test_all_snapshots_unreadable_exit_2(tmp_path, capsys):
    SnapshotWriter(tmp_path).write_meta({"kind": "gan"})
    (tmp_path / "snapshots" / "step_00000010.npz").write_bytes(b"junk")
    assert main([str(tmp_path), "--no-progress"]) == 2
    assert "none of the 1 snapshots is readable" in capsys.readouterr().err


def test_help_names_the_options(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for opt in ("--compare", "--fps", "--jobs", "--force", "--only", "intersection"):
        assert opt in out


def make_ae_run(root: Path, steps, n_hidden: int = 4, shape=(6, 8)) -> Path:
    """An autoencoder run in diagnostics.weightmaps' snapshot layout."""
    run = root / "ae"
    w = SnapshotWriter(run)
    h, wd = shape
    w.write_meta(
        {
            "kind": "autoencoder",
            "shape": list(shape),
            "lat": np.linspace(-80, 80, h).tolist(),
            "lon": np.linspace(0, 350, wd).tolist(),
            "normalisation": {"offset": 101325.0, "scale": 3000.0},
            "variable": "prmsl",
            "units": "Pa",
        }
    )
    rng = np.random.default_rng(0)
    for s in steps:
        f = h * wd
        w.write(
            s,
            {
                "weights/AE/encoder.weight": rng.normal(size=(n_hidden, f)).astype(np.float32),
                "weights/AE/encoder.bias": np.arange(1, n_hidden + 1, dtype=np.float32),
                "weights/AE/decoder.weight": rng.normal(size=(f, n_hidden)).astype(np.float32),
                "weights/AE/decoder.bias": np.zeros(f, np.float32),
                "probe/field": rng.normal(size=f).astype(np.float32),
                "probe/recon": rng.normal(size=f).astype(np.float32),
                "scalar/loss/train": np.float64(1.0 / s),
            },
        )
    return run


def test_autoencoder_summary_video_is_1920x1080(tmp_path):
    run = make_ae_run(tmp_path, [1, 2])
    written = render([run], only="summary", max_px=1920)
    v = decode(written["summary"])
    assert v.shape == (2, 1080, 1920, 3)
    # the frame background (224 grey) at the far bottom-left corner, as in Brohan's frames
    assert close(v[0, 1075, 2], (224, 224, 224))


def test_per_frame_limits_follow_each_frame(tmp_path):
    run = tmp_path / "r"
    sw = SnapshotWriter(run)
    sw.write_meta({"kind": "gan"})
    for s in (10, 30):
        sw.write(s, {"weights/G/x": np.full((2, 2), s / 30, np.float32)})
    # (2, 2) at max_px 96: factor min(96 // 2, 56 // 2) = 28 -> 56 x 56 under the header
    y, x = HEADER + 28, 28
    fixed = decode(render([run])["weights_G_x"])
    assert fixed.shape == (2, HEADER + 56, 56, 3)
    # fixed limits +-1 over the sequence: 1/3 -> index round((1/3 + 1) * 255 / 2) = 170
    assert close(fixed[0, y, x], RDBU[170]) and close(fixed[1, y, x], RDBU[255])
    # per frame (the animator's way): every frame's own max maps to the top of the colormap
    per = decode(render([run], per_frame=True)["weights_G_x"])
    assert close(per[0, y, x], RDBU[255]) and close(per[1, y, x], RDBU[255])
