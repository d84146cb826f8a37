"""Radially averaged power spectra of 2D slices and 3D volumes, on the device.

For super-resolution of physical fields the power at small scales is the honest measure of whether a
generator makes realistic structure (map2map's ``plt_power``); FID means nothing on such fields.

Conventions (tested in ``tests/test_spectra.py``):

- ``P(k)`` is the mean over the modes of a shell of ``|F|^2`` with ``F = fftn(x, norm="ortho")``, i.e.
  variance times cell volume with unit cells: white noise of variance ``s^2`` has ``P(k) = s^2`` in every
  shell. ``sum(P * counts)`` over all shells (k = 0 and the corners beyond Nyquist included) equals
  ``sum(x^2)`` (Parseval).
- The transform is ``rfftn`` over the spatial axes. Its last axis holds only the non-negative half; a
  mode whose conjugate is not stored (0 < j < n/2) counts twice, ``j = 0`` and ``j = n/2`` (even n) once.
  This is the weighting map2map's ``power.py`` gets wrong by squaring ``.pow(2).sum(-1)`` of a complex
  tensor; here ``|F|^2`` is ``real^2 + imag^2`` of ``torch.fft.rfftn``'s complex output.
- Wavenumbers are integers in units of the fundamental of the SHORTEST side (``k_i = fftfreq(n_i) *
  min(n)``), binned to the nearest integer: in a cubic box these are the usual integer shells, in a
  non-cubic crop no shell is empty. ``k = 0`` is dropped and shells above Nyquist (``min(n) // 2``) cut.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from . import tags

SOURCES = ("truth", "generated", "upsampled")
BANDS = ("low", "mid", "high")


@functools.lru_cache(maxsize=16)
def _shells(shape: tuple[int, ...], device: str) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Shell index and half-plane weight of every rfftn mode, and the number of shells."""
    n_ref = min(shape)
    freqs = [torch.fft.fftfreq(n, d=1.0 / n_ref, dtype=torch.float64) for n in shape[:-1]]
    freqs.append(torch.fft.rfftfreq(shape[-1], d=1.0 / n_ref, dtype=torch.float64))
    grids = torch.meshgrid(*freqs, indexing="ij")
    kmag = torch.sqrt(sum(g**2 for g in grids))
    shell = torch.round(kmag).to(torch.int64).reshape(-1)
    n_last = shape[-1]
    j = torch.arange(n_last // 2 + 1)
    # Modes 0 < j < n/2 stand for themselves and their (unstored) conjugates.
    w_last = torch.where((j > 0) & (2 * j < n_last), 2.0, 1.0).to(torch.float64)
    weight = w_last.expand(grids[0].shape).reshape(-1)
    n_shells = int(shell.max()) + 1
    return shell.to(device), weight.to(device), n_shells


def radial_power_spectrum(
    x: torch.Tensor, spatial_dims: int = 3, *, nyquist_cut: bool = True, drop_zero: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Radially averaged power spectrum over the last ``spatial_dims`` axes of ``x``.

    Returns ``(k, power, counts)``: integer wavenumbers (K,), power (..., K) with the leading axes of
    ``x`` kept, and the (half-plane weighted) number of modes per shell (K,). Stays on ``x``'s device.
    """
    # (..., H, W) or (..., D, H, W)
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    if x.ndim < spatial_dims:
        raise ValueError(f"expected at least {spatial_dims} dims, got shape {tuple(x.shape)}")
    shape = tuple(int(s) for s in x.shape[-spatial_dims:])
    if min(shape) < 2:
        raise ValueError(f"spatial sides must be >= 2, got {shape}")
    lead = x.shape[:-spatial_dims]
    dims = tuple(range(-spatial_dims, 0))
    f = torch.fft.rfftn(x if x.dtype == torch.float64 else x.float(), dim=dims, norm="ortho")
    pw = (f.real.square() + f.imag.square()).reshape(-1, f.shape[-spatial_dims:].numel())
    shell, weight, n_shells = _shells(shape, str(x.device))
    sums = torch.zeros(pw.shape[0], n_shells, dtype=torch.float64, device=x.device)
    sums.index_add_(1, shell, pw.to(torch.float64) * weight)
    counts = torch.zeros(n_shells, dtype=torch.float64, device=x.device).index_add_(
        0, shell, weight
    )
    k = torch.arange(n_shells, device=x.device)
    keep = counts > 0
    if drop_zero:
        keep &= k > 0
    if nyquist_cut:
        keep &= k <= min(shape) // 2
    power = (sums[:, keep] / counts[keep]).to(f.real.dtype).reshape(*lead, -1)
    return k[keep], power, counts[keep]


def field_spectra(
    fields: Mapping[str, torch.Tensor], spatial_dims: int = 3
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-variable spectra of several same-shaped fields, averaged over every non-channel axis.

    ``fields`` maps a source name (``truth``, ``generated``, ``upsampled``) to a (B, C, *S) tensor with
    ``len(S) >= spatial_dims``; with ``spatial_dims=2`` on a volume, each 2D slice along the leading
    spatial axes is one more sample. Returns ``k`` (K,) and ``{source: (C, K)}`` on the device.
    """
    out: dict[str, torch.Tensor] = {}
    k = None
    shape = None
    for name, x in fields.items():
        # (B, C, *S)
        if x.ndim < 2 + spatial_dims:
            raise ValueError(
                f"{name}: expected (B, C, *S) with {spatial_dims} spatial dims, got {tuple(x.shape)}"
            )
        if shape is not None and x.shape[1:] != shape:
            raise ValueError(
                f"{name}: shape {tuple(x.shape)} differs from the other fields' {tuple(shape)}"
            )
        shape = x.shape[1:]
        k, p, _ = radial_power_spectrum(x, spatial_dims)
        p = p.movedim(1, 0).reshape(x.shape[1], -1, p.shape[-1]).mean(1)
        out[name] = p
    if k is None:
        raise ValueError("field_spectra needs at least one field")
    return k, out


def ratio_bands(
    power_gen: torch.Tensor, power_truth: torch.Tensor, eps: float = 1e-30
) -> torch.Tensor:
    """Geometric-mean ratio generated/truth over the low, middle and high thirds of the shells: (C, 3)."""
    # (C, K), (C, K)
    if power_gen.shape != power_truth.shape or power_gen.ndim != 2:
        raise ValueError(
            f"expected two (C, K) spectra, got {tuple(power_gen.shape)} and {tuple(power_truth.shape)}"
        )
    n = power_gen.shape[1]
    if n < 3:
        raise ValueError(f"need at least 3 shells for three bands, got {n}")
    # A geometric mean: the spectra fall by decades, an arithmetic one would be the band's first shell.
    logr = torch.log(power_gen.clamp_min(eps)) - torch.log(power_truth.clamp_min(eps))
    cuts = [0, n // 3, (2 * n) // 3, n]
    return torch.stack(
        [logr[:, a:b].mean(1) for a, b in zip(cuts[:-1], cuts[1:], strict=True)], 1
    ).exp()


def spectrum_scalars(
    var_names: Sequence[str], spectra: Mapping[str, torch.Tensor], prefix: str = "spectrum"
) -> dict:
    """``{prefix/<var>/ratio_low|mid|high: tensor}`` from the generated and truth spectra (device tensors)."""
    bands = ratio_bands(spectra["generated"], spectra["truth"])
    if bands.shape[0] != len(var_names):
        raise ValueError(f"{len(var_names)} variable names for {bands.shape[0]} channels")
    return {
        tags.spectrum(prefix, v, b): bands[i, j]
        for i, v in enumerate(var_names)
        for j, b in enumerate(BANDS)
    }


def spectrum_figure(k, spectra: Mapping[str, object], var_names: Sequence[str], *, title: str = ""):
    """Log-log spectra per variable (top row) and the generated/truth ratio (bottom row), a Figure."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter

    k = np.asarray(k.cpu() if isinstance(k, torch.Tensor) else k, dtype=np.float64)
    host = {
        s: np.asarray(p.detach().cpu() if isinstance(p, torch.Tensor) else p, np.float64)
        for s, p in spectra.items()
    }
    nv = len(var_names)
    fig = Figure(figsize=(3.2 * nv, 5.0), dpi=80)
    axes = fig.subplots(2, nv, sharex=True, squeeze=False, gridspec_kw={"height_ratios": [2, 1]})
    styles = {"truth": ("k", "-"), "generated": ("tab:red", "-"), "upsampled": ("tab:blue", "--")}
    for i, v in enumerate(var_names):
        ax, axr = axes[0, i], axes[1, i]
        for s, p in host.items():
            c, ls = styles.get(s, (None, ":"))
            ax.loglog(k, np.clip(p[i], 1e-30, None), color=c, ls=ls, label=s)
        ax.set_title(f"v={v}")
        lo, hi = 0.1, 10.0  # fixed ratio axis: the same deviation looks the same at every step
        if "generated" in host and "truth" in host:
            r = host["generated"][i] / np.clip(host["truth"][i], 1e-30, None)
            axr.semilogx(k, r, color="tab:red")
            finite = r[np.isfinite(r) & (r > 0)]
            if finite.size:
                lo, hi = min(lo, finite.min() / 1.5), max(hi, finite.max() * 1.5)
        axr.axhline(1.0, color="k", lw=0.8)
        axr.set_yscale("log")
        axr.set_ylim(lo, hi)
        axr.set_xlabel("k")
        for a in (ax, axr):
            a.xaxis.set_minor_formatter(NullFormatter())
    axes[0, 0].set_ylabel("P(k)")
    axes[1, 0].set_ylabel("generated / truth")
    axes[0, 0].legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def log_spectra(
    writer,
    step: int,
    var_names: Sequence[str],
    truth: torch.Tensor,
    generated: torch.Tensor,
    upsampled: torch.Tensor | None = None,
    *,
    spatial_dims: int = 3,
    tag: str = "spectrum",
    stream=None,
) -> dict[str, float]:
    """Write the spectrum figure and ratio scalars of fixed probe samples; return the scalars on the host.

    Call at write time only (it copies to the host). Tags: ``<tag>/<var>/ratio_low|mid|high`` and the image
    ``<tag>/<spatial_dims>d``. With ``stream`` (the run's ``Scalars``) the scalars are reported there,
    written with the run's other scalars and seen by health; without it they are written here.
    """
    fields = {"truth": truth, "generated": generated}
    if upsampled is not None:
        fields["upsampled"] = upsampled
    with writer.cost("spectrum"):
        with torch.no_grad():
            k, spectra = field_spectra(fields, spatial_dims)
            scalars = spectrum_scalars(var_names, spectra, prefix=tag)
        host = dict(zip(scalars, torch.stack(list(scalars.values())).cpu().tolist(), strict=True))
        if stream is not None:  # the run's scalar stream (diagnostics.stats.Scalars)
            for t, v in scalars.items():
                stream.report(t, v)
        else:
            writer.scalars(host, step)
        writer.figure(
            tags.spectrum_image(tag, spatial_dims),
            spectrum_figure(k, spectra, var_names, title=f"step {step}"),
            step,
        )
    return host
