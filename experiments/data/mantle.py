"""Earth-mantle fields in the IEEE SciVis Contest 2021 schema: built-in data, validation, loading,
scaling, coarsening and 3D crops.

SciVis 2021 schema (what real users have): one NetCDF file per time step, ``spherical001.nc``,
``spherical002.nc``, ...; coordinates ``lat`` (descending, +90 .. -90), ``r`` (ascending,
3485 .. 6371 km), ``lon`` (ascending, 0 .. 360); float32 variables ``temperature`` [K] and ``vx``,
``vy``, ``vz`` [m/s], each stored with dims ``(lat, r, lon)``. Time steps are named by their file
number (step 1 is ``spherical001.nc``). Arrays handed to the models are ``(var, r, lat, lon)``.

Built-in data come from :mod:`experiments.data.convection` (a Cartesian box, NOT a spherical
shell) mapped onto that schema:

- box z (0 bottom .. 1 top, both walls included) -> r = 3485 + 2886 z km, so ``nr = nz + 1``;
- box y (periodic, index j) -> lat cell centres 90 - (j + 1/2) 180 / nlat (so lat is periodic too);
- box x (periodic, index i) -> lon = 360 i / nlon;
- T (0 top .. 1 bottom) -> temperature = 300 K + 3500 K * T;
- velocity (units of kappa / depth) -> m/s with kappa = 1e-6 m^2/s and depth 2886 km; vx is the
  box x (longitude) component, vy the box y (latitude) component, vz the vertical (radial) one.
  (SciVis' vx, vy, vz are Earth-centred Cartesian components; ours are local box components.)
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from experiments.data.convection import Convection
from experiments.data.errors import DataError

log = logging.getLogger(__name__)

VARIABLES = ("temperature", "vx", "vy", "vz")
DIMS = ("lat", "r", "lon")
R_INNER_KM, R_OUTER_KM = 3485.0, 6371.0
T_TOP_K, DELTA_T_K = 300.0, 3500.0
KAPPA_M2_S = 1e-6

# Built-in sizes. DEFAULT: 73 s on one core of a loaded 2-core machine (~3300 steps of ~20 ms),
# Nu ~6.8, temperature within ~8 % of [300, 3800] K (spectral ringing at the boundary layers);
# Ra 1e5 needs a finer grid than that budget allows. TINY: well under a second, for tests.
DEFAULT = dict(nr=25, nlat=32, nlon=64, n_files=30, ra=3e4, t_spinup=0.05, t_every=0.002, seed=0)
TINY = dict(nr=9, nlat=8, nlon=16, n_files=3, ra=1e4, t_spinup=0.04, t_every=0.002, seed=0)


def file_name(step: int) -> str:
    """SciVis file name of a time step (1-based): 1 -> spherical001.nc."""
    return f"spherical{step:03d}.nc"


def list_steps(data_dir: str | os.PathLike) -> list[int]:
    """Sorted time steps present in data_dir (from file names spherical###.nc)."""
    d = Path(data_dir)
    out = []
    for p in d.glob("spherical*.nc") if d.is_dir() else []:
        digits = p.stem.removeprefix("spherical")
        if digits.isdigit():
            out.append(int(digits))
    return sorted(out)


# ---------------------------------------------------------------------------------------------
# Built-in data


def generate_builtin(
    out_dir: str | os.PathLike,
    *,
    nr: int,
    nlat: int,
    nlon: int,
    n_files: int,
    ra: float,
    t_spinup: float,
    t_every: float,
    seed: int = 0,
    cfl: float = 1.0,
    progress: bool = True,
) -> list[Path]:
    """Spin up convection, then write n_files snapshots t_every apart as spherical###.nc."""
    from tqdm import tqdm

    torch.set_num_threads(1)  # 2 threads on a busy 2-core machine ran ~15x slower
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # Horizontal cells are 1/16 of the depth, so the box grows with nlat and nlon (default 4 x 2).
    sim = Convection(nlon, nlat, nr - 1, lx=nlon / 16, ly=nlat / 16, ra=ra)
    sim.perturb(0.05, seed)
    coords = builtin_coords(nr, nlat, nlon)
    n_spinup = math.ceil(t_spinup / t_every - 1e-9)  # progress is reported every t_every
    paths = []
    bar = tqdm(total=n_spinup + n_files, disable=not progress, unit="chunk", desc="mantle data")
    with bar:
        for k in range(n_spinup + n_files):
            steps = sim.run(t_spinup + (k - n_spinup) * t_every, cfl=cfl)
            if k >= n_spinup:
                _check_sane(sim, k - n_spinup + 1)
                paths.append(_write_snapshot(out / file_name(k - n_spinup + 1), sim, coords))
            bar.set_postfix(t=f"{sim.time:.3f}", steps=steps, Nu=f"{sim.nusselt():.2f}")
            bar.update()
    return paths


def _check_sane(sim: Convection, step: int) -> None:
    """Refuse to write a snapshot from a run that went unstable (T should stay near [0, 1])."""
    T = sim.fields()["T"]
    if not bool(torch.isfinite(T).all()) or float(T.min()) < -0.5 or float(T.max()) > 1.5:
        raise RuntimeError(
            f"built-in convection became unstable before file {step} "
            f"(T in [{float(T.min()):.3g}, {float(T.max()):.3g}], expected about [0, 1]); "
            "lower data.builtin Ra or refine the grid"
        )


def builtin_coords(nr: int, nlat: int, nlon: int) -> dict[str, np.ndarray]:
    """Coordinates of the built-in grid: r [km] ascending, lat descending centres, lon from 0."""
    return {
        "lat": 90.0 - (np.arange(nlat) + 0.5) * 180.0 / nlat,
        "r": np.linspace(R_INNER_KM, R_OUTER_KM, nr),
        "lon": np.arange(nlon) * 360.0 / nlon,
    }


def _write_snapshot(path: Path, sim: Convection, coords: dict[str, np.ndarray]) -> Path:
    f = sim.fields()  # each (nz + 1, ny, nx) = (r, lat, lon)
    vel = KAPPA_M2_S / ((R_OUTER_KM - R_INNER_KM) * 1e3)
    data = {
        "temperature": (T_TOP_K + DELTA_T_K * f["T"], "K"),
        "vx": (vel * f["u"], "m/s"),
        "vy": (vel * f["v"], "m/s"),
        "vz": (vel * f["w"], "m/s"),
    }
    ds = xr.Dataset(
        {
            name: (DIMS, a.permute(1, 0, 2).numpy().astype(np.float32), {"units": units})
            for name, (a, units) in data.items()
        },
        coords={
            "lat": ("lat", coords["lat"], {"units": "degrees_north"}),
            "r": ("r", coords["r"], {"units": "km"}),
            "lon": ("lon", coords["lon"], {"units": "degrees_east"}),
        },
        attrs={
            "source": "fieldscope built-in Boussinesq convection (Cartesian box)",
            "time": sim.time,
        },
    )
    ds.to_netcdf(path)
    return path


# Part of the cache key: bump when the solver changes what it writes, so old caches are not reused
# (version 1 caches could hold blown-up late snapshots; see DEVLOG 2026-11-28).
GENERATOR_VERSION = 2


def ensure_builtin(cache_dir: str | os.PathLike, **params) -> Path:
    """Directory of built-in files for params (DEFAULT overridden by params), generating once."""
    full = {**DEFAULT, **params}
    keyed = {**full, "generator_version": GENERATOR_VERSION}
    key = hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()[:12]
    cache = Path(cache_dir)
    final = cache / f"builtin-{key}"
    if final.is_dir():
        return final
    cache.mkdir(parents=True, exist_ok=True)
    log.info("generating built-in mantle data %s into %s (once)", full, final)
    tmp = Path(tempfile.mkdtemp(prefix=f".builtin-{key}-", dir=cache))
    try:
        generate_builtin(tmp, **full)
        (tmp / "params.json").write_text(json.dumps(full, sort_keys=True, indent=1))
        os.replace(tmp, final)  # atomic: readers never see a half-written directory
    except OSError:
        if not final.is_dir():  # a concurrent generator did not win the race either
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


# ---------------------------------------------------------------------------------------------
# Validation and loading


def validate_files(
    data_dir: str | os.PathLike, variables: Sequence[str], steps: Sequence[int]
) -> list[Path]:
    """Open every file of steps and raise one DataError listing every problem; returns the paths."""
    d = Path(data_dir)
    expect = f"float32 variables {list(variables)} with dims {DIMS}"
    if not d.is_dir():
        raise DataError(f"data directory {d} does not exist (expected files spherical###.nc)")
    if not len(steps):
        raise DataError(f"no time steps requested from {d}")
    problems: list[str] = []
    paths = [d / file_name(s) for s in steps]
    shape = None  # (lat, r, lon) of the first good file
    for p in paths:
        if not p.is_file():
            problems.append(f"{p}: missing file")
            continue
        try:
            _check_classic_length(p)
            with xr.open_dataset(p, cache=False) as ds:
                bad = [f"missing coordinate {c!r}" for c in DIMS if c not in ds.coords]
                missing = [v for v in variables if v not in ds.variables]
                if missing:
                    bad.append(f"missing variable(s) {missing} (has {sorted(ds.data_vars)})")
                for v in (v for v in variables if v not in missing):
                    a = ds[v]
                    if a.dims != DIMS:
                        bad.append(f"variable {v!r} has dims {a.dims}, expected {DIMS}")
                        continue
                    if a.dtype != np.float32:
                        bad.append(f"variable {v!r} has dtype {a.dtype}, expected float32")
                    if shape is None:
                        shape = a.shape
                    elif a.shape != shape:
                        bad.append(f"variable {v!r} has shape {a.shape}, other files {shape}")
                    _ = a[-1, -1, -1].values  # reading the last value catches truncated files
                if bad:
                    problems.append(f"{p}: " + "; ".join(bad))
        except Exception as e:  # noqa: BLE001 - any failure to read is reported with the file
            why = str(e).replace("\n", " ").split(". ")[0][:160]  # xarray's hints run long
            problems.append(
                f"{p}: unreadable, not a complete NetCDF file ({type(e).__name__}: {why})"
            )
    if problems:
        raise DataError(
            f"{len(problems)} bad file(s) of {len(paths)} in {d} (expected {expect}):\n  "
            + "\n  ".join(problems)
        )
    return paths


def _check_classic_length(path: Path) -> None:
    # netCDF-C reads past the end of a short classic (CDF1/2/5) file without complaint; scipy maps
    # every variable at open and fails when the file is shorter than its header says.
    with open(path, "rb") as fh:
        if fh.read(3) != b"CDF":
            return
    import scipy.io

    with scipy.io.netcdf_file(path, mmap=True) as f:
        f.variables.clear()  # drop the views so the map can close


def load_fields(
    data_dir: str | os.PathLike,
    steps: Sequence[int],
    variables: Sequence[str] = VARIABLES,
    drop_r: Sequence[int] = (),
    *,
    validate: bool = True,
) -> np.ndarray:
    """Load steps as float32 (T, V, R, LAT, LON), radial indices drop_r removed."""
    if validate:
        validate_files(data_dir, variables, steps)
    out = []
    for s in steps:
        with xr.open_dataset(Path(data_dir) / file_name(s), cache=False) as ds:
            # files store (lat, r, lon); models want (var, r, lat, lon)
            a = np.stack([ds[v].values.transpose(1, 0, 2) for v in variables])
        out.append(np.delete(a, list(drop_r), axis=1).astype(np.float32, copy=False))
    return np.stack(out)


def grid_shape(path: str | os.PathLike) -> tuple[int, int, int]:
    """(lat, r, lon) sizes of one file."""
    with xr.open_dataset(path, cache=False) as ds:
        return tuple(int(ds.sizes[d]) for d in DIMS)


def load_coords(
    data_dir: str | os.PathLike, step: int, drop_r: Sequence[int] = ()
) -> dict[str, np.ndarray]:
    """Coordinates of one file: r [km] (drop_r removed), lat and lon [degrees]."""
    with xr.open_dataset(Path(data_dir) / file_name(step), cache=False) as ds:
        return {
            "r": np.delete(ds["r"].values.astype(np.float64), list(drop_r)),
            "lat": ds["lat"].values.astype(np.float64),
            "lon": ds["lon"].values.astype(np.float64),
        }


# ---------------------------------------------------------------------------------------------
# Scaling, coarsening, crops


class Scaler:
    """Per-variable min-max scaling to [0, 1]; the variable axis is -4 of (..., V, R, LAT, LON)."""

    def __init__(self, variables: Sequence[str], vmin: Sequence[float], vmax: Sequence[float]):
        if not len(variables) == len(vmin) == len(vmax):
            raise ValueError("variables, vmin and vmax must have the same length")
        self.variables = list(variables)
        self.vmin = [float(v) for v in vmin]
        self.vmax = [float(v) for v in vmax]

    @classmethod
    def fit(cls, fields: np.ndarray, variables: Sequence[str]) -> Scaler:
        """Global min and max of each variable over fields (T, V, R, LAT, LON)."""
        if fields.ndim != 5 or fields.shape[1] != len(variables):
            raise ValueError(f"expected (T, {len(variables)}, R, LAT, LON), got {fields.shape}")
        return cls(variables, fields.min(axis=(0, 2, 3, 4)), fields.max(axis=(0, 2, 3, 4)))

    def _coeffs(self, x):
        # constant variables would divide by zero: give them unit span
        span = [(b - a) if b > a else 1.0 for a, b in zip(self.vmin, self.vmax, strict=True)]
        lo, sp = np.array(self.vmin), np.array(span)
        if isinstance(x, torch.Tensor):
            lo, sp = (torch.as_tensor(a, dtype=x.dtype, device=x.device) for a in (lo, sp))
        else:
            lo, sp = lo.astype(x.dtype), sp.astype(x.dtype)
        if x.ndim < 4 or x.shape[-4] != len(self.vmin):
            raise ValueError(f"expected (..., {len(self.vmin)}, R, LAT, LON), got {tuple(x.shape)}")
        return lo[:, None, None, None], sp[:, None, None, None]

    def transform(self, x):
        """Physical units -> [0, 1] (numpy array or torch tensor)."""
        lo, sp = self._coeffs(x)
        return (x - lo) / sp

    def inverse(self, x):
        """[0, 1] -> physical units (numpy array or torch tensor)."""
        lo, sp = self._coeffs(x)
        return x * sp + lo

    def to_dict(self) -> dict:
        """Plain JSON-serialisable form."""
        return {"variables": self.variables, "vmin": self.vmin, "vmax": self.vmax}

    @classmethod
    def from_dict(cls, d: dict) -> Scaler:
        """Inverse of to_dict."""
        return cls(d["variables"], d["vmin"], d["vmax"])


def coarsen(x, factor: int | Sequence[int]):
    """Average-pool the last three axes (r, lat, lon) by integer factor(s): the low-res input."""
    # (..., R, LAT, LON) -> (..., R / fr, LAT / flat, LON / flon); numpy or torch
    f = (factor,) * 3 if isinstance(factor, int) else tuple(factor)
    if len(f) != 3 or min(f) < 1 or x.ndim < 3:
        raise ValueError(f"coarsen needs (..., R, LAT, LON) and 3 factors >= 1, got {f}")
    *lead, r, la, lo = x.shape
    if r % f[0] or la % f[1] or lo % f[2]:
        raise ValueError(f"shape (r, lat, lon) = {(r, la, lo)} not divisible by factors {f}")
    y = x.reshape(*lead, r // f[0], f[0], la // f[1], f[1], lo // f[2], f[2])
    return y.mean(axis=(-5, -3, -1)) if isinstance(x, np.ndarray) else y.mean(dim=(-5, -3, -1))


def _check_crop(crop: tuple[int, ...], factor: int, size: Sequence[int]) -> None:
    for name, c, n in zip(("r", "lat", "lon"), crop, size, strict=True):
        if c % factor:
            raise ValueError(f"crop {name}={c} is not divisible by the coarsening factor {factor}")
        if not 1 <= c <= n:
            raise ValueError(f"crop {name}={c} does not fit the data's {name} size {n}")


class CropDataset(torch.utils.data.Dataset):
    """3D crops of scaled truth (T, V, R, LAT, LON) with their coarsened input; lon is periodic.

    Item i is a pure function of (seed, i): a time index, a window start in r and lat, and a
    longitude start anywhere (roll=True, the window may wrap past 360) or without wrapping.
    """

    def __init__(
        self,
        fields: np.ndarray,
        crop: Sequence[int],
        factor: int,
        *,
        roll: bool = True,
        seed: int = 0,
        length: int = 10_000,
    ) -> None:
        if fields.ndim != 5:
            raise ValueError(f"fields must be (T, V, R, LAT, LON), got shape {fields.shape}")
        crop = tuple(int(c) for c in crop)
        if len(crop) != 3:
            raise ValueError(f"crop must be (r, lat, lon), got {crop}")
        size = fields.shape[2:]
        _check_crop(crop, factor, size)
        self.fields = np.ascontiguousarray(fields, dtype=np.float32)
        self.shape = self.fields.shape
        self.crop, self.factor, self.roll, self.seed, self.length = crop, factor, roll, seed, length

    def __len__(self) -> int:
        return self.length

    def _window(self, rng: np.random.Generator) -> tuple[int, int, int, int]:
        n_t, _, n_r, n_lat, n_lon = self.shape
        cr, clat, clon = self.crop
        lon_hi = n_lon if self.roll else n_lon - clon + 1
        return (
            int(rng.integers(n_t)),
            int(rng.integers(n_r - cr + 1)),
            int(rng.integers(n_lat - clat + 1)),
            int(rng.integers(lon_hi)),
        )

    def cut(self, t: int, r0: int, lat0: int, lon0: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(lowres input (V, cr/f, clat/f, clon/f), truth (V, cr, clat, clon)) at a window."""
        cr, clat, clon = self.crop
        lon = (lon0 + np.arange(clon)) % self.fields.shape[-1]
        truth = self.fields[t, :, r0 : r0 + cr, lat0 : lat0 + clat][..., lon]
        truth = torch.from_numpy(np.ascontiguousarray(truth))
        return coarsen(truth, self.factor), truth

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.cut(*self._window(np.random.default_rng([self.seed, 0, int(i)])))

    def probe_samples(
        self, n: int, seed: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor, list[tuple[int, int, int, int]]]:
        """Fixed samples, the same on every call: (inputs (n, ...), truths (n, ...), windows)."""
        rng = np.random.default_rng([seed, 1])
        windows = [self._window(rng) for _ in range(n)]
        pairs = [self.cut(*w) for w in windows]
        return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs]), windows


class LazyCropDataset(CropDataset):
    """The crops of CropDataset, read from the files one window at a time: memory flat in files.

    The same (seed, i) gives the same window and, bit for bit, the same crop as CropDataset on
    ``scaler.transform(load_fields(...))``. Each process (DataLoader worker) opens its own
    read-only handles, at most ``max_open`` files at once.
    """

    def __init__(
        self,
        paths: Sequence[str | os.PathLike],
        variables: Sequence[str],
        n_r: int,
        drop_r: Sequence[int],
        scaler: Scaler,
        crop: Sequence[int],
        factor: int,
        *,
        n_lat: int,
        n_lon: int,
        roll: bool = True,
        seed: int = 0,
        length: int = 10_000,
        max_open: int = 64,
    ) -> None:
        crop = tuple(int(c) for c in crop)
        if len(crop) != 3:
            raise ValueError(f"crop must be (r, lat, lon), got {crop}")
        self.paths = [str(p) for p in paths]
        self.variables = list(variables)
        self.r_index = np.delete(np.arange(n_r), list(drop_r))  # kept layers, file indices
        self.shape = (len(self.paths), len(self.variables), len(self.r_index), n_lat, n_lon)
        _check_crop(crop, factor, self.shape[2:])
        self.scaler, self.max_open = scaler, max_open
        self.crop, self.factor, self.roll, self.seed, self.length = crop, factor, roll, seed, length
        self._open: dict = {}  # path -> netCDF4.Dataset, for the process in self._pid
        self._pid = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_open": {}, "_pid": None}  # handles never cross processes

    def _dataset(self, path: str):
        import netCDF4

        if self._pid != os.getpid():
            self._open, self._pid = {}, os.getpid()
        ds = self._open.pop(path, None)
        if ds is None:
            if len(self._open) >= self.max_open:
                self._open.pop(next(iter(self._open))).close()  # least recently used
            ds = netCDF4.Dataset(path, "r")
            ds.set_auto_maskandscale(False)  # float32 as stored; the checks saw every value
        self._open[path] = ds
        return ds

    def read(self, t: int, r0: int, lat0: int, lon0: int) -> np.ndarray:
        """Unscaled window (V, cr, clat, clon) of file t at kept layers r0.., lat0.., lon0..."""
        cr, clat, clon = self.crop
        n_lon = self.shape[-1]
        ridx = self.r_index[r0 : r0 + cr]
        lo_r = int(ridx[0])
        sel_r = ridx - lo_r
        ds = self._dataset(self.paths[t])
        lon_parts = [(lon0, min(lon0 + clon, n_lon))]
        if lon0 + clon > n_lon:  # wraps past 360
            lon_parts.append((0, lon0 + clon - n_lon))
        out = np.empty((len(self.variables), cr, clat, clon), np.float32)
        for k, v in enumerate(self.variables):
            var = ds.variables[v]
            a = np.concatenate(
                [var[lat0 : lat0 + clat, lo_r : int(ridx[-1]) + 1, a:b] for a, b in lon_parts],
                axis=-1,
            )  # (clat, span_r, clon)
            out[k] = a[:, sel_r].transpose(1, 0, 2)
        return out

    def cut(self, t: int, r0: int, lat0: int, lon0: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(lowres input (V, cr/f, clat/f, clon/f), truth (V, cr, clat, clon)) at a window."""
        truth = torch.from_numpy(
            np.ascontiguousarray(self.scaler.transform(self.read(t, r0, lat0, lon0)))
        )
        return coarsen(truth, self.factor), truth


def dataset_bytes(n_files: int, n_var: int, shape: Sequence[int]) -> int:
    """Bytes of float32 fields (n_files, n_var, *shape) held in memory by CropDataset."""
    return 4 * n_files * n_var * int(np.prod(shape))
