"""DCGAN (Radford et al. 2016) as in pytorch/examples ``dcgan/main.py``: a 2D GAN the library never
saw, used by tests and benchmarks as "someone else's model" (the project's GAN is 3D)."""

from __future__ import annotations

from torch import nn


def dcgan(
    nz: int = 100, ngf: int = 64, ndf: int = 64, nc: int = 1, size: int = 64
) -> tuple[nn.Sequential, nn.Sequential]:
    """Generator ``(B, nz, 1, 1) -> (B, nc, size, size)`` in [-1, 1] and discriminator
    ``(B, nc, size, size) -> (B, 1, 1, 1)`` probabilities; size 32 drops one stage of each.
    N(0, 0.02) conv and N(1, 0.02) BatchNorm weights, as the example initialises them."""
    if size not in (32, 64):
        raise ValueError(f"size must be 32 or 64, got {size}")
    mults = [8, 4, 2, 1] if size == 64 else [4, 2, 1]
    g: list[nn.Module] = [nn.ConvTranspose2d(nz, ngf * mults[0], 4, 1, 0, bias=False)]
    for a, b in zip(mults, mults[1:], strict=False):
        g += [nn.BatchNorm2d(ngf * a), nn.ReLU(True)]
        g += [nn.ConvTranspose2d(ngf * a, ngf * b, 4, 2, 1, bias=False)]
    g += [nn.BatchNorm2d(ngf), nn.ReLU(True), nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False)]
    g += [nn.Tanh()]
    rev = mults[::-1]
    d: list[nn.Module] = [nn.Conv2d(nc, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True)]
    for a, b in zip(rev, rev[1:], strict=False):
        d += [nn.Conv2d(ndf * a, ndf * b, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * b)]
        d += [nn.LeakyReLU(0.2, inplace=True)]
    d += [nn.Conv2d(ndf * rev[-1], 1, 4, 1, 0, bias=False), nn.Sigmoid()]
    G, D = nn.Sequential(*g), nn.Sequential(*d)
    for m in (*G.modules(), *D.modules()):
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
    return G, D
