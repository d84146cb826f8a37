"""The autoencoder experiment: every exp config runs, events and snapshots read back, resume, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from hydra import compose, initialize_config_dir

from diagnostics.snapshots import list_snapshots, load_snapshot, read_meta
from experiments.data.climate import resolve_path
from experiments.train_autoencoder import train
from tests.gan_helpers import events

CONF = Path(__file__).resolve().parents[1] / "conf" / "autoencoder"
EXPS = sorted(p.stem for p in (CONF / "exp").glob("*.yaml"))
SHORT = [
    "train.n_epochs=2",
    "train.steps_per_epoch=10",
    "frames.every=10",
    "checkpoint.every=10",
    "diagnostics.every=5",
    "diagnostics.record_every=5",
]


def make_cfg(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="train_autoencoder", overrides=overrides)


@pytest.mark.parametrize("exp", EXPS)
def test_every_exp_config_runs_a_few_steps(exp, tmp_path):
    metrics = train(make_cfg([f"+exp={exp}", *SHORT]), tmp_path)
    acc = events(tmp_path)
    tags = acc.Tags()
    # step 0: the untrained model, evaluated on the whole training set
    assert [e.step for e in acc.Scalars("loss/AE/train")] == [0, 5, 10, 15, 20]
    assert [e.step for e in acc.Scalars("loss/AE/val")] == [0, 10, 20]
    frames = acc.Images("frames/AE/summary")
    assert [e.step for e in frames] == [0, 10, 20]
    assert (frames[-1].width, frames[-1].height) == (1920, 1080)
    assert {"weights_img/AE/encoder", "weights_img/AE/decoder"} <= set(tags["images"])
    assert [e.step for e in acc.Images("weights_img/AE/encoder")] == [0, 10, 20]
    # the diagnostics core is on: activation histograms of the hidden layer
    assert any(t.startswith("act/AE/") for t in tags["histograms"]), tags["histograms"]
    assert [s for s, _ in list_snapshots(tmp_path)] == [0, 10, 20]
    assert metrics["step"] == 20 and np.isfinite(metrics["val_mse_autoencoder"])
    assert json.loads((tmp_path / "summary.json").read_text())[
        "val_mse_climatology"
    ] == pytest.approx(metrics["val_mse_climatology"])


def test_snapshots_meta_and_run_files(tmp_path):
    train(make_cfg(["+exp=small", *SHORT]), tmp_path)
    meta = read_meta(tmp_path)
    assert meta["kind"] == "autoencoder" and meta["shape"] == [37, 49] and meta["total_steps"] == 20
    # fitted from the training fields by default (every 10th field is validation), by hand:
    raw = np.concatenate(
        [
            xr.open_dataset(resolve_path(p))["air_temperature"].values
            for p in (
                "iris_sample_data:A1B_north_america.nc",
                "iris_sample_data:E1_north_america.nc",
            )
        ]
    ).astype(np.float64)
    tr = raw[np.arange(len(raw)) % 10 != 9]
    offset, scale = tr.mean(), 1.1 * np.abs(tr - tr.mean()).max()
    assert meta["normalisation"] == pytest.approx({"offset": offset, "scale": scale}, rel=1e-9)
    assert meta["normalisation_source"] == "fitted"
    assert len(meta["lat"]) == 37 and len(meta["lon"]) == 49
    snap = load_snapshot(list_snapshots(tmp_path)[-1][1])
    assert snap["weights/AE/encoder.weight"].shape == (32, 37 * 49)
    assert snap["weights/AE/decoder.weight"].shape == (37 * 49, 32)
    assert snap["probe/field"].shape == snap["probe/recon"].shape == (37, 49)
    assert {"scalar/loss/train", "scalar/loss/val"} <= set(snap)
    norm = json.loads((tmp_path / "normalisation.json").read_text())
    assert (norm["offset"], norm["scale"], norm["units"]) == pytest.approx((offset, scale, "K"))
    assert norm["source"] == "fitted"
    assert (tmp_path / "config.yaml").is_file()
    # the probe is the first validation field (year 1869 of A1B), normalised
    assert snap["probe/field"].mean() * scale + offset == pytest.approx(286.0, abs=3.0)


def test_resume_continues_exactly(tmp_path):
    straight = tmp_path / "straight"
    train(make_cfg(["+exp=small", *SHORT[1:], "train.n_epochs=3"]), straight)
    part = tmp_path / "part"
    train(make_cfg(["+exp=small", *SHORT]), part)
    train(
        make_cfg(["+exp=small", *SHORT[1:], "train.n_epochs=3", f"resume={part}"]),
        tmp_path / "ignored",
    )
    a = torch.load(straight / "checkpoints" / "ckpt_00000030.pt", weights_only=True)
    b = torch.load(part / "checkpoints" / "ckpt_00000030.pt", weights_only=True)
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=0, atol=0)
    np.testing.assert_array_equal(a["history"]["steps"].numpy(), [0, 10, 20, 30])
    np.testing.assert_array_equal(b["history"]["steps"].numpy(), [0, 10, 20, 30])
    assert [s for s, _ in list_snapshots(part)] == [0, 10, 20, 30]


def test_masked_netcdf_through_data_paths(tmp_path):
    from tests.test_climate_data import write_masked_prmsl

    nc = tmp_path / "prmsl.nc"
    write_masked_prmsl(nc)
    run = tmp_path / "run"
    metrics = train(make_cfg(["data=prmsl", f"data.paths=[{nc}]", "data.val_every=2", *SHORT]), run)
    assert np.isfinite(metrics["val_mse_autoencoder"])
    meta = read_meta(run)
    assert meta["shape"] == [4, 5] and meta["mask"][3][2] == 0 and sum(map(sum, meta["mask"])) == 18
    assert all(np.isfinite(e.value) for e in events(run).Scalars("loss/AE/train"))


def test_bad_path_or_variable_fails_before_training(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.nc"):
        train(make_cfg([f"data.paths=[{tmp_path / 'missing.nc'}]", *SHORT]), tmp_path / "a")
    assert not list((tmp_path / "a").glob("events.*"))
    with pytest.raises(KeyError, match="'tas'"):
        train(make_cfg(["data.variable=tas", *SHORT]), tmp_path / "b")
    assert not list((tmp_path / "b").glob("events.*"))


@pytest.mark.slow
def test_small_run_beats_climatology(tmp_path):
    metrics = train(make_cfg(["+exp=small"]), tmp_path)
    assert metrics["step"] == 10000
    assert metrics["val_mse_autoencoder"] < 0.5 * metrics["val_mse_climatology"]
