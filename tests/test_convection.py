"""Physics of the built-in convection solver, against linear theory and hand-derived fields."""

import math

import pytest
import torch

from experiments.data.convection import RA_CRITICAL, Convection, linear_growth_rate

KC = math.pi / math.sqrt(2)  # critical horizontal wavenumber for free-slip walls
LX_C = 2 * math.pi / KC  # box holding exactly one critical wavelength


def test_critical_rayleigh_number_is_27_pi4_over_4():
    assert RA_CRITICAL == pytest.approx(657.51, abs=0.01)
    assert linear_growth_rate(RA_CRITICAL, KC) == pytest.approx(0.0, abs=1e-12)
    # sigma = Ra kh^2 / k^4 - k^2 with k^2 = kh^2 + pi^2: at Ra=1000, kh=pi, k^2 = 2 pi^2
    assert linear_growth_rate(1000.0, math.pi) == pytest.approx(
        1000 / (4 * math.pi**2) - 2 * math.pi**2
    )


def test_single_mode_velocity_matches_hand_derivation():
    # theta = A cos(kx x) sin(pi z): lap^2 w = Ra kx^2 theta gives w = Ra kx^2 / k^4 theta and
    # continuity du/dx = -dw/dz gives u = -Ra kx pi / k^4 A sin(kx x) cos(pi z); v = 0.
    ra, amp, lx = 1000.0, 0.01, 2.0
    sim = Convection(16, 4, 8, lx, 1.0, ra)
    sim.set_mode(amp, 1)
    f = sim.fields()
    kx = 2 * math.pi / lx
    k4 = (kx**2 + math.pi**2) ** 2
    z = torch.linspace(0, 1, 9, dtype=torch.float64)[:, None, None]
    x = (torch.arange(16, dtype=torch.float64) * lx / 16)[None, None, :]
    w = ra * kx**2 / k4 * amp * torch.cos(kx * x) * torch.sin(math.pi * z)
    u = -ra * kx * math.pi / k4 * amp * torch.sin(kx * x) * torch.cos(math.pi * z)
    assert torch.allclose(f["w"], w.expand_as(f["w"]), atol=1e-14)
    assert torch.allclose(f["u"], u.expand_as(f["u"]), atol=1e-14)
    assert f["v"].abs().max() < 1e-14
    theta = amp * torch.cos(kx * x) * torch.sin(math.pi * z)
    assert torch.allclose(f["T"], (1 - z + theta).expand_as(f["T"]), atol=1e-14)


@pytest.mark.parametrize("ra,grows", [(600.0, False), (700.0, True)])
def test_perturbation_decays_below_and_grows_above_critical(ra, grows):
    sim = Convection(16, 4, 8, LX_C, 1.0, ra)
    sim.perturb(1e-4, seed=1)
    for _ in range(100):  # t = 1: the non-critical modes die out first
        sim.step(0.01)
    a1 = sim.theta_hat.abs().max().item()
    for _ in range(200):
        sim.step(0.01)
    a3 = sim.theta_hat.abs().max().item()
    assert (a3 > a1) is grows
    # the surviving critical mode has sigma = -1.295 (Ra 600) or +0.957 (Ra 700)
    rate = math.log(a3 / a1) / 2.0
    assert rate == pytest.approx(linear_growth_rate(ra, KC), rel=1e-3)


@pytest.mark.parametrize("mx,n", [(1, 1), (2, 1), (1, 2)])
def test_linear_growth_rate_matches_theory(mx, n):
    ra, lx = 5000.0, 2.0
    sim = Convection(16, 4, 16, lx, 1.0, ra)
    sim.set_mode(1e-8, mx, n=n)
    a0 = sim.theta_hat.abs().max().item()
    for _ in range(50):
        sim.step(0.002)
    measured = math.log(sim.theta_hat.abs().max().item() / a0) / sim.time
    assert measured == pytest.approx(linear_growth_rate(ra, 2 * math.pi * mx / lx, n), rel=1e-6)


def test_velocity_divergence_free_and_walls_free_slip():
    sim = Convection(16, 8, 8, 2.0, 1.0, 1e4)
    sim.perturb(0.2, seed=3)
    sim.run(0.005)  # nonlinear, many modes
    f = sim.fields()
    vmax = max(f[c].abs().max().item() for c in "uvw")
    assert vmax > 1.0
    # derivative scale vmax * kmax: divergence is round-off relative to it
    assert sim.divergence().abs().max().item() < 1e-12 * vmax * math.pi * 16
    assert f["w"][[0, -1]].abs().max().item() < 1e-12 * vmax
    assert torch.equal(f["T"][0], torch.ones_like(f["T"][0]))
    assert f["T"][-1].abs().max().item() < 1e-14


def test_same_seed_same_state():
    a, b = (Convection(8, 8, 8, 2.0, 2.0, 1e4) for _ in range(2))
    a.perturb(0.1, seed=5)
    b.perturb(0.1, seed=5)
    assert torch.equal(a.theta_hat, b.theta_hat)
    c = Convection(8, 8, 8, 2.0, 2.0, 1e4)
    c.perturb(0.1, seed=6)
    assert not torch.equal(a.theta_hat, c.theta_hat)


def test_developed_convection_at_ra_1e5_has_boundary_layers_and_plausible_nusselt():
    # quasi-2D (ly small, so y modes are strongly damped) to keep the test to a few seconds
    sim = Convection(32, 4, 16, 2.0, 0.25, 1e5)
    sim.set_mode(0.05, 1)
    sim.perturb(1e-3, seed=0)
    sim.run(0.05)
    nu_top, nu_bottom, nu_vol = (sim.nusselt(w) for w in ("top", "bottom", "volume"))
    assert 5 < nu_top < 15
    assert nu_bottom == pytest.approx(nu_top, rel=0.05)  # statistically steady: flux in = out
    assert nu_vol == pytest.approx(nu_top, rel=0.15)
    prof = sim.mean_profile()  # z = 0, 1/16, ..., 1
    assert prof[0] == 1.0 and prof[-1] == 0.0
    assert ((prof[4:13] - 0.5).abs() < 0.06).all()  # well-mixed interior near 0.5
    # boundary layers: most of the drop within 2/16 of each wall (conduction would drop 1/8)
    assert prof[0] - prof[2] > 0.4 and prof[-3] - prof[-1] > 0.4
    t = sim.fields()["T"]
    assert t.min() > -0.02 and t.max() < 1.02


def test_unphysical_planes_are_projected_out_each_step():
    # irfftn ignores the anti-Hermitian part of the kx = 0 plane and theta is odd in z; round-off
    # in either grows at rates ~Ra and once blew up a run at t = 0.1, so each step removes both.
    sim = Convection(8, 8, 8, 2.0, 2.0, 3e4)
    sim.perturb(0.1, seed=2)
    g = torch.Generator().manual_seed(0)
    junk = torch.randn(sim.theta_hat.shape, generator=g, dtype=torch.complex128)
    sim.theta_hat = sim.theta_hat + 1e-3 * junk
    sim.step(1e-4)
    plane = sim.theta_hat[:, :, 0]
    neg_z = torch.roll(torch.flip(sim.theta_hat, [0]), 1, 0)  # coefficient at -kz
    neg_zy = torch.roll(torch.flip(neg_z[:, :, 0], [1]), 1, 1)  # at (-kz, -ky), kx = 0
    assert torch.equal(sim.theta_hat[0], torch.zeros_like(sim.theta_hat[0]))  # kz = 0
    assert torch.equal(neg_z, -sim.theta_hat)  # odd in z
    assert torch.equal(neg_zy, plane.conj())  # Hermitian: real field
