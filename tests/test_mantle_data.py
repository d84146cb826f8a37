"""SciVis-2021 mantle data: reader, validator, scaling, coarsening, crops, built-in generation."""

import json
import re

import numpy as np
import pytest
import torch
import xarray as xr

from experiments.data import mantle
from experiments.data.mantle import (
    VARIABLES,
    CropDataset,
    DataError,
    Scaler,
    coarsen,
    ensure_builtin,
    load_coords,
    load_fields,
    validate_files,
)

NLAT, NR, NLON = 4, 5, 6


def encoded(v: int) -> np.ndarray:
    """(lat, r, lon) array whose value spells its indices: 1000 v + 100 lat + 10 r + lon."""
    la, r, lo = np.meshgrid(np.arange(NLAT), np.arange(NR), np.arange(NLON), indexing="ij")
    return (1000 * v + 100 * la + 10 * r + lo).astype(np.float32)


def write_scivis(path, *, variables=VARIABLES, dims=("lat", "r", "lon"), dtype=np.float32):
    """A small file in the SciVis 2021 schema (optionally broken in one way)."""
    data = {}
    for v, name in enumerate(variables):
        a = encoded(v)
        order = [("lat", "r", "lon").index(d) for d in dims]
        data[name] = (dims, a.transpose(order).astype(dtype))
    coords = {
        "lat": np.linspace(90, -90, NLAT),
        "r": np.linspace(3485, 6371, NR),
        "lon": np.linspace(0, 360, NLON, endpoint=False),
    }
    xr.Dataset(data, coords=coords).to_netcdf(path)
    return path


def test_reader_gives_var_r_lat_lon_and_drops_radii(tmp_path):
    for step in (1, 2):
        write_scivis(tmp_path / f"spherical{step:03d}.nc")
    assert mantle.list_steps(tmp_path) == [1, 2]
    f = load_fields(tmp_path, [1, 2], ["vx", "temperature"], drop_r=[0, 4])
    assert f.shape == (2, 2, 3, NLAT, NLON) and f.dtype == np.float32
    # vx is variable 1 in the file; radial index 1 is the first kept after dropping 0
    assert f[1, 0, 0, 2, 5] == 1000 + 100 * 2 + 10 * 1 + 5
    assert f[0, 1, 2, 3, 0] == 100 * 3 + 10 * 3
    c = load_coords(tmp_path, 1, drop_r=[0, 4])
    np.testing.assert_allclose(c["r"], [4206.5, 4928.0, 5649.5])
    assert c["lat"][0] == 90 and c["lat"][-1] == -90 and c["lon"][1] == 60


def test_missing_directory_is_one_clear_error(tmp_path):
    with pytest.raises(DataError, match=r"data directory .*nowhere does not exist"):
        validate_files(tmp_path / "nowhere", VARIABLES, [1])


def test_validator_lists_every_bad_file_in_one_error(tmp_path):
    write_scivis(tmp_path / "spherical001.nc")  # good
    truncated = write_scivis(tmp_path / "spherical002.nc")
    raw = truncated.read_bytes()
    truncated.write_bytes(raw[: len(raw) // 2])
    (tmp_path / "spherical003.nc").write_bytes(b"this is not a netcdf file\n" * 20)
    write_scivis(tmp_path / "spherical004.nc", variables=("temperature", "vx", "vy"))
    write_scivis(tmp_path / "spherical005.nc", dims=("r", "lat", "lon"))
    write_scivis(tmp_path / "spherical007.nc", dtype=np.float64)
    classic = tmp_path / "spherical008.nc"  # netCDF-3 files read past their end silently
    write_scivis(tmp_path / "spherical009.nc")
    xr.open_dataset(tmp_path / "spherical009.nc").load().to_netcdf(classic, format="NETCDF3_64BIT")
    classic.write_bytes(classic.read_bytes()[:-1000])
    with pytest.raises(DataError) as info:
        validate_files(tmp_path, VARIABLES, [1, 2, 3, 4, 5, 6, 7, 8, 9])
    msg = str(info.value)
    assert "7 bad file(s) of 9" in msg
    assert "spherical001.nc" not in msg
    lines = {
        m.group(1): line for line in msg.splitlines() if (m := re.search(r"(spherical\d+)", line))
    }
    assert set(lines) == {f"spherical00{i}" for i in (2, 3, 4, 5, 6, 7, 8)}
    assert "unreadable" in lines["spherical002"]
    assert "unreadable" in lines["spherical003"]
    assert "unreadable" in lines["spherical008"]
    assert "missing variable(s) ['vz']" in lines["spherical004"]
    assert "dims ('r', 'lat', 'lon'), expected ('lat', 'r', 'lon')" in lines["spherical005"]
    assert "missing file" in lines["spherical006"]
    assert "dtype float64, expected float32" in lines["spherical007"]


def test_validator_catches_shape_mismatch_across_files(tmp_path):
    write_scivis(tmp_path / "spherical001.nc")
    ds = xr.open_dataset(tmp_path / "spherical001.nc").load()
    ds.isel(lon=slice(0, 3)).to_netcdf(tmp_path / "spherical002.nc")
    with pytest.raises(
        DataError, match=r"spherical002.nc: .*shape \(4, 5, 3\), other files \(4, 5, 6\)"
    ):
        validate_files(tmp_path, ["temperature"], [1, 2])


def test_scaler_hand_values_and_round_trip():
    # variable 0 spans [-2, 6], variable 1 is constant 5 (unit span: no division by zero)
    f = np.zeros((2, 2, 1, 1, 2), np.float32)
    f[:, 0] = [[[[-2.0, 2.0]]], [[[6.0, 0.0]]]]
    f[:, 1] = 5.0
    s = Scaler.fit(f, ["temperature", "vx"])
    assert s.vmin == [-2.0, 5.0] and s.vmax == [6.0, 5.0]
    y = s.transform(f)
    np.testing.assert_allclose(y[:, 0].ravel(), [0.0, 0.5, 1.0, 0.25])
    np.testing.assert_allclose(y[:, 1], 0.0)
    np.testing.assert_allclose(s.inverse(y), f, atol=1e-6)
    s2 = Scaler.from_dict(json.loads(json.dumps(s.to_dict())))
    t = torch.from_numpy(f[0])  # (V, R, LAT, LON) tensors work as well
    assert torch.allclose(s2.inverse(s2.transform(t)), t, atol=1e-6)
    assert s2.transform(t).dtype == torch.float32


def test_coarsen_arange_by_hand():
    x = np.arange(2 * 4 * 4, dtype=np.float32).reshape(2, 4, 4)  # value = 16 r + 4 lat + lon
    # block (r 0-1, lat 0-1, lon 0-1) = {0,1,4,5,16,17,20,21}: mean 10.5; +2 in lon adds 2, +2 in lat adds 8
    want = np.array([[[10.5, 12.5], [18.5, 20.5]]], np.float32)
    np.testing.assert_array_equal(coarsen(x, 2), want)
    assert torch.equal(coarsen(torch.from_numpy(x)[None], 2), torch.from_numpy(want)[None])
    np.testing.assert_array_equal(coarsen(x, (1, 4, 2))[:, 0], [[6.5, 8.5], [22.5, 24.5]])
    with pytest.raises(ValueError, match="not divisible"):
        coarsen(x, 3)


def lon_fields(n_t=3, n_v=2, n_r=4, n_lat=4, n_lon=8):
    """(T, V, R, LAT, LON) whose value is 1000 t + 100 v + 10 lat + lon (no r dependence)."""
    t, v, _, la, lo = np.meshgrid(*map(np.arange, (n_t, n_v, n_r, n_lat, n_lon)), indexing="ij")
    return (1000 * t + 100 * v + 10 * la + lo).astype(np.float32)


def test_crop_wraps_in_longitude():
    ds = CropDataset(lon_fields(), crop=(2, 2, 4), factor=2)
    x, y = ds.cut(1, 1, 2, 6)  # lon window 6, 7, 0, 1
    assert y.shape == (2, 2, 2, 4) and x.shape == (2, 1, 1, 2)
    assert y[1, 0, 1].tolist() == [1000 + 100 + 30 + lo for lo in (6, 7, 0, 1)]
    # each low-res cell averages 2x2x2 truth cells: lat 2,3 -> +25; lon (6,7) -> 6.5, (0,1) -> 0.5
    assert x[0, 0, 0].tolist() == [1000 + 25 + 6.5, 1000 + 25 + 0.5]


def test_crop_sizes_checked():
    with pytest.raises(ValueError, match="crop lat=3 is not divisible by the coarsening factor 2"):
        CropDataset(lon_fields(), crop=(2, 3, 4), factor=2)
    with pytest.raises(ValueError, match="crop lon=16 does not fit the data's lon size 8"):
        CropDataset(lon_fields(), crop=(2, 2, 16), factor=2)


def test_items_and_probes_are_deterministic_and_in_bounds():
    f = lon_fields()
    a = CropDataset(f, crop=(2, 2, 4), factor=2, seed=7)
    b = CropDataset(f, crop=(2, 2, 4), factor=2, seed=7)
    assert all(torch.equal(p, q) for p, q in zip(a[5], b[5], strict=True))
    assert any(not torch.equal(a[i][1], a[i + 1][1]) for i in range(5))
    x1, y1, w1 = a.probe_samples(4, seed=3)
    x2, y2, w2 = a.probe_samples(4, seed=3)
    assert w1 == w2 and torch.equal(x1, x2) and torch.equal(y1, y2)
    assert x1.shape == (4, 2, 1, 1, 2) and y1.shape == (4, 2, 2, 2, 4)
    for (t, r0, lat0, lon0), y in zip(w1, y1, strict=True):
        assert torch.equal(y, a.cut(t, r0, lat0, lon0)[1])
    # without roll the window never wraps: lon values stay consecutive
    c = CropDataset(f, crop=(2, 2, 4), factor=2, roll=False, seed=1)
    for i in range(50):
        lon = c[i][1][0, 0, 0] % 10
        assert torch.equal(lon - lon[0], torch.arange(4.0))


def test_tiny_builtin_is_valid_and_cached(tmp_path, monkeypatch):
    d = ensure_builtin(tmp_path, **mantle.TINY)
    steps = mantle.list_steps(d)
    assert steps == [1, 2, 3]
    validate_files(d, VARIABLES, steps)
    with xr.open_dataset(d / "spherical001.nc") as ds:
        assert ds["temperature"].dims == ("lat", "r", "lon")
        assert ds["r"].attrs["units"] == "km" and ds["temperature"].attrs["units"] == "K"
        assert ds["r"].values[0] == 3485 and ds["r"].values[-1] == 6371
        assert (np.diff(ds["lat"].values) < 0).all() and (np.diff(ds["lon"].values) > 0).all()
        temp = ds["temperature"].values
        # walls: the CMB (r index 0) is 3800 K, the surface 300 K
        np.testing.assert_allclose(temp[:, 0], 3800.0)
        np.testing.assert_allclose(temp[:, -1], 300.0)
        assert 1e-12 < np.abs(ds["vz"].values).max() < 1e-8  # mm/yr-scale mantle speeds
    f = load_fields(d, steps)
    assert f.shape == (3, 4, 9, 8, 16)
    assert not np.array_equal(f[0], f[2])  # the time series evolves

    def no_regeneration(*args, **kwargs):
        raise AssertionError("cached data was regenerated")

    monkeypatch.setattr(mantle, "generate_builtin", no_regeneration)
    assert ensure_builtin(tmp_path, **mantle.TINY) == d
    assert [p.name for p in tmp_path.iterdir()] == [d.name]  # no leftover temp dirs
