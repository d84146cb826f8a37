"""The TensorBoard tag vocabulary: every tag the library and the training scripts write.

Tags are ``kind/model[/where]`` (STYLE.md). Code builds them here, never as bare strings, and
``tests/test_tags.py`` holds README.md, ``conf/health/*.yaml`` and the notebooks to the tags
that real short runs of both scripts write: a tag named there that no run writes fails it.
"""

from __future__ import annotations

# ---------------------------------------------------------------------------------- losses
LOSS_D = "loss/D"  # critic loss incl. the gradient penalty (the last critic step of a step)
LOSS_GP = "loss/gp"  # gradient penalty
LOSS_G = "loss/G"  # generator's adversarial loss
LOSS_G_MSE = "loss/G_mse"  # generator MSE during pretraining
LOSS_G_CONTENT = "loss/G_content"  # content loss added to the adversarial loss
LOSS_MSE = "loss/mse"  # MSE of the generated batch against its truth (monitoring only)
LOSS_AE_TRAIN = "loss/AE/train"
LOSS_AE_VAL = "loss/AE/val"

# ------------------------------------------------------------------------------------ run
STEPS_PER_S = "perf/steps_per_s"
RUN_STATUS = "run/status"  # text
DIAGNOSTICS_COST = "diagnostics/cost"  # text
HEALTH_ALERTS = "health/alerts"  # text
HEALTH_VERDICT = "health/verdict"  # text
FRAME_AE = "frames/AE/summary"  # image
SKILL_FIGURE = "skill/figure"  # image
VALUES_FIGURE = "values/figure"  # image

GAN = "gan"  # prefix of GanBalance's tags


def gan(key: str, prefix: str = GAN) -> str:
    """``gan/<key>``: score_real, score_fake, gap, real_positive, r_t, separation, diversity,
    grad_norm/<model>."""
    return f"{prefix}/{key}"


def health(check: str) -> str:
    """``health/<check>``: 1 while the check's alert is active."""
    return f"health/{check}"


# ------------------------------------------------------------------ per model, layer, param
def act(model: str, layer: str, what: str = "") -> str:
    """``act/<model>/<layer>[/<what>]``: hist, mean, std, dead, nan_count, inf_count, colorful."""
    return f"act/{model}/{layer}" + (f"/{what}" if what else "")


def weights(model: str, param: str, what: str = "") -> str:
    """``weights/<model>/<param>[/<what>]``: hist, norm."""
    return f"weights/{model}/{param}" + (f"/{what}" if what else "")


def grad(model: str, param: str = "", what: str = "") -> str:
    """``grad/<model>[/<param>]/<what>``: per parameter hist, norm; per model norm, nan_count,
    inf_count."""
    return "/".join(p for p in ("grad", model, param, what) if p)


def weights_img(model_layer: str, delta: bool = False) -> str:
    """``weights_img[_delta]/<model>/<layer>``: a layer's kernels (or their change)."""
    return f"weights_img{'_delta' if delta else ''}/{model_layer}"


def slices(model: str, i: int) -> str:
    """``slices/<model>/probe<i>``: the slice panel of fixed probe sample ``i``."""
    return f"slices/{model}/probe{i}"


def embed(model: str) -> str:
    """``embed/<model>`` (``/dendrogram``, ``/scatter``, the projector)."""
    return f"embed/{model}"


def values(var: str, what: str = "w1", prefix: str = "values") -> str:
    """``values/<var>/w1``, or ``values/<truth|generated>/<var>`` histograms via ``what``."""
    return f"{prefix}/{var}/{what}" if what == "w1" else f"{prefix}/{what}/{var}"


def spectrum(prefix: str, var: str, band: str) -> str:
    """``<prefix>/<var>/ratio_<band>`` (prefix ``spectrum`` or ``spectrum2d``)."""
    return f"{prefix}/{var}/ratio_{band}"


def spectrum_image(prefix: str, spatial_dims: int) -> str:
    """``spectrum/3d`` or ``spectrum2d/2d``."""
    return f"{prefix}/{spatial_dims}d"
