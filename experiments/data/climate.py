"""Climate fields for the autoencoder: a CF NetCDF reader, normalisation and the train/val split.

The built-in default is the HadCM3 annual-mean surface air temperature over North America that
the ``iris-sample-data`` package ships (240 years, 1860-2099, under each of the A1B and E1
scenarios, 37 x 49 grid). Any CF NetCDF file with a 2D lat/lon field works through ``paths`` and
``variable`` (for example 20CR ``prmsl`` with Brohan's ``(p - 101325) / 3000``).

Missing values (``_FillValue``, masked land or sea, NaN) are handled with a static mask: a grid
point missing in any field is excluded everywhere. Excluded points are filled with the training
mean in normalised units (so they never reach the model as NaN) and carry zero weight in the loss.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from experiments.data.errors import DataError, MissingFileError, MissingVariableError

LAT_NAMES = ("lat", "latitude")
LON_NAMES = ("lon", "longitude")
PACKAGE_PREFIX = "iris_sample_data:"


def resolve_path(path: str | os.PathLike) -> Path:
    """A file path; ``iris_sample_data:NAME`` names a file that the package ships."""
    s = str(path)
    if s.startswith(PACKAGE_PREFIX):
        try:
            import iris_sample_data
        except ImportError as e:
            raise MissingFileError(
                f"{s}: the built-in data needs the package iris-sample-data (pip install iris-sample-data)"
            ) from e
        return Path(iris_sample_data.__file__).parent / "sample_data" / s[len(PACKAGE_PREFIX) :]
    return Path(os.path.expanduser(s))


@dataclass(frozen=True)
class Normaliser:
    """Affine map ``(x - offset) / scale`` and its inverse (Brohan: offset 101325 Pa, scale 3000)."""

    offset: float
    scale: float

    def __post_init__(self) -> None:
        if not np.isfinite(self.offset) or not np.isfinite(self.scale) or self.scale == 0:
            raise DataError(f"normaliser needs a finite offset and non-zero scale, got {self}")

    def normalise(self, x):
        """Physical units to model units."""
        return (x - self.offset) / self.scale

    def inverse(self, y):
        """Model units back to physical units."""
        return y * self.scale + self.offset

    def to_dict(self) -> dict:
        return {"offset": float(self.offset), "scale": float(self.scale)}


@dataclass
class Fields:
    """Raw fields of one variable, north up: values (N, H, W) float64 with NaN where missing."""

    values: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    times: list[str]
    variable: str
    units: str
    sources: list[str] = field(default_factory=list)


def _pick(names: tuple[str, ...], dims: tuple[str, ...], what: str, where: str) -> str:
    found = [d for d in dims if d.lower() in names]
    if len(found) != 1:
        raise DataError(
            f"{where}: expected one {what} dimension named {'/'.join(names)}, dims are {dims}"
        )
    return found[0]


SAMPLE_NAMES = ("time", "sample", "samples", "record", "year", "member", "ensemble")


def _is_sample_dim(da, name: str) -> bool:
    """A dimension that enumerates fields: named like time/sample, or a CF time axis."""
    if name.lower() in SAMPLE_NAMES:
        return True
    c = da.coords.get(name)
    return c is not None and (
        c.attrs.get("axis") == "T"
        or c.attrs.get("standard_name") == "time"
        or np.issubdtype(c.dtype, np.datetime64)
    )


def _open(p: Path):
    import xarray as xr

    try:
        return xr.open_dataset(p, mask_and_scale=True)
    except Exception as e:  # noqa: BLE001 - any failure to open is bad input, named with the file
        why = str(e).replace("\n", " ").split(". ")[0][:160]
        raise DataError(
            f"{p}: unreadable, expected a complete NetCDF file ({type(e).__name__}: {why})"
        ) from e


def read_fields(path: str | os.PathLike, variable: str, sample_dim: str | None = None) -> Fields:
    """Read one variable of one CF NetCDF file as (sample, lat, lon) with NaN for missing values.

    After squeezing size-1 dimensions the variable must be (sample, lat, lon) in any order, the
    sample dimension named like time (``SAMPLE_NAMES``, a CF time axis) or by ``sample_dim``.
    """
    p = resolve_path(path)
    if not p.is_file():
        raise MissingFileError(f"climate data file not found: {p} (data.paths entry {str(path)!r})")
    with _open(p) as ds:
        if variable not in ds.data_vars:
            raise MissingVariableError(
                f"{p}: no variable {variable!r} (data.variable); variables are {sorted(ds.data_vars)}"
            )
        da = ds[variable]
        where = f"{p}:{variable}"
        lat_d = _pick(LAT_NAMES, da.dims, "latitude", where)
        lon_d = _pick(LON_NAMES, da.dims, "longitude", where)
        # A pressure level or ensemble member of length one carries no information.
        extra = [d for d in da.dims if d not in (lat_d, lon_d) and da.sizes[d] == 1]
        da = da.isel({d: 0 for d in extra}, drop=True)
        rest = [d for d in da.dims if d not in (lat_d, lon_d)]
        if len(rest) > 1:
            raise DataError(
                f"{where}: expected (sample, lat, lon) after squeezing size-1 dims, got {da.dims}"
            )
        if rest and sample_dim is not None and rest[0] != sample_dim:
            raise DataError(
                f"{where}: data.sample_dim={sample_dim!r} is not a dimension of length > 1; "
                f"dims are {dict(da.sizes)} (expected (sample, lat, lon))"
            )
        if rest and sample_dim is None and not _is_sample_dim(da, rest[0]):
            raise DataError(
                f"{where}: dims {dict(da.sizes)}: {rest[0]!r} does not look like a sample "
                f"dimension (expected (sample, lat, lon) with the sample dimension one of "
                f"{list(SAMPLE_NAMES)} or a CF time axis); if each {rest[0]!r} index is a "
                f"separate field, set data.sample_dim={rest[0]}"
            )
        if rest:
            da = da.transpose(rest[0], lat_d, lon_d)
            tname = rest[0]
            times = (
                [str(t) for t in da[tname].values]
                if tname in da.coords
                else [f"{tname}={i}" for i in range(da.sizes[tname])]
            )
        else:
            da = da.transpose(lat_d, lon_d).expand_dims("time")
            times = ["0"]
        # Masked arrays and _FillValue come back as NaN from xarray's decoding; infs are also missing.
        try:
            values = np.asarray(da.values, dtype=np.float64)
        except Exception as e:  # noqa: BLE001 - a file cut short fails only when read
            raise DataError(
                f"{where}: unreadable, expected a complete NetCDF file ({type(e).__name__})"
            ) from e
        values[~np.isfinite(values)] = np.nan
        lat = np.asarray(da[lat_d].values, dtype=np.float64)
        lon = np.asarray(da[lon_d].values, dtype=np.float64)
        units = str(da.attrs.get("units", ""))
    if lat.size > 1 and lat[0] < lat[-1]:  # north up, as a map is read
        values, lat = values[:, ::-1], lat[::-1]
    return Fields(np.ascontiguousarray(values), lat.copy(), lon, times, variable, units, [str(p)])


def concat_fields(parts: list[Fields]) -> Fields:
    """Several files of the same variable on the same grid, concatenated along time."""
    first = parts[0]
    for q in parts[1:]:
        if q.values.shape[1:] != first.values.shape[1:] or not (
            np.allclose(q.lat, first.lat) and np.allclose(q.lon, first.lon)
        ):
            raise DataError(f"{q.sources[0]}: grid differs from {first.sources[0]}")
    return Fields(
        np.concatenate([q.values for q in parts]),
        first.lat,
        first.lon,
        [f"{Path(q.sources[0]).stem} {t}" if len(parts) > 1 else t for q in parts for t in q.times],
        first.variable,
        first.units,
        [s for q in parts for s in q.sources],
    )


@dataclass
class ClimateData:
    """Normalised, gap-filled fields ready for the model, with what is needed to undo it all."""

    train: torch.Tensor  # (N_train, H, W) float32, normalised
    val: torch.Tensor  # (N_val, H, W) float32, normalised
    mask: torch.Tensor  # (H, W) bool, True where valid
    lat: np.ndarray
    lon: np.ndarray
    normaliser: Normaliser
    variable: str
    units: str
    train_times: list[str]
    val_times: list[str]
    sources: list[str]
    fill: float  # value (normalised) that replaced missing points
    norm_source: str = "fitted"  # fitted (from the training fields) | configured

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.mask.shape[0]), int(self.mask.shape[1]))

    def meta(self) -> dict:
        """JSON-able description (for meta.json and the run directory)."""
        return {
            "variable": self.variable,
            "units": self.units,
            "lat": self.lat.tolist(),
            "lon": self.lon.tolist(),
            "shape": list(self.shape),
            "mask": self.mask.numpy().astype(int).tolist(),
            "normalisation": self.normaliser.to_dict(),
            "normalisation_source": self.norm_source,
            "fill": self.fill,
            "n_train": int(self.train.shape[0]),
            "n_val": int(self.val.shape[0]),
            "sources": self.sources,
        }


def load_climate(
    paths: list[str] | str,
    variable: str,
    *,
    offset: float | None = None,
    scale: float | None = None,
    val_every: int = 10,
    sample_dim: str | None = None,
    max_abs: float = 10.0,
) -> ClimateData:
    """Read, split (every ``val_every``-th field to validation, as Brohan) and normalise.

    ``offset``/``scale`` None are taken from the training fields: the mean, and 1.1 times the largest
    deviation from it, so every training value lies inside the tanh output range. A fixed
    normalisation that puts training values beyond ``max_abs`` is refused: it belongs to other
    data (280 K / 50 K applied to geopotential height).
    """
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    if not paths:
        raise DataError("data.paths is empty")
    f = concat_fields([read_fields(p, variable, sample_dim) for p in paths])
    n = f.values.shape[0]
    if val_every < 2 or n < 2:
        raise DataError(
            f"need >= 2 fields and val_every >= 2 (got {n} fields, val_every={val_every})"
        )
    is_val = (np.arange(n) % val_every) == val_every - 1
    mask = np.isfinite(f.values).all(axis=0)
    if not mask.any():
        raise DataError(
            f"{f.sources}: variable {variable!r} has no grid point valid in every field"
        )
    tr_valid = f.values[~is_val][:, mask]
    fixed = offset is not None or scale is not None
    if offset is None:
        offset = float(tr_valid.mean())
    if scale is None:
        scale = 1.1 * float(np.abs(tr_valid - offset).max()) or 1.0
    norm = Normaliser(float(offset), float(scale))
    worst = float(np.abs(norm.normalise(tr_valid)).max())
    if fixed and worst > max_abs:
        raise DataError(
            f"{f.sources}: variable {variable!r} ({f.units or 'no units'}, training values in "
            f"[{tr_valid.min():.6g}, {tr_valid.max():.6g}]) normalised with the configured "
            f"data.offset={offset:g}, data.scale={scale:g} reaches {worst:.3g}, expected within "
            f"+-{max_abs:g}: that normalisation is for other data; set data.offset=null "
            "data.scale=null to derive it from the training fields"
        )
    x = norm.normalise(f.values)
    fill = float(norm.normalise(tr_valid.mean()))
    x[:, ~mask] = fill
    xt = torch.from_numpy(x.astype(np.float32))
    return ClimateData(
        train=xt[torch.from_numpy(~is_val)].contiguous(),
        val=xt[torch.from_numpy(is_val)].contiguous(),
        mask=torch.from_numpy(mask),
        lat=f.lat,
        lon=f.lon,
        normaliser=norm,
        variable=variable,
        units=f.units,
        train_times=[t for t, v in zip(f.times, is_val, strict=True) if not v],
        val_times=[t for t, v in zip(f.times, is_val, strict=True) if v],
        sources=f.sources,
        fill=fill,
        norm_source="configured" if fixed else "fitted",
    )
