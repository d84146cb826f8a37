"""Climate data: normalisation pair, CF NetCDF reading (names, size-1 dims, missing values), built-in data."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr

from experiments.data.climate import Normaliser, load_climate, read_fields
from experiments.data.errors import DataError

BUILTIN = ["iris_sample_data:A1B_north_america.nc", "iris_sample_data:E1_north_america.nc"]


def test_brohan_pressure_normalisation_round_trip():
    n = Normaliser(101325.0, 3000.0)
    assert n.normalise(101325.0) == 0.0
    assert n.normalise(104325.0) == 1.0
    assert n.normalise(95325.0) == -2.0
    assert n.inverse(-1.0) == 98325.0
    p = np.array([87000.0, 98765.4, 101325.0, 105000.5])
    np.testing.assert_allclose(n.inverse(n.normalise(p)), p, rtol=1e-6)
    t = torch.tensor([0.5, -0.25])
    torch.testing.assert_close(n.normalise(n.inverse(t)), t)


def test_normaliser_rejects_zero_scale():
    with pytest.raises(ValueError, match="scale"):
        Normaliser(280.0, 0.0)


def write_masked_prmsl(path, *, names=("latitude", "longitude")) -> np.ndarray:
    """4 fields (time, level=1, lat 4 south->north, lon 5); (lat 0, lon 2) always missing, (lat 3, lon 4) NaN once."""
    lat_name, lon_name = names
    t, nlat, nlon = 4, 4, 5
    p = 100000.0 + 100.0 * np.arange(t * nlat * nlon, dtype=np.float64).reshape(t, 1, nlat, nlon)
    p[:, 0, 0, 2] = -9999.0  # the _FillValue: masked land
    p[1, 0, 3, 4] = np.nan
    da = xr.DataArray(
        p.astype(np.float32),
        dims=("time", "level", lat_name, lon_name),
        coords={
            "time": np.arange(t),
            "level": [1000.0],
            lat_name: [-30.0, -10.0, 10.0, 30.0],
            lon_name: [0.0, 10.0, 20.0, 30.0, 40.0],
        },
        attrs={"units": "Pa"},
        name="prmsl",
    )
    da.to_dataset().to_netcdf(path, encoding={"prmsl": {"_FillValue": -9999.0}})
    return p[:, 0]


def test_reads_latitude_longitude_squeezes_level_and_masks(tmp_path):
    path = tmp_path / "prmsl.nc"
    raw = write_masked_prmsl(path)
    f = read_fields(path, "prmsl")
    assert f.values.shape == (4, 4, 5)  # the size-1 level dim is gone
    np.testing.assert_array_equal(f.lat, [30.0, 10.0, -10.0, -30.0])  # north up
    assert f.units == "Pa"
    # row 3 (north) of the file is row 0 after the flip; the fill value became NaN
    assert np.isnan(f.values[:, 3, 2]).all()
    assert f.values[0, 0, 0] == raw[0, 3, 0] == 100000.0 + 100.0 * 15


def test_load_climate_fills_missing_and_splits_every_nth(tmp_path):
    path = tmp_path / "prmsl.nc"
    raw = write_masked_prmsl(path)
    d = load_climate([str(path)], "prmsl", offset=101325.0, scale=3000.0, val_every=2)
    # fields 1 and 3 (every 2nd) are validation
    assert d.train.shape == (2, 4, 5) and d.val.shape == (2, 4, 5)
    # missing: (lat 0 -> row 3, lon 2) always, (lat 3 -> row 0, lon 4) once: both masked everywhere
    expected = np.ones((4, 5), bool)
    expected[3, 2] = False
    expected[0, 4] = False
    np.testing.assert_array_equal(d.mask.numpy(), expected)
    assert torch.isfinite(d.train).all() and torch.isfinite(d.val).all()
    # a valid point: field 2 (training), file row 1 -> row 2, lon 3: 100000 + 100 * (2*20 + 1*5 + 3)
    assert raw[2, 1, 3] == 104800.0
    assert d.train[1, 2, 3].item() == pytest.approx((104800.0 - 101325.0) / 3000.0, rel=1e-6)
    # missing points hold the training mean (normalised) of the valid values
    tr = raw[[0, 2]][:, ::-1][:, expected]
    fill = (tr.mean() - 101325.0) / 3000.0
    assert d.fill == pytest.approx(fill, rel=1e-9)
    assert d.val[0, 3, 2].item() == pytest.approx(fill, rel=1e-6)


def test_lat_lon_names_and_auto_normalisation(tmp_path):
    path = tmp_path / "p.nc"
    raw = write_masked_prmsl(path, names=("lat", "lon"))
    d = load_climate(path, "prmsl", offset=None, scale=None, val_every=4)
    valid = raw[:3][:, ::-1][:, d.mask.numpy()]
    assert d.normaliser.offset == pytest.approx(valid.mean())
    assert d.normaliser.scale == pytest.approx(1.1 * np.abs(valid - valid.mean()).max())
    assert d.train.abs().max().item() <= 1 / 1.1 + 1e-6  # inside tanh's range


def test_clear_errors_name_file_and_variable(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.nc"):
        load_climate([str(tmp_path / "nope.nc")], "prmsl")
    path = tmp_path / "prmsl.nc"
    write_masked_prmsl(path)
    with pytest.raises(KeyError, match=r"prmsl\.nc.*'air'.*prmsl"):
        load_climate([str(path)], "air")


def test_builtin_hadcm3_air_temperature():
    d = load_climate(BUILTIN, "air_temperature", offset=280.0, scale=50.0, val_every=10)
    # 2 scenarios x 240 years; every 10th to validation
    assert d.train.shape == (432, 37, 49) and d.val.shape == (48, 37, 49)
    assert d.units == "K" and bool(d.mask.all())
    assert d.lat[0] == 60.0 and d.lat[-1] == 15.0
    phys = d.normaliser.inverse(d.train)
    assert 250.0 < phys.min().item() and phys.max().item() < 310.0
    assert d.val_times[0].startswith("A1B_north_america 1869")


def write_z500(path, dims=("time", "lat", "lon")) -> np.ndarray:
    """Geopotential height at 500 hPa (m): 6 fields, 3 x 4, values 5500 + 10 * index."""
    z = 5500.0 + 10.0 * np.arange(6 * 3 * 4, dtype=np.float64).reshape(6, 3, 4)
    shape = {"time": 6, "lat": 3, "lon": 4, "r": 6}
    a = z.reshape([shape[d] for d in ("time", "lat", "lon")])
    order = [("r" if d == "r" else d) for d in dims]
    a = np.moveaxis(a, 0, order.index("r") if "r" in order else order.index("time"))
    coords = {"lat": [10.0, 20.0, 30.0], "lon": [0.0, 10.0, 20.0, 30.0]}
    xr.Dataset({"z": (dims, a.astype(np.float32), {"units": "m"})}, coords=coords).to_netcdf(path)
    return z


def test_normalisation_fitted_by_default_and_fixed_only_when_it_fits(tmp_path):
    path = tmp_path / "z500.nc"
    z = write_z500(path)
    d = load_climate(path, "z", val_every=3)  # fields 2 and 5 are validation
    tr = z[[0, 1, 3, 4]]
    assert d.norm_source == "fitted" and d.meta()["normalisation_source"] == "fitted"
    assert d.normaliser.offset == pytest.approx(tr.mean())
    assert d.normaliser.scale == pytest.approx(1.1 * np.abs(tr - tr.mean()).max())
    # the built-in temperature normalisation applied to heights of ~5500 m: (5500 - 280) / 50 > 100
    with pytest.raises(DataError, match=r"z500\.nc.*'z'.*data\.offset=280.*data\.scale=50.*null"):
        load_climate(path, "z", offset=280.0, scale=50.0, val_every=3)
    fixed = load_climate(path, "z", offset=5800.0, scale=500.0, val_every=3)
    assert fixed.norm_source == "configured" and fixed.normaliser.offset == 5800.0


def test_sample_dimension_must_be_named_or_time_like(tmp_path):
    # a mantle-like (lat, r, lon) file: r is not a sample axis
    path = tmp_path / "mantle.nc"
    write_z500(path, dims=("lat", "r", "lon"))
    with pytest.raises(
        DataError, match=r"mantle\.nc:z.*'r' does not look like a sample.*sample_dim=r"
    ):
        read_fields(path, "z")
    f = read_fields(path, "z", sample_dim="r")
    assert f.values.shape == (6, 3, 4)
    with pytest.raises(DataError, match=r"data\.sample_dim='time' is not a dimension"):
        read_fields(path, "z", sample_dim="time")
    ok = tmp_path / "t.nc"
    write_z500(ok)
    assert read_fields(ok, "z").values.shape == (6, 3, 4)


def test_unreadable_truncated_and_text_files_name_the_file(tmp_path):
    good = tmp_path / "z.nc"
    write_z500(good)
    truncated = tmp_path / "truncated.nc"
    truncated.write_bytes(good.read_bytes()[:300])
    half = tmp_path / "half.nc"
    half.write_bytes(good.read_bytes()[: len(good.read_bytes()) * 2 // 3])
    text = tmp_path / "notes.nc"
    text.write_text("this is a text file, not NetCDF\n" * 10)
    for p in (truncated, half, text):
        with pytest.raises(DataError, match=rf"{p.name}: unreadable, expected a complete NetCDF"):
            load_climate([str(good), str(p)], "z", val_every=3)
