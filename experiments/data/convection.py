"""Boussinesq convection at infinite Prandtl number in a box, pseudo-spectral, in torch.

Nondimensional (depth 1, thermal diffusion time, temperature 1 at the bottom z=0, 0 at the top z=1):

    0 = -grad p + lap u + Ra T z_hat,   div u = 0,   dT/dt + u . grad T = lap T

Periodic in x (length lx) and y (length ly); top and bottom are isothermal and free-slip. With
T = 1 - z + theta, theta and w vanish at z = 0, 1 and are sine series in z, u and v cosine series.
Instead of sine/cosine transforms (torch has none) z is doubled to [0, 2) with theta odd, so plain
FFTs apply; the solver state is theta's spectrum on that doubled grid.

Taking curl curl of Stokes removes p: lap^2 w = -Ra lap_h theta, so with k^2 = k_h^2 + k_z^2
    w_hat = Ra k_h^2 theta_hat / k^4,   (u, v)_hat = -Ra (k_x, k_y) k_z theta_hat / k^4
(no vertical vorticity is forced, so u_h is the horizontal gradient that makes div u = 0). The
linear part of the theta equation, -k^2 + Ra k_h^2 / k^4, is diagonal and goes into an integrating
factor; only advection is explicit (SSP-RK3, stable at CFL ~1 where Crank-Nicolson/AB2 was not).
A single mode therefore grows at exactly sigma = Ra k_h^2 / k^4 - k^2 (critical Ra 27 pi^4 / 4).

Two sets of coefficients hold no physical mode yet have huge linear growth rates, so round-off in
them explodes: the k_z = 0 plane (it breaks theta = 0 at the walls; rate Ra / k_h^2) and the
anti-Hermitian part of the k_x = 0 plane (irfftn ignores it until it is ~1e16 larger than the
rest). Every stage therefore re-imposes odd z-parity and Hermitian symmetry.
"""

from __future__ import annotations

import math

import torch

RA_CRITICAL = 27 * math.pi**4 / 4  # free-slip top and bottom, k_h = pi / sqrt(2)


def linear_growth_rate(ra: float, kh: float, n: int = 1) -> float:
    """Growth rate of the mode theta ~ exp(i k_h x) sin(n pi z) from linear theory."""
    k2 = kh**2 + (n * math.pi) ** 2
    return ra * kh**2 / k2**2 - k2


def _neg(a: torch.Tensor, dim: int) -> torch.Tensor:
    """Spectrum at -k along dim (index m -> -m mod n)."""
    return torch.roll(torch.flip(a, [dim]), 1, dim)


class Convection:
    """Infinite-Prandtl convection on an (nz + 1, ny, nx) grid; z includes both walls."""

    def __init__(self, nx: int, ny: int, nz: int, lx: float, ly: float, ra: float) -> None:
        self.nx, self.ny, self.nz, self.lx, self.ly, self.ra = nx, ny, nz, lx, ly, float(ra)
        f64 = torch.float64
        kz = 2 * math.pi * torch.fft.fftfreq(2 * nz, d=1.0 / nz, dtype=f64)  # doubled length 2
        ky = 2 * math.pi * torch.fft.fftfreq(ny, d=ly / ny, dtype=f64)
        kx = 2 * math.pi * torch.fft.rfftfreq(nx, d=lx / nx, dtype=f64)
        # Spectral arrays are (2 nz, ny, nx // 2 + 1).
        self.kz, self.ky, self.kx = kz[:, None, None], ky[None, :, None], kx[None, None, :]
        self.kh2 = self.kx**2 + self.ky**2
        self.k2 = self.kh2 + self.kz**2
        k4 = torch.where(self.k2 > 0, self.k2**2, torch.ones_like(self.k2))
        self.buoy = self.ra / k4  # w_hat = buoy * kh2 * theta_hat
        self.lin = torch.where(self.kz != 0, -self.k2 + self.buoy * self.kh2, 0.0)
        # 2/3-rule dealiasing (Nyquist rows of even sizes go too).
        keep = (
            (self.kz.abs() < (2 / 3) * math.pi * nz)
            & (self.ky.abs() < (2 / 3) * math.pi * ny / ly)
            & (self.kx < (2 / 3) * math.pi * nx / lx)
        )
        self.keep = keep & (self.kz != 0)
        self.theta_hat = torch.zeros(2 * nz, ny, nx // 2 + 1, dtype=torch.complex128)
        self.time = 0.0

    def project(self, a_hat: torch.Tensor) -> torch.Tensor:
        """Re-impose odd z-parity (zeroes k_z = 0), Hermitian symmetry at k_x = 0, dealias."""
        a_hat = 0.5 * (a_hat - _neg(a_hat, 0))
        # irfftn ignores the anti-Hermitian part of the k_x = 0 plane, so round-off there grows
        # unseen at the linear rate (~700 at Ra 3e4) until it leaks into the field and blows up.
        plane = a_hat[:, :, 0]
        a_hat = a_hat.clone()
        a_hat[:, :, 0] = 0.5 * (plane + _neg(_neg(plane, 0), 1).conj())
        return a_hat * self.keep

    def perturb(self, amplitude: float, seed: int) -> None:
        """Add seeded random noise of the given max amplitude to theta (interior only)."""
        g = torch.Generator().manual_seed(seed)
        noise = torch.rand(self.nz - 1, self.ny, self.nx, generator=g, dtype=torch.float64) - 0.5
        full = torch.zeros(2 * self.nz, self.ny, self.nx, dtype=torch.float64)
        full[1 : self.nz] = noise
        full[self.nz + 1 :] = -noise.flip(0)  # odd extension about z = 0 and z = 1
        self.theta_hat = self.project(self.theta_hat + torch.fft.rfftn(2 * amplitude * full))

    def set_mode(self, amplitude: float, mx: int, my: int = 0, n: int = 1) -> None:
        """Set theta = amplitude cos(2 pi (mx x / lx + my y / ly)) sin(n pi z)."""
        z = torch.arange(2 * self.nz, dtype=torch.float64)[:, None, None] / self.nz
        y = torch.arange(self.ny, dtype=torch.float64)[None, :, None] * self.ly / self.ny
        x = torch.arange(self.nx, dtype=torch.float64)[None, None, :] * self.lx / self.nx
        phase = 2 * math.pi * (mx * x / self.lx + my * y / self.ly)
        self.theta_hat = torch.fft.rfftn(amplitude * torch.cos(phase) * torch.sin(n * math.pi * z))

    def velocity_hat(self, theta_hat: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        """Spectra of (u, v, w) from Stokes flow driven by theta."""
        t = self.theta_hat if theta_hat is None else theta_hat
        b = self.buoy * t
        return -b * self.kx * self.kz, -b * self.ky * self.kz, b * self.kh2

    def _physical(self, a_hat: torch.Tensor) -> torch.Tensor:
        # (..., 2nz, ny, nx//2+1) -> (..., 2nz, ny, nx) on the doubled grid
        return torch.fft.irfftn(a_hat, s=(2 * self.nz, self.ny, self.nx), dim=(-3, -2, -1))

    def advection_hat(self, theta_hat: torch.Tensor) -> torch.Tensor:
        """Spectrum of -u . grad theta (the explicit part), projected and dealiased."""
        u, v, w = self.velocity_hat(theta_hat)
        i = 1j
        grads = (i * self.kx * theta_hat, i * self.ky * theta_hat, i * self.kz * theta_hat)
        phys = self._physical(torch.stack([u, v, w, *grads]))  # one batched inverse FFT
        adv = phys[0] * phys[3] + phys[1] * phys[4] + phys[2] * phys[5]
        return self.project(-torch.fft.rfftn(adv))

    def step(self, dt: float) -> None:
        """Advance theta by dt with integrating-factor SSP-RK3."""
        half = torch.exp(self.lin * (dt / 2))
        full, back = half * half, 1.0 / half
        t0, n = self.theta_hat, self.advection_hat
        t1 = full * (t0 + dt * n(t0))
        t2 = 0.75 * half * t0 + 0.25 * back * (t1 + dt * n(t1))
        self.theta_hat = self.project(full * t0 / 3 + (2 / 3) * half * (t2 + dt * n(t2)))
        self.time += dt

    def cfl_dt(self, cfl: float = 1.0, dt_max: float = 1e-3) -> float:
        """Explicit advection limit: cfl / sum_i max|u_i| k_i,max (RK3 is stable below sqrt 3)."""
        vel = self._physical(torch.stack(self.velocity_hat()))
        kmax = (math.pi * self.nx / self.lx, math.pi * self.ny / self.ly, math.pi * self.nz)
        rate = sum(float(vel[j].abs().max()) * kmax[j] for j in range(3))
        return min(dt_max, cfl / rate) if rate > 0 else dt_max

    def run(self, t_end: float, cfl: float = 1.0, dt_max: float = 1e-3) -> int:
        """Step until time t_end with CFL-limited steps; returns the number of steps."""
        n = 0
        while self.time < t_end - 1e-12:
            self.step(min(self.cfl_dt(cfl, dt_max), t_end - self.time))
            n += 1
        return n

    def fields(self) -> dict[str, torch.Tensor]:
        """Physical T, u, v, w on the (nz + 1, ny, nx) grid, z = 0 (bottom) .. 1 (top)."""
        phys = self._physical(torch.stack([self.theta_hat, *self.velocity_hat()]))
        z = torch.linspace(0, 1, self.nz + 1, dtype=torch.float64)[:, None, None]
        half = phys[:, : self.nz + 1]
        return {"T": 1 - z + half[0], "u": half[1], "v": half[2], "w": half[3]}

    def divergence(self) -> torch.Tensor:
        """Spectral divergence of the physical velocity on the doubled (2nz, ny, nx) grid."""
        # Round trip through physical space so the check covers what the files receive.
        phys = self._physical(torch.stack(self.velocity_hat()))
        spec = torch.fft.rfftn(phys, dim=(-3, -2, -1))
        return self._physical(1j * (self.kx * spec[0] + self.ky * spec[1] + self.kz * spec[2]))

    def mean_profile(self) -> torch.Tensor:
        """Horizontal mean of T at z = 0 .. 1, shape (nz + 1,)."""
        z = torch.linspace(0, 1, self.nz + 1, dtype=torch.float64)
        col = self.theta_hat[:, 0, 0] / (self.nx * self.ny)
        return 1 - z + torch.fft.ifft(col).real[: self.nz + 1]

    def nusselt(self, where: str = "top") -> float:
        """Nusselt number: -dT/dz at a wall ('top', 'bottom') or 1 + <w theta> ('volume')."""
        if where == "volume":
            phys = self._physical(torch.stack([self.theta_hat, self.velocity_hat()[2]]))
            return 1.0 + float((phys[0] * phys[1]).mean())
        col = 1j * self.kz[:, 0, 0] * self.theta_hat[:, 0, 0] / (self.nx * self.ny)
        dtheta = torch.fft.ifft(col).real
        return 1.0 - float(dtheta[self.nz if where == "top" else 0])
