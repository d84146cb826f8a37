"""WGAN-GP losses (Gulrajani et al. 2017) for the conditional 3D GAN."""

from __future__ import annotations

import torch


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


def content_loss(pred: torch.Tensor, truth: torch.Tensor, kind: str = "mse") -> torch.Tensor:
    """Pixel-wise content loss added to the adversarial term (``train.content_weight``).

    The physical-field SR-GANs pair the adversarial loss with a content loss so the generator
    stays close to the truth while the critic adds small-scale power (Stengel et al. 2020, PNAS;
    Leinonen et al. 2020, IEEE TGRS).
    """
    # (B, V, D, H, W)
    if pred.shape != truth.shape:
        raise ValueError(f"pred and truth differ: {tuple(pred.shape)} vs {tuple(truth.shape)}")
    if kind == "mse":
        return torch.nn.functional.mse_loss(pred, truth)
    if kind == "l1":
        return torch.nn.functional.l1_loss(pred, truth)
    raise ValueError(f"content loss must be 'mse' or 'l1', got {kind!r}")
