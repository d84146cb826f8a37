"""3D super-resolution conditional GAN: a map2map-style generator and a residual critic.

Written from the published description (Li et al. 2021, map2map's srsgan; EarthGAN), not from
their code. Differences: convolutions keep their size ("same" padding) so crop sizes need no
bookkeeping, and the upsampling factor is any power of two.

Shapes: input ``x`` is the coarse field (B, V, d, h, w); the generator returns the fine field
(B, V, d*f, h*f, w*f). The critic scores ``cat([fine, upsample(x)])`` with a score field that is
averaged to one score per sample.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _act(kind: str) -> nn.Module:
    if kind == "lrelu":
        return nn.LeakyReLU(0.2)
    if kind == "relu":
        return nn.ReLU()
    raise ValueError(f"model.act must be 'lrelu' or 'relu', got {kind!r}")


def upsample(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Trilinear upsampling of (B, C, D, H, W) by an integer factor."""
    if x.dim() != 5:
        raise ValueError(f"expected (B, C, D, H, W), got shape {tuple(x.shape)}")
    if factor == 1:
        return x
    return F.interpolate(x, scale_factor=factor, mode="trilinear", align_corners=False)


class AddNoise(nn.Module):
    """Per-layer noise injection: one channel of N(0, 1) noise per sample.

    ``add``: added to every channel with a learned per-channel scale (initialised to 0, so the
    network starts deterministic and learns how much noise to use); ``cat``: appended as one
    extra channel; ``none``: identity (used to remove the noise on purpose).
    """

    def __init__(self, channels: int, mode: str = "add") -> None:
        super().__init__()
        if mode not in ("add", "cat", "none"):
            raise ValueError(f"model.g.noise must be add, cat or none, got {mode!r}")
        self.mode = mode
        self.scale = nn.Parameter(torch.zeros(channels)) if mode == "add" else None

    def extra_channels(self) -> int:
        return 1 if self.mode == "cat" else 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, C, D, H, W)
        if self.mode == "none":
            return x
        noise = torch.randn_like(x[:, :1])
        if self.mode == "cat":
            return torch.cat([x, noise], dim=1)
        return x + self.scale.view(1, -1, 1, 1, 1) * noise


class UpBlock(nn.Module):
    """noise -> x2 trilinear -> conv -> act -> noise -> conv -> act."""

    def __init__(self, cin: int, cout: int, noise: str, act: str) -> None:
        super().__init__()
        self.noise1 = AddNoise(cin, noise)
        self.conv1 = nn.Conv3d(cin + self.noise1.extra_channels(), cout, 3, padding=1)
        self.act1 = _act(act)
        self.noise2 = AddNoise(cout, noise)
        self.conv2 = nn.Conv3d(cout + self.noise2.extra_channels(), cout, 3, padding=1)
        self.act2 = _act(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = upsample(self.noise1(x), 2)
        x = self.act1(self.conv1(x))
        return self.act2(self.conv2(self.noise2(x)))


def _chan(i: int, base: int, cmin: int, cmax: int) -> int:
    """Channels at level i: halve from ``base`` per level, clamped to [cmin, cmax]."""
    return max(cmin, min(cmax, base >> i))


class Generator(nn.Module):
    """Upsampling 3D conv blocks with noise injection plus a trilinear skip of the input.

    Args:
        n_var: channels of input and output (the physical variables).
        factor: upsampling factor, a power of two.
        noise: ``add`` | ``cat`` | ``none``.
    """

    def __init__(
        self,
        n_var: int,
        factor: int,
        *,
        chan_base: int = 64,
        chan_min: int = 16,
        chan_max: int = 64,
        noise: str = "add",
        act: str = "lrelu",
    ) -> None:
        super().__init__()
        n_up = int(round(math.log2(factor)))
        if factor < 1 or 2**n_up != factor:
            raise ValueError(f"data.factor must be a power of two, got {factor}")
        self.factor = factor
        c0 = _chan(0, chan_base, chan_min, chan_max)
        self.block0 = nn.Sequential(nn.Conv3d(n_var, c0, 1), _act(act))
        blocks, cin = [], c0
        for i in range(n_up):
            cout = _chan(i + 1, chan_base, chan_min, chan_max)
            blocks.append(UpBlock(cin, cout, noise, act))
            cin = cout
        self.blocks = nn.ModuleList(blocks)
        self.proj = nn.Conv3d(cin, n_var, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, V, d, h, w) -> (B, V, d*f, h*f, w*f)
        if x.dim() != 5:
            raise ValueError(f"Generator expects (B, V, d, h, w), got {tuple(x.shape)}")
        y = self.block0(x)
        for block in self.blocks:
            y = block(y)
        return upsample(x, self.factor) + self.proj(y)


class ResBlock(nn.Module):
    """Two 3x3x3 convs with a 1x1 skip, then x0.5 average-pool downsampling."""

    def __init__(self, cin: int, cout: int, act: str, down: bool) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(cin, cout, 3, padding=1)
        self.act1 = _act(act)
        self.conv2 = nn.Conv3d(cout, cout, 3, padding=1)
        self.act2 = _act(act)
        self.skip = nn.Conv3d(cin, cout, 1)
        self.down = down

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act2(self.conv2(self.act1(self.conv1(x))))
        y = y + self.skip(x)
        return F.avg_pool3d(y, 2) if self.down and min(y.shape[2:]) >= 2 else y


class Critic(nn.Module):
    """Residual critic on ``cat([fine, upsampled coarse])`` ending in an averaged score field."""

    def __init__(
        self,
        n_var: int,
        *,
        chan_base: int = 64,
        chan_min: int = 16,
        chan_max: int = 64,
        n_blocks: int = 3,
        act: str = "lrelu",
    ) -> None:
        super().__init__()
        c = _chan(n_blocks, chan_base, chan_min, chan_max)
        self.block0 = nn.Sequential(nn.Conv3d(2 * n_var, c, 1), _act(act))
        blocks, cin = [], c
        for i in range(n_blocks):
            cout = _chan(n_blocks - 1 - i, chan_base, chan_min, chan_max)
            blocks.append(ResBlock(cin, cout, act, down=True))
            cin = cout
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Sequential(nn.Conv3d(cin, cin, 1), _act(act))
        self.score = nn.Conv3d(cin, 1, 1)

    def features(self, fine: torch.Tensor, coarse_up: torch.Tensor) -> torch.Tensor:
        """Penultimate feature field (B, C, d', h', w')."""
        if fine.shape != coarse_up.shape:
            raise ValueError(
                f"critic inputs differ: {tuple(fine.shape)} vs {tuple(coarse_up.shape)}"
            )
        y = self.block0(torch.cat([fine, coarse_up], dim=1))
        for block in self.blocks:
            y = block(y)
        return self.head(y)

    def forward(self, fine: torch.Tensor, coarse_up: torch.Tensor) -> torch.Tensor:
        # (B, V, D, H, W) x2 -> (B,) mean of the score field
        return self.score(self.features(fine, coarse_up)).flatten(1).mean(1)


def init_weights(module: nn.Module, std: float | None = 0.02, bias: float | None = 0.0) -> None:
    """N(0, std) conv weights (None keeps PyTorch's default) and constant biases (None keeps
    the default; a large negative bias kills ReLUs, used on purpose by the health benchmark)."""
    for m in module.modules():
        if isinstance(m, nn.Conv3d):
            if std is not None:
                nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None and bias is not None:
                nn.init.constant_(m.bias, bias)


@torch.no_grad()
def ema_update(ema: nn.Module | None, model: nn.Module, decay: float) -> None:
    """``ema <- decay * ema + (1 - decay) * model`` for parameters; buffers are copied. No-op on None."""
    if ema is None:
        return
    for pe, pm in zip(ema.parameters(), model.parameters(), strict=True):
        pe.lerp_(pm.detach(), 1.0 - decay)
    for be, bm in zip(ema.buffers(), model.buffers(), strict=True):
        be.copy_(bm)
