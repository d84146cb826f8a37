"""How TensorBoard lays out a run: the Custom Scalars dashboard and the HParams metrics.

The Scalars tab sorts tags alphabetically, so a hundred ``act/...`` charts come before the
losses. :func:`scalar_layout` puts what people ask first on the Custom Scalars tab: losses, then
(GAN) the balance of generator and critic and the skill against trilinear upsampling, health, and
then activation, weight and gradient statistics grouped per model, one chart holding every layer.
Tags are regular expressions (TensorBoard matches them against the run's tags), so a layout
written at the start names tags that appear later. NaN/Inf counts are written only once non-zero
(:mod:`diagnostics.core`), so their chart stays empty in a healthy run.
"""

from __future__ import annotations

from collections.abc import Sequence

# the HParams tab shows each run's last value of these tags
GAN_METRICS = ["loss/D", "loss/G", "loss/mse", "gan/gap", "skill/mse_ratio"]
AE_METRICS = ["loss/AE/train", "loss/AE/val"]


def scalar_layout(models: Sequence[str], *, gan: bool = False) -> dict[str, dict[str, list]]:
    """``{category: {chart: ["Multiline", [tag regex, ...]]}}`` for :meth:`Writer.custom_scalars`."""
    layout: dict[str, dict[str, list]] = {}
    if gan:
        layout["1 losses"] = {
            "critic loss (Wasserstein estimate + penalty)": [
                "Multiline",
                [r"loss/D$", r"loss/gp$"],
            ],
            "generator loss": ["Multiline", [r"loss/G$"]],
            "content loss (MSE vs truth)": ["Multiline", [r"loss/mse$"]],
        }
        layout["2 GAN balance"] = {
            "critic scores real vs fake (gap = real - fake)": [
                "Multiline",
                [r"gan/score_real$", r"gan/score_fake$", r"gan/gap$"],
            ],
            "gradient norms G and D": ["Multiline", [r"gan/grad_norm/.*"]],
            "critic sign accuracy": ["Multiline", [r"gan/real_positive$", r"gan/r_t$"]],
            "separation and diversity": ["Multiline", [r"gan/separation$", r"gan/diversity$"]],
        }
        layout["3 skill vs trilinear"] = {
            "MSE ratio to trilinear (< 1 beats the baseline)": [
                "Multiline",
                [r"skill/.*mse_ratio$"],
            ],
            "W1 distance: model vs trilinear": ["Multiline", [r"skill/.*/w1.*"]],
            "high-k spectrum: model vs trilinear": ["Multiline", [r"skill/.*/spectrum_high.*"]],
        }
    else:
        layout["1 losses"] = {"losses": ["Multiline", [r"loss/.*"]]}
    layout["4 health"] = {"health checks (1 = alert)": ["Multiline", [r"health/.*"]]}
    for m in models:
        layout[f"5 activations {m}"] = {
            f"{m} mean per layer": ["Multiline", [rf"act/{m}/.*/mean$"]],
            f"{m} std per layer": ["Multiline", [rf"act/{m}/.*/std$"]],
            f"{m} dead fraction per layer": ["Multiline", [rf"act/{m}/.*/dead$"]],
        }
        layout[f"6 weights and gradients {m}"] = {
            f"{m} weight norms": ["Multiline", [rf"weights/{m}/.*/norm$"]],
            f"{m} gradient norms": ["Multiline", [rf"grad/{m}/.*norm$"]],
        }
    layout["7 NaN and Inf counts (written once non-zero)"] = {
        "activations": ["Multiline", [r"act/.*/(nan|inf)_count$"]],
        "gradients": ["Multiline", [r"grad/.*/(nan|inf)_count$"]],
    }
    return layout


def flat_hparams(cfg, *, drop: Sequence[str] = ("hydra",)) -> dict[str, object]:
    """A nested config (mapping or OmegaConf) as ``{"train.lr_g": 1e-3, ...}`` for HParams;
    lists become their str, None the string "None"."""
    try:
        from omegaconf import OmegaConf

        if OmegaConf.is_config(cfg):
            cfg = OmegaConf.to_container(cfg, resolve=True)
    except ImportError:  # plain mappings need no omegaconf
        pass
    out: dict[str, object] = {}

    def walk(prefix: str, node) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if not prefix and k in drop:
                    continue
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        elif isinstance(node, bool | int | float | str):
            out[prefix] = node
        else:
            out[prefix] = str(node)

    walk("", cfg)
    return out
