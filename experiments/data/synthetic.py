"""Synthetic files in the SciVis 2021 schema, optionally with the contest data's bad layers.

For tests and benchmarks: any grid size (the full contest grid is 180 x 201 x 360), a plausible
radial temperature profile (3800 K at the core-mantle boundary to 300 K at the surface) with
lateral structure, velocities of ~1e-9 m/s, and on request the defects of the real files'
outermost radii: a layer of exactly 0.0 and a layer of garbage of magnitude 1e20 to 1e30.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import xarray as xr

from experiments.data.mantle import R_INNER_KM, R_OUTER_KM, VARIABLES, file_name

FULL_GRID = (180, 201, 360)  # (lat, r, lon) of the contest files


def write_file(
    path: str | os.PathLike,
    *,
    shape: Sequence[int] = (8, 12, 16),
    variables: Sequence[str] = VARIABLES,
    seed: int = 0,
    zero_r: Sequence[int] = (),
    garbage_r: Sequence[int] = (),
    nan: Mapping[str, Sequence[int]] | None = None,
    constant: Mapping[str, Mapping[int, float]] | None = None,
) -> Path:
    """One spherical###.nc file of shape (lat, r, lon).

    Args:
        zero_r: radial layers set to exactly 0.0 in every variable.
        garbage_r: radial layers filled with +-1e20..1e30 in every variable.
        nan: variable -> radial layers holding one NaN (at lat 0, lon 0).
        constant: variable -> {radial layer: value} set to that constant.
    """
    n_lat, n_r, n_lon = (int(s) for s in shape)
    rng = np.random.default_rng(seed)
    depth = np.linspace(1.0, 0.0, n_r, dtype=np.float32)[None, :, None]  # 1 at the CMB
    data = {}
    for v in variables:
        noise = rng.standard_normal((n_lat, n_r, n_lon), dtype=np.float32)
        if v == "temperature":
            a = 300.0 + 3500.0 * depth + 150.0 * noise * (4 * depth * (1 - depth))
        else:
            a = 1e-9 * noise
        data[v] = a.astype(np.float32)
    for i in zero_r:
        for v in variables:
            data[v][:, i, :] = 0.0
    for i in garbage_r:
        for v in variables:
            g = rng.uniform(20, 30, (n_lat, n_lon)) * 1.0
            data[v][:, i, :] = (np.sign(rng.standard_normal((n_lat, n_lon))) * 10.0**g).astype(
                np.float32
            )
    for v, layers in (nan or {}).items():
        for i in layers:
            data[v][0, i, 0] = np.nan
    for v, layers in (constant or {}).items():
        for i, value in layers.items():
            data[v][:, i, :] = value
    coords = {
        "lat": ("lat", 90.0 - (np.arange(n_lat) + 0.5) * 180.0 / n_lat, {"units": "degrees_north"}),
        "r": ("r", np.linspace(R_INNER_KM, R_OUTER_KM, n_r), {"units": "km"}),
        "lon": ("lon", np.arange(n_lon) * 360.0 / n_lon, {"units": "degrees_east"}),
    }
    units = {"temperature": "K"}
    ds = xr.Dataset(
        {v: (("lat", "r", "lon"), a, {"units": units.get(v, "m/s")}) for v, a in data.items()},
        coords=coords,
    )
    path = Path(path)
    ds.to_netcdf(path)
    return path


def write_set(out_dir: str | os.PathLike, n_files: int, **kwargs) -> list[Path]:
    """n_files files spherical001.nc... in out_dir (file k seeded with k), same defects in each."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return [write_file(out / file_name(k), seed=k, **kwargs) for k in range(1, n_files + 1)]
