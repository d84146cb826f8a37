"""Reader-side plausibility checks of mantle files, per file, variable and radial layer.

One streaming pass (one file in memory at a time) computes, for every file, variable and radial
layer of the file's own grid: the number of non-finite values, min, max and the 1st and 99th
percentiles. From those, before any training:

- **non-finite**: NaN or Inf anywhere in the layer;
- **constant**: every lat/lon point holds the same value. A field is uniform only on a wall where a
  boundary condition fixes it (an isothermal surface, ``vz = 0`` at an impermeable wall), so a
  constant layer is flagged when it is interior, when *every* checked variable is constant there
  (no physical state is), or when the value is outside the variable's physical bounds (0 K);
- **bounds**: values outside the physical bounds declared per variable (``BOUNDS``, overridable);
- **outlier**: values more than ``OUTLIER_SPANS`` times the robust span (1st-99th percentile) of
  the neighbouring layers (``N_NEIGHBOURS`` each side, themselves not flagged) beyond that range:
  the 1e20..1e30 garbage of the contest files' outermost radius.

The same pass gives the min/max scaling statistics of the training files (layers in ``drop_r``
left out), so the fields never have to be in memory together.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xarray as xr

from diagnostics import tags
from experiments.data.errors import DataError

log = logging.getLogger(__name__)

# Physical bounds per variable (SciVis 2021 units). Mantle temperatures lie between the ~300 K
# surface and the ~4000 K core-mantle boundary; 10 000 K is above the Earth's core. Plate speeds
# are ~1e-9 m/s: 1 m/s is nine orders above anything in a mantle.
BOUNDS: dict[str, tuple[float, float]] = {
    "temperature": (1.0, 1.0e4),
    "vx": (-1.0, 1.0),
    "vy": (-1.0, 1.0),
    "vz": (-1.0, 1.0),
}
N_NEIGHBOURS = 3
OUTLIER_SPANS = 10.0
QUANTILES = (1.0, 99.0)
MODES = ("strict", "warn", "off")


@dataclass
class FileStats:
    """Per-layer statistics of one file, each (V, R) over the file's own radial layers."""

    path: str
    n_bad: np.ndarray  # non-finite values
    vmin: np.ndarray  # over the finite values (NaN where none)
    vmax: np.ndarray
    qlo: np.ndarray
    qhi: np.ndarray


def file_stats(path: str | os.PathLike, variables: Sequence[str]) -> FileStats:
    """Read one file (lat, r, lon) variable by variable and reduce every radial layer."""
    out = {k: [] for k in ("n_bad", "vmin", "vmax", "qlo", "qhi")}
    with xr.open_dataset(path, cache=False) as ds:
        for v in variables:
            a = np.asarray(ds[v].values)  # (lat, r, lon)
            a = np.moveaxis(a, 1, 0).reshape(a.shape[1], -1)  # (R, lat * lon)
            finite = np.isfinite(a)
            n_bad = (~finite).sum(axis=1)
            if n_bad.any():
                a = np.where(finite, a, np.nan)
                with warnings.catch_warnings():  # an all-NaN layer warns; it is reported below
                    warnings.simplefilter("ignore", RuntimeWarning)
                    lo, hi = np.nanmin(a, axis=1), np.nanmax(a, axis=1)
                    q = np.nanpercentile(a, QUANTILES, axis=1)
            else:
                lo, hi = a.min(axis=1), a.max(axis=1)
                q = np.percentile(a, QUANTILES, axis=1)
            for k, x in zip(out, (n_bad, lo, hi, q[0], q[1]), strict=True):
                out[k].append(x)
    return FileStats(str(path), **{k: np.stack(x).astype(np.float64) for k, x in out.items()})


def scan(
    paths: Sequence[str | os.PathLike], variables: Sequence[str], n_workers: int = 0
) -> list[FileStats]:
    """file_stats of every path, in order; n_workers > 0 reads files in parallel processes."""
    if n_workers > 0 and len(paths) > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        ctx = multiprocessing.get_context("spawn")  # no HDF5 or torch state carried over a fork
        with ProcessPoolExecutor(min(n_workers, len(paths)), mp_context=ctx) as ex:
            return list(ex.map(file_stats, paths, [list(variables)] * len(paths)))
    return [file_stats(p, variables) for p in paths]


def check_drop_r(drop_r: Sequence[int], n_r: int, where: str) -> list[int]:
    """drop_r as sorted non-negative indices; an index outside the n_r layers is a DataError."""
    bad = [int(i) for i in drop_r if not -n_r <= int(i) < n_r]
    if bad:
        raise DataError(
            f"data.drop_r={list(drop_r)}: index(es) {bad} outside the {n_r} radial layers of "
            f"{where} (expected indices 0..{n_r - 1}, or -{n_r}..-1 from the outermost)"
        )
    out = sorted({int(i) % n_r for i in drop_r})
    if len(out) == n_r:
        raise DataError(f"data.drop_r={list(drop_r)} drops all {n_r} radial layers of {where}")
    return out


@dataclass(frozen=True)
class Problem:
    """One bad (file, variable, layer)."""

    path: str
    variable: str
    layer: int
    kind: str  # non-finite | constant | bounds | outlier
    detail: str


def find_problems(
    stats: Sequence[FileStats],
    variables: Sequence[str],
    drop_r: Sequence[int] = (),
    bounds: Mapping[str, Sequence[float]] | None = None,
) -> list[Problem]:
    """Every implausible (file, variable, layer) outside drop_r, in file, variable, layer order."""
    bounds = {**BOUNDS, **(bounds or {})}
    out: list[Problem] = []
    for st in stats:
        n_v, n_r = st.vmin.shape
        keep = np.ones(n_r, bool)
        keep[list(drop_r)] = False
        flagged = np.zeros((n_v, n_r), bool)
        constant = (st.n_bad == 0) & (st.vmin == st.vmax)
        all_constant = constant.all(axis=0)
        found: list[Problem] = []
        for v, name in enumerate(variables):
            lo_b, hi_b = bounds.get(name, (-np.inf, np.inf))
            for i in np.flatnonzero(keep):
                why = []
                if st.n_bad[v, i]:
                    why.append(("non-finite", f"{int(st.n_bad[v, i])} NaN/Inf values"))
                if np.isfinite(st.vmin[v, i]) and (st.vmin[v, i] < lo_b or st.vmax[v, i] > hi_b):
                    why.append(
                        (
                            "bounds",
                            f"values in [{st.vmin[v, i]:.4g}, {st.vmax[v, i]:.4g}] outside the "
                            f"physical bounds [{lo_b:g}, {hi_b:g}]",
                        )
                    )
                wall = i in (0, n_r - 1)
                if constant[v, i] and (not wall or all_constant[i] or why):
                    if why:  # out of bounds: one entry that says both
                        where = f"outside the physical bounds [{lo_b:g}, {hi_b:g}]"
                        why = []
                    elif wall:
                        where = "every variable is constant in this layer"
                    else:
                        where = "an interior layer"
                    why.append(("constant", f"constant {st.vmin[v, i]:.6g}, {where}"))
                for kind, detail in why:
                    found.append(Problem(st.path, name, int(i), kind, detail))
                flagged[v, i] = bool(why)
        # Outliers against neighbours that are themselves plausible and kept.
        usable = keep[None, :] & ~flagged & ~constant
        for v, name in enumerate(variables):
            span_all = np.median((st.qhi[v] - st.qlo[v])[usable[v]]) if usable[v].any() else 0.0
            for i in np.flatnonzero(keep & ~flagged[v]):
                nb = [
                    j
                    for j in range(i - N_NEIGHBOURS, i + N_NEIGHBOURS + 1)
                    if j != i and 0 <= j < n_r and usable[v, j]
                ]
                if not nb:
                    continue
                ref_lo, ref_hi = np.median(st.qlo[v, nb]), np.median(st.qhi[v, nb])
                span = max(ref_hi - ref_lo, 1e-3 * span_all, 1e-6 * max(abs(ref_lo), abs(ref_hi)))
                if span <= 0:
                    continue
                lo, hi = ref_lo - OUTLIER_SPANS * span, ref_hi + OUTLIER_SPANS * span
                if st.vmin[v, i] < lo or st.vmax[v, i] > hi:
                    found.append(
                        Problem(
                            st.path,
                            name,
                            int(i),
                            "outlier",
                            f"values in [{st.vmin[v, i]:.4g}, {st.vmax[v, i]:.4g}], the "
                            f"neighbouring layers r[{min(nb)}..{max(nb)}] span "
                            f"[{ref_lo:.4g}, {ref_hi:.4g}] (1st-99th percentile)",
                        )
                    )
        found.sort(key=lambda p: (variables.index(p.variable), p.layer))
        out += found
    return out


def _ranges(names: list[str]) -> str:
    """spherical001.nc, spherical002.nc, spherical003.nc -> spherical001.nc..spherical003.nc."""
    import re

    def num(n):
        m = re.fullmatch(r"spherical(\d+)\.nc", n)
        return int(m.group(1)) if m else None

    parts, run = [], []
    for n in names:
        if run and num(n) is not None and num(run[-1]) is not None and num(n) == num(run[-1]) + 1:
            run.append(n)
            continue
        if run:
            parts.append(run)
        run = [n]
    if run:
        parts.append(run)
    return ", ".join(p[0] if len(p) == 1 else f"{p[0]}..{p[-1]} ({len(p)} files)" for p in parts)


def report(
    problems: Sequence[Problem],
    n_files: int,
    data_dir: str | os.PathLike,
    drop_r: Sequence[int],
    r_km: np.ndarray | None = None,
) -> str:
    """One message: every bad variable/layer with its files, and the drop_r that drops them all."""
    groups: dict[tuple[str, int, str], list[Problem]] = {}
    for p in problems:
        groups.setdefault((p.variable, p.layer, p.kind), []).append(p)
    files = sorted({p.path for p in problems})
    lines = [
        f"implausible data in {len(files)} of {n_files} file(s) in {data_dir} "
        f"({len(problems)} bad file/variable/layer entries):"
    ]
    for (var, layer, kind), ps in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        at = f" (r={r_km[layer]:g} km)" if r_km is not None and layer < len(r_km) else ""
        names = _ranges([Path(p.path).name for p in ps])
        lines.append(f"  {var} r[{layer}]{at}: {kind}, {ps[0].detail}; in {names}")
    layers = sorted({p.layer for p in problems})
    suggest = sorted(set(drop_r) | set(layers))
    lines.append(
        f"drop the bad radial layers with data.drop_r={suggest} (or remove the files from "
        "data.train_steps / data.val_steps); data.check=warn trains anyway"
    )
    return "\n".join(lines)


def check(
    stats: Sequence[FileStats],
    variables: Sequence[str],
    drop_r: Sequence[int],
    data_dir: str | os.PathLike,
    *,
    mode: str = "strict",
    bounds: Mapping[str, Sequence[float]] | None = None,
    r_km: np.ndarray | None = None,
) -> list[Problem]:
    """Apply data.check: strict raises one DataError; warn logs it; off skips the layer checks.

    Non-finite values are an error in every mode: no scaling or loss survives them.
    """
    if mode not in MODES:
        raise DataError(f"data.check must be one of {list(MODES)}, got {mode!r}")
    problems = find_problems(stats, variables, drop_r, bounds)
    if mode == "off":
        problems = [p for p in problems if p.kind == "non-finite"]
    if not problems:
        return []
    msg = report(problems, len(stats), data_dir, drop_r, r_km)
    if mode == "strict" or any(p.kind == "non-finite" for p in problems):
        raise DataError(msg)
    log.warning("data.check=warn: training on implausible data.\n%s", msg)
    return problems


def scaling(stats: Sequence[FileStats], drop_r: Sequence[int]) -> tuple[list[float], list[float]]:
    """Per-variable (min, max) over files and kept layers: what Scaler.fit gives on the fields."""
    keep = np.ones(stats[0].vmin.shape[1], bool)
    keep[list(drop_r)] = False
    vmin = np.min([s.vmin[:, keep].min(axis=1) for s in stats], axis=0)
    vmax = np.max([s.vmax[:, keep].max(axis=1) for s in stats], axis=0)
    return vmin.tolist(), vmax.tolist()


def scaling_scalars(
    stats: Sequence[FileStats],
    variables: Sequence[str],
    drop_r: Sequence[int],
    vmin: Sequence[float],
    vmax: Sequence[float],
) -> dict[str, float]:
    """Per file and variable, how much of the min-max scaling range the bulk of the data uses.

    For the health monitor's ``data`` check (``diagnostics.health.check_data``), one value each at
    step 0, the file's stem and the variable in the tag:

    - ``data/<file>/<var>/span``: median over the kept layers of the 1st-99th percentile span,
      divided by the scaling range ``vmax - vmin``. ~0.1-1 for real fields; ~1e-25 when one layer
      of 1e20..1e30 sets ``vmax`` and squashes every other value into the bottom of [0, 1];
    - ``data/<file>/<var>/range_share``: the file's own min-max range over the scaling range
      (1 for the file that sets the scale);
    - ``data/<file>/<var>/extreme_layer``: the kept layer (index in the file) with the largest
      absolute value.
    """
    keep = np.ones(stats[0].vmin.shape[1], bool)
    keep[list(drop_r)] = False
    idx = np.flatnonzero(keep)
    out: dict[str, float] = {}
    for s in stats:
        stem = Path(s.path).stem
        for i, v in enumerate(variables):
            rng = float(vmax[i]) - float(vmin[i])
            rng = rng if rng > 0 and np.isfinite(rng) else 1.0
            bulk = float(np.nanmedian(s.qhi[i, keep] - s.qlo[i, keep]))
            own = float(np.nanmax(s.vmax[i, keep]) - np.nanmin(s.vmin[i, keep]))
            absmax = np.nanmax(np.abs(np.stack([s.vmin[i, keep], s.vmax[i, keep]])), axis=0)
            out[tags.data(stem, v, "span")] = bulk / rng
            out[tags.data(stem, v, "range_share")] = own / rng
            out[tags.data(stem, v, "extreme_layer")] = float(idx[int(np.nanargmax(absmax))])
    return out
