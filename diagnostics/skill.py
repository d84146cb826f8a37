"""Skill of a super-resolution generator against its baselines, on fixed validation crops.

A super-resolution GAN is only worth its cost where it beats trilinear interpolation of the same
input; this module says by how much, per variable, in three measures a researcher judging such a
model expects (Stengel et al. 2020 PNAS; Leinonen et al. 2020 IEEE TGRS):

- ``mse_ratio``: generated MSE / trilinear MSE (below 1 is skill);
- ``spectrum_high``: generated/truth power over the top third of wavenumber shells (the geometric
  mean of ``diagnostics.spectra.ratio_bands``), beside the same for trilinear (which is smooth: < 1);
- ``w1``: Wasserstein-1 distance of the pooled value distribution to the truth's (exact, from sorted
  samples), beside trilinear's.

Everything is reduced on the device; ``skill_scalars`` returns device tensors keyed by the tags
below, and the writer copies them to the host once. Tags (a contract other modules read):

    skill/mse_ratio                      mean over variables
    skill/<var>/mse_ratio
    skill/<var>/spectrum_high            skill/<var>/spectrum_high_trilinear
    skill/<var>/w1                       skill/<var>/w1_trilinear
    skill/mse_ratio_regression, skill/<var>/{mse_ratio,spectrum_high,w1}_regression
                                         (only with a regression, MSE-only, baseline)
    skill/figure                         the comparison figure
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from . import tags
from .spectra import BANDS, field_spectra, ratio_bands

PREFIX = "skill"
MSE_RATIO = f"{PREFIX}/mse_ratio"
FIGURE = tags.SKILL_FIGURE
REGRESSION = "_regression"
TRILINEAR = "_trilinear"


def tag(var: str, what: str, suffix: str = "") -> str:
    """``skill/<var>/<what><suffix>``, e.g. ``skill/vx/spectrum_high_trilinear``."""
    return f"{PREFIX}/{var}/{what}{suffix}"


def mse_per_var(pred: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Mean squared error per channel over every other axis: (C,)."""
    # (B, C, *S)
    if pred.shape != truth.shape or pred.ndim < 3:
        raise ValueError(
            f"expected two same (B, C, *S) fields, got {tuple(pred.shape)}, {tuple(truth.shape)}"
        )
    d = (pred.double() - truth.double()).movedim(1, 0).reshape(pred.shape[1], -1)
    return d.square().mean(1)


def w1_per_var(pred: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Exact 1D Wasserstein-1 distance of each channel's pooled values: (C,).

    Both samples have the same size, so W1 is the mean absolute difference of the sorted values.
    """
    # (B, C, *S)
    if pred.shape != truth.shape or pred.ndim < 3:
        raise ValueError(
            f"expected two same (B, C, *S) fields, got {tuple(pred.shape)}, {tuple(truth.shape)}"
        )
    c = pred.shape[1]
    a = pred.double().movedim(1, 0).reshape(c, -1).sort(1).values
    b = truth.double().movedim(1, 0).reshape(c, -1).sort(1).values
    return (a - b).abs().mean(1)


def skill_stats(
    truth: torch.Tensor,
    generated: torch.Tensor,
    trilinear: torch.Tensor,
    regression: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Per-source measures on the device: ``{"mse"|"w1": {source: (C,)}, "bands": {source: (C, 3)},
    "k": (K,), "spectra": {source: (C, K)}}`` with sources truth (spectra only), generated,
    trilinear and (if given) regression."""
    # (B, C, D, H, W) each
    preds = {"generated": generated, "trilinear": trilinear}
    if regression is not None:
        preds["regression"] = regression
    with torch.no_grad():
        k, spectra = field_spectra({"truth": truth, **preds})
        return {
            "mse": {s: mse_per_var(p, truth) for s, p in preds.items()},
            "w1": {s: w1_per_var(p, truth) for s, p in preds.items()},
            "bands": {s: ratio_bands(spectra[s], spectra["truth"]) for s in preds},
            "k": k,
            "spectra": spectra,
        }


def skill_scalars(var_names: Sequence[str], stats: Mapping) -> dict[str, torch.Tensor]:
    """The ``skill/*`` scalars (device tensors) from ``skill_stats``."""
    mse, w1, bands = stats["mse"], stats["w1"], stats["bands"]
    if mse["generated"].shape[0] != len(var_names):
        raise ValueError(
            f"{len(var_names)} variable names for {mse['generated'].shape[0]} channels"
        )
    hi = BANDS.index("high")
    tri = mse["trilinear"].clamp_min(1e-30)
    out: dict[str, torch.Tensor] = {}
    ratio = mse["generated"] / tri
    out[MSE_RATIO] = ratio.mean()
    for i, v in enumerate(var_names):
        out[tag(v, "mse_ratio")] = ratio[i]
        out[tag(v, "spectrum_high")] = bands["generated"][i, hi]
        out[tag(v, "spectrum_high", TRILINEAR)] = bands["trilinear"][i, hi]
        out[tag(v, "w1")] = w1["generated"][i]
        out[tag(v, "w1", TRILINEAR)] = w1["trilinear"][i]
    if "regression" in mse:
        r = mse["regression"] / tri
        out[MSE_RATIO + REGRESSION] = r.mean()
        for i, v in enumerate(var_names):
            out[tag(v, "mse_ratio", REGRESSION)] = r[i]
            out[tag(v, "spectrum_high", REGRESSION)] = bands["regression"][i, hi]
            out[tag(v, "w1", REGRESSION)] = w1["regression"][i]
    return out


def skill_table(var_names: Sequence[str], stats: Mapping) -> dict:
    """Host dict per source and variable: MSE, spectrum ratio low/mid/high and W1 (for eval.json)."""
    out: dict = {}
    for s in stats["mse"]:
        mse = stats["mse"][s].cpu().tolist()
        w1 = stats["w1"][s].cpu().tolist()
        bands = stats["bands"][s].cpu().tolist()
        out[s] = {
            v: {"mse": mse[i], "w1": w1[i]}
            | {f"spectrum_{b}": bands[i][j] for j, b in enumerate(BANDS)}
            for i, v in enumerate(var_names)
        }
    return out


def summary_dict(step: int, var_names: Sequence[str], host: Mapping[str, float]) -> dict:
    """``{"step", "mse_ratio", "<var>": {measure: value}}`` from host ``skill/*`` scalars."""
    out: dict = {"step": int(step), "mse_ratio": host[MSE_RATIO]}
    if MSE_RATIO + REGRESSION in host:
        out["mse_ratio_regression"] = host[MSE_RATIO + REGRESSION]
    for v in var_names:
        pre = f"{PREFIX}/{v}/"
        out[v] = {k[len(pre) :]: x for k, x in host.items() if k.startswith(pre)}
    return out


def format_table(var_names: Sequence[str], table: Mapping) -> str:
    """A fixed-width text table (rows: source x variable) of ``skill_table``'s output."""
    cols = ["mse", "mse/tri", "spec_low", "spec_mid", "spec_high", "w1"]
    lines = [f"{'source':<11} {'variable':<12} " + " ".join(f"{c:>10}" for c in cols)]
    for s, per in table.items():
        for v in var_names:
            m = per[v]
            tri = table["trilinear"][v]["mse"] if "trilinear" in table else float("nan")
            row = [m["mse"], m["mse"] / max(tri, 1e-30), m["spectrum_low"], m["spectrum_mid"]]
            row += [m["spectrum_high"], m["w1"]]
            lines.append(f"{s:<11} {v:<12} " + " ".join(f"{x:>10.4g}" for x in row))
    return "\n".join(lines)


def skill_figure(var_names: Sequence[str], stats: Mapping, *, title: str = ""):
    """Per variable: spectra ratio to truth of every source (top) and MSE/W1 bars (bottom); a Figure."""
    from matplotlib.figure import Figure

    k = np.asarray(stats["k"].cpu(), dtype=np.float64)
    spectra = {s: np.asarray(p.cpu(), np.float64) for s, p in stats["spectra"].items()}
    sources = list(stats["mse"])
    colors = {"generated": "tab:red", "trilinear": "tab:blue", "regression": "tab:green"}
    nv = len(var_names)
    fig = Figure(figsize=(3.2 * nv, 5.0), dpi=80)
    axes = fig.subplots(2, nv, squeeze=False)
    for i, v in enumerate(var_names):
        ax = axes[0, i]
        truth = np.clip(spectra["truth"][i], 1e-30, None)
        for s in sources:
            ax.semilogx(k, spectra[s][i] / truth, color=colors.get(s), label=s)
        ax.axhline(1.0, color="k", lw=0.8)
        ax.axhspan(0.8, 1.25, color="0.9", zorder=0)
        ax.set_yscale("log")
        ax.set_ylim(0.1, 10.0)  # fixed: the same deviation looks the same at every step
        ax.set_title(f"{v}: P / P_truth")
        ax.set_xlabel("k")
        axb = axes[1, i]
        tri_mse = float(stats["mse"]["trilinear"][i])
        tri_w1 = float(stats["w1"]["trilinear"][i])
        x = np.arange(len(sources))
        mse = [float(stats["mse"][s][i]) / max(tri_mse, 1e-30) for s in sources]
        w1 = [float(stats["w1"][s][i]) / max(tri_w1, 1e-30) for s in sources]
        axb.bar(x - 0.2, mse, 0.4, color=[colors.get(s) for s in sources], label="MSE / trilinear")
        axb.bar(
            x + 0.2,
            w1,
            0.4,
            color=[colors.get(s) for s in sources],
            alpha=0.4,
            label="W1 / trilinear",
        )
        axb.axhline(1.0, color="k", lw=0.8)
        axb.set_xticks(x, [s[:4] for s in sources])
        axb.set_ylim(0, max(2.0, *mse, *w1) * 1.05)
        axb.set_title("MSE (solid), W1 (light) / trilinear", fontsize=8)
    axes[0, 0].legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


@torch.no_grad()
def predict(model, x: torch.Tensor, batch_size: int, device: torch.device) -> torch.Tensor:
    """``model`` on ``x`` in batches on ``device``; the result stays on ``device``."""
    # (N, V, d, h, w)
    return torch.cat(
        [model(x[i : i + batch_size].to(device)) for i in range(0, len(x), batch_size)]
    )


def log_skill(
    writer,
    step: int,
    var_names: Sequence[str],
    truth: torch.Tensor,
    generated: torch.Tensor,
    trilinear: torch.Tensor,
    regression: torch.Tensor | None = None,
    *,
    stream=None,
) -> dict[str, float]:
    """Write the ``skill/*`` scalars and ``skill/figure``; return the scalars on the host (one copy).

    With ``stream`` (the run's ``Scalars``) the scalars are reported there instead of written here.
    """
    with writer.cost("skill"):
        stats = skill_stats(truth, generated, trilinear, regression)
        scalars = skill_scalars(var_names, stats)
        host = dict(
            zip(scalars, torch.stack(list(scalars.values())).double().cpu().tolist(), strict=True)
        )
        if stream is not None:
            for t, v in scalars.items():
                stream.report(t, v)
        else:
            writer.scalars(host, step)
        writer.figure(FIGURE, skill_figure(var_names, stats, title=f"step {step}"), step)
    return host
