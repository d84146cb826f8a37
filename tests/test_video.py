"""Videos from run snapshots, decoded back with ffmpeg (imageio-ffmpeg)."""

from __future__ import annotations

from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest

from diagnostics.render import AX_BOTTOM, AX_LEFT, AX_TITLE, LINE_RGB, colormap_lut
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
                "scalar/loss/G": np.float64(1.0 / (s + 1)),
            },
        )
    return run


def render(runs, **kw) -> dict:
    kw.setdefault("max_px", 96)
    kw.setdefault("progress", False)
    kw.setdefault("enc", Encoding(min_seconds=0))  # one frame per snapshot: frame k is step k
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
    # Brohan's encoder (32, 16380) keeps one pixel per weight at a readable aspect: k bands with
    # k = round(sqrt(9/16 * 16380 / 33)) = 17 of ceil(16380 / 17) = 964 columns -> 17 * 33 - 1 rows
    assert weight_to_2d(np.zeros((32, 16380), np.float32)).shape == (560, 964)
    # and the (16380, 32) decoder: 17 bands of 964 rows side by side, rows still outputs
    dec = np.arange(16380 * 32, dtype=np.float32).reshape(16380, 32)
    img = weight_to_2d(dec)
    assert img.shape == (964, 560)
    np.testing.assert_array_equal(img[0, 33:65], dec[964])  # the second band starts at row 964
    assert np.isnan(img[:, 32]).all()  # one NaN column between bands
    # a matrix at most 4:1 is left as it is
    assert weight_to_2d(np.zeros((8, 32), np.float32)).shape == (8, 32)


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

    # weights (4, 6) with max_px 96: factor min(96 // 6, (96 - 40 - 34) // 4) = 5 -> 20 x 30,
    # a 34 px colour bar below, the panel padded to the 96 px budget (headers stay readable)
    v = decode(written["weights_G_lin.weight"])
    assert v.shape == (3, HEADER + 20 + 34, 96, 3)
    # limits fixed over the sequence: +-1; -1 -> lut[0]; step 30 -> +1 -> lut[255];
    # step 10 -> 1/3 -> index round((1/3 + 1) * 255 / 2) = 170
    y = HEADER + 10
    assert close(v[0, y, 7], RDBU[0]) and close(v[2, y, 7], RDBU[0])
    assert close(v[2, y, 22], RDBU[255])
    assert close(v[0, y, 22], RDBU[170])
    # the colour bar (60 px, its minimum width) under it: blue at -1 on the left, red at +1 on the right
    bar = v[0, HEADER + 20 + 6].astype(int)
    assert bar[8, 2] > bar[8, 0] + 60 and bar[52, 0] > bar[52, 2] + 60

    # conv (2, 1, 3, 3): 7 x 3 tiled image, factor min(96 // 3, 22 // 7) = 3 -> 21 x 9; 0.5 of 0.5
    # is the top of the map; the NaN separator row (row 3 -> px 9..11) is grey
    v = decode(written["weights_D_conv.weight"])
    assert v.shape == (3, HEADER + 22 + 34, 96, 3)
    assert close(v[1, HEADER + 4, 4], RDBU[255])
    assert close(v[1, HEADER + 10, 4], (160, 160, 160))

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

    # colorful dimension: 6 rows x 3 snapshots, plot area 96 - 76 = 20 px wide -> 6 px per column,
    # 160 // 6 = 26 px per row, bin 0 at the bottom; axes (AX_TITLE above, AX_LEFT left,
    # AX_BOTTOM and a 34 px colour bar below), tile padding 3
    v = decode(written["act_colordim"])
    assert v.shape == (3, HEADER + 3 + AX_TITLE + 156 + AX_BOTTOM + 34 + 3, 96, 3)

    def px(col, b):
        return HEADER + 3 + AX_TITLE + (5 - b) * 26 + 13, 3 + AX_LEFT + col * 6 + 3

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
    # intersection of steps: 10, 20, 30; panel budget (192 - 4) // 2 = 94 -> factor 15 -> 60 x 90,
    # colour bar below, each panel padded to its 94 px budget
    assert v.shape == (3, HEADER + 60 + 34, 94 + 4 + 94, 3)
    y = HEADER + 30
    for k, step in enumerate([10, 20, 30]):
        # shared limits +-1 (left half -1 in both); right half +step/30 in a, -step/30 in b
        ia = round((step / 30 + 1) * 255 / 2)
        ib = round((-step / 30 + 1) * 255 / 2)
        assert close(v[k, y, 75], RDBU[ia]), (k, v[k, y, 75], RDBU[ia])
        assert close(v[k, y, 98 + 75], RDBU[ib]), (k, v[k, y, 98 + 75], RDBU[ib])
    # run line (rows 0..20) names each run with its distinguishing override: panels differ there
    runs_apart = np.abs(v[0, :20, :90].astype(int) - v[0, :20, 98:188].astype(int)).mean()
    assert runs_apart > 1.0
    # the same, exactly, on the frames before encoding
    runs = [open_run(a), open_run(b)]
    scan_runs(runs)
    job = next(j for j in plan_jobs(runs, max_px=192) if j.name == "weights_G_lin.weight")
    assert job.steps == [10, 20, 30]
    f0, f2 = job.render(0), job.render(2)
    np.testing.assert_array_equal(f0[20:40, :60], f0[20:40, 98:158])
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
                "scalar/loss/train": np.float64(1.0 / (s + 1)),
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
        sw.write(s, {"weights/G/x": np.full((4, 4), s / 30, np.float32)})
    # (4, 4) at max_px 192: factor min(192 // 4, (192 - 40 - 34) // 4) = 29 -> 116 x 116
    y, x = HEADER + 58, 58
    fixed = decode(render([run], max_px=192)["weights_G_x"])
    assert fixed.shape == (2, HEADER + 116 + 34, 192, 3)
    # fixed limits +-1 over the sequence: 1/3 -> index round((1/3 + 1) * 255 / 2) = 170
    assert close(fixed[0, y, x], RDBU[170]) and close(fixed[1, y, x], RDBU[255])
    # per frame (the animator's way): every frame's own max maps to the top of the colormap
    per = decode(render([run], per_frame=True, max_px=192)["weights_G_x"])
    assert close(per[0, y, x], RDBU[255]) and close(per[1, y, x], RDBU[255])


def test_short_runs_make_videos_of_at_least_five_seconds(tmp_path):
    # 3 snapshots at 12 fps: each frame held ceil(5 * 12 / 3) = 20 times -> 60 frames, 5.0 s
    run = make_gan_run(tmp_path, "a", [0, 10, 20])
    written = render([run], only="weights_G*", enc=Encoding())
    path = written["weights_G_lin.weight"]
    n, secs = imageio_ffmpeg.count_frames_and_secs(str(path))
    assert n == 60 and secs == pytest.approx(5.0, abs=0.1)
    v = decode(path)
    # frames 0..19 are step 0 (right half 0 -> the centre of the map), 40..59 step 20 (2/3)
    y = HEADER + 10
    assert close(v[0, y, 22], RDBU[128]) and close(v[19, y, 22], RDBU[128])
    assert close(v[59, y, 22], RDBU[round((2 / 3 + 1) * 255 / 2)])
    assert v.std() > 10  # not blank
    # a long run is not slowed down: 120 snapshots at 12 fps are 10 s, one frame each
    from diagnostics.video import frame_hold

    assert frame_hold(120, Encoding()) == 1 and frame_hold(3, Encoding(min_seconds=0)) == 1


def test_small_tensors_are_line_plots_and_thin_matrices_fold(tmp_path):
    run = make_ae_run(tmp_path, [0, 1, 2], n_hidden=4, shape=(6, 8))
    written = render([run], max_px=960)
    # biases are no pictures: one weights_small video holds them as line plots
    assert "weights_AE_encoder.bias" not in written and "weights_AE_decoder.bias" not in written
    v = decode(written["weights_small"])
    assert v.shape[0] == 3 and v.std() > 10
    # encoder.bias (4,) = 1, 2, 3, 4: one line per value, in LINE_RGB order; decoder.bias (48,):
    # min / mean / max. In the last frame (before encoding: 2 px lines do not survive 4:2:0
    # chroma exactly) each of the four line colours is drawn along its line
    runs = [open_run(run)]
    scan_runs(runs)
    job = next(j for j in plan_jobs(runs, max_px=960) if j.name == "weights_small")
    assert job.params["keys"] == ["weights/AE/decoder.bias", "weights/AE/encoder.bias"]
    first, last = job.render(0), job.render(2)
    for rgb in LINE_RGB[:4]:
        assert (last == rgb).all(axis=-1).sum() > 200, rgb
    # frame 0 has one point per line, no line yet
    assert (first == LINE_RGB[0]).all(axis=-1).sum() < (last == LINE_RGB[0]).all(axis=-1).sum() / 4
    # decoder.weight (48, 4) is 12:1: folded into k = round(sqrt(9/16 * 48 / 5)) = 2 bands of 24
    # rows side by side (24 x 9), upscaled by min(960 // 9, (960 - 74) // 24) = 36 -> 864 x 324,
    # the colour bar below, the panel padded to 480 px wide for its header
    d = decode(written["weights_AE_decoder.weight"])
    assert d.shape[1:] == (HEADER + 24 * 36 + 34, 480, 3)
    assert close(d[0, HEADER + 400, 4 * 36 + 18], (160, 160, 160))  # the NaN column between bands


def test_weight_videos_capped_by_default_all_on_request(tmp_path, capsys):
    run = tmp_path / "r"
    sw = SnapshotWriter(run)
    sw.write_meta({"kind": "gan"})
    for s in (0, 10):
        sw.write(
            s, {f"weights/G/l{k:02d}.weight": np.full((4, 4), k, np.float32) for k in range(12)}
        )
    capped = render([run])
    names = sorted(capped)
    # 8 of 12, evenly over the tensors in name order: indices round(linspace(0, 11, 8))
    want = sorted(f"weights_G_l{k:02d}.weight" for k in (0, 2, 3, 5, 6, 8, 9, 11))
    assert names == want
    assert "8 of 12 weight videos" in capsys.readouterr().err
    # two models: the cap is shared, 4 and 4, spread over each model's tensors
    from diagnostics.video import _evenly_per_model

    keys = [f"weights/D/d{k}" for k in range(10)] + [f"weights/G/g{k}" for k in range(3)]
    assert _evenly_per_model(keys, 5) == [
        "weights/D/d0",
        "weights/D/d4",
        "weights/D/d9",
        "weights/G/g0",
        "weights/G/g2",
    ]
    assert main([str(run), "--no-progress", "--all-weights", "--min-seconds", "0"]) == 0
    assert len(list((run / "videos").glob("weights_G_*.mp4"))) == 12


def test_make_video_all_passes_all_weights():
    import subprocess

    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        ["make", "-n", "-C", str(root), "video", "RUN=outputs/gan/x", "ALL=1"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "-m diagnostics.video outputs/gan/x" in out and "--all-weights" in out
    out = subprocess.run(
        ["make", "-n", "-C", str(root), "video", "RUN=outputs/gan/x"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "--all-weights" not in out


def test_module_cli_with_two_jobs_prints_no_warnings(tmp_path):
    import os
    import subprocess
    import sys

    run = make_gan_run(tmp_path, "a", [0, 10, 20])
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(root), OMP_NUM_THREADS="1")
    out = subprocess.run(
        [sys.executable, "-m", "diagnostics.video", str(run), "--jobs", "2", "--no-progress"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr
    # runpy's "found in sys.modules" RuntimeWarning came once per worker and pool
    assert "Warning" not in out.stderr, out.stderr
    assert len(out.stdout.split()) == 4  # the four videos written
