"""WGAN-GP losses (Gulrajani et al. 2017) for the conditional 3D GAN."""

from __future__ import annotations

import torch

from experiments.models.gan3d import upsample


def gradient_penalty(
    critic, real: torch.Tensor, fake: torch.Tensor, cond: torch.Tensor
) -> torch.Tensor:
    """Mean of (||grad_x C(x_hat, cond)||_2 - 1)^2 on random per-sample interpolates."""
    # (B, V, D, H, W)
    if real.shape != fake.shape:
        raise ValueError(f"real and fake differ: {tuple(real.shape)} vs {tuple(fake.shape)}")
    eps = torch.rand(real.shape[0], 1, 1, 1, 1, device=real.device, dtype=real.dtype)
    x_hat = (eps * real + (1 - eps) * fake.detach()).requires_grad_(True)
    score = critic(x_hat, cond)
    (grad,) = torch.autograd.grad(score.sum(), x_hat, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1.0) ** 2).mean()


def critic_loss(score_real: torch.Tensor, score_fake: torch.Tensor) -> torch.Tensor:
    """-(E[C(real)] - E[C(fake)]): the critic maximises the Wasserstein estimate."""
    return score_fake.mean() - score_real.mean()


def generator_loss(score_fake: torch.Tensor) -> torch.Tensor:
    return -score_fake.mean()


def content_loss(
    pred: torch.Tensor,
    truth: torch.Tensor,
    kind: str = "mse",
    reference: torch.Tensor | None = None,
) -> torch.Tensor:
    """Pixel-wise content loss added to the adversarial term (``train.content_weight``).

    The physical-field SR-GANs pair the adversarial loss with a content loss so the generator
    stays close to the truth while the critic adds small-scale power (Stengel et al. 2020, PNAS;
    Leinonen et al. 2020, IEEE TGRS). With ``reference`` (one positive number per variable, e.g.
    :func:`trilinear_reference`) each variable's loss is divided by its reference before the
    mean over variables, so a variable with little variance weighs as much as the others.
    """
    # (B, V, D, H, W)
    if pred.shape != truth.shape:
        raise ValueError(f"pred and truth differ: {tuple(pred.shape)} vs {tuple(truth.shape)}")
    if kind not in ("mse", "l1"):
        raise ValueError(f"content loss must be 'mse' or 'l1', got {kind!r}")
    if reference is None:
        if kind == "mse":
            return torch.nn.functional.mse_loss(pred, truth)
        return torch.nn.functional.l1_loss(pred, truth)
    err = (pred - truth) ** 2 if kind == "mse" else (pred - truth).abs()
    if reference.shape != (pred.shape[1],):
        raise ValueError(
            f"reference must hold one value per variable ({pred.shape[1]}), "
            f"got shape {tuple(reference.shape)}"
        )
    per_var = err.transpose(0, 1).flatten(1).mean(dim=1)  # (V,)
    return (per_var / reference.to(per_var)).mean()


def trilinear_reference(
    x: torch.Tensor, y: torch.Tensor, factor: int, kind: str = "mse", chunk: int = 64
) -> torch.Tensor:
    """Per-variable content loss of trilinear upsampling on fixed crops: (V,), every entry > 0.

    ``x`` coarse inputs (N, V, d, h, w), ``y`` their truths (N, V, D, H, W). The reference of
    ``train.content_norm=trilinear``: computed once on training crops at the start of a run.
    """
    total = torch.zeros(y.shape[1], dtype=torch.float64)
    for i in range(0, len(x), chunk):
        up = upsample(x[i : i + chunk], factor)
        err = (up - y[i : i + chunk]) ** 2 if kind == "mse" else (up - y[i : i + chunk]).abs()
        total += err.transpose(0, 1).flatten(1).double().sum(dim=1)
    ref = (total / (y.numel() / y.shape[1])).float()
    if not bool(torch.all(ref > 0)):
        raise ValueError(f"trilinear reference must be > 0 for every variable, got {ref.tolist()}")
    return ref
