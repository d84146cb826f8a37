"""Power spectra against analytic fields, and the spectrum records read back from TensorBoard."""

import math

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from diagnostics.spectra import (
    field_spectra,
    log_spectra,
    radial_power_spectrum,
    ratio_bands,
    spectrum_figure,
)
from diagnostics.writer import Writer


def _wave(shape, kvec, amp=1.0):
    grids = torch.meshgrid(*[torch.arange(n, dtype=torch.float64) for n in shape], indexing="ij")
    phase = sum(2 * math.pi * k * g / n for k, g, n in zip(kvec, grids, shape, strict=True))
    return amp * torch.cos(phase + 0.3)


@pytest.mark.parametrize(
    "shape,kvec,shell",
    [
        ((32, 32), (0, 5), 5),  # along the last (rfft half-plane) axis: weight 2
        ((32, 32), (7, 0), 7),  # along the first axis: the conjugate is stored, weight 1 each
        ((32, 32), (3, 4), 5),  # |k| = 5 exactly
        ((16, 16, 16), (0, 3, 4), 5),
        ((16, 16, 16), (2, 0, 0), 2),
    ],
)
def test_single_wave_puts_all_power_in_one_shell(shape, kvec, shell):
    amp = 2.0
    x = _wave(shape, kvec, amp)
    k, p, counts = radial_power_spectrum(x, len(shape))
    total = (p.double() * counts).sum()
    # cos of amplitude A over N points: sum(x^2) = N A^2 / 2, all in the shell |k|.
    n = math.prod(shape)
    assert total.item() == pytest.approx(n * amp**2 / 2, rel=1e-5)
    i = int((k == shell).nonzero())
    assert (p.double()[i] * counts[i]).item() == pytest.approx(n * amp**2 / 2, rel=1e-5)
    others = torch.cat([p[:i], p[i + 1 :]]).double() * torch.cat([counts[:i], counts[i + 1 :]])
    assert others.abs().max().item() < 1e-9 * n


def test_nyquist_wave_along_last_axis_counts_once():
    # cos(pi x) along the last axis sits at j = n/2, stored once by rfft: power N (A^2 = 1, no half).
    x = _wave((8, 8), (0, 4))
    k, p, counts = radial_power_spectrum(x, 2)
    assert k.tolist() == [1, 2, 3, 4]
    assert (p[-1].double() * counts[-1]).item() == pytest.approx(64 * math.cos(0.3) ** 2, rel=1e-6)


def test_parseval_with_all_shells_kept():
    torch.manual_seed(1)
    for shape in [(12, 10), (9, 8, 7), (6, 10, 8)]:
        x = torch.randn(3, *shape, dtype=torch.float64)
        k, p, counts = radial_power_spectrum(x, len(shape), nyquist_cut=False, drop_zero=False)
        assert k[0].item() == 0
        assert counts.sum().item() == pytest.approx(math.prod(shape))
        got = (p.double() * counts).sum(-1)
        want = x.square().flatten(1).sum(-1)
        torch.testing.assert_close(got, want, rtol=1e-10, atol=0)


def test_white_noise_is_flat():
    torch.manual_seed(2)
    sigma = 1.5
    x = sigma * torch.randn(64, 32, 32)
    k, p, counts = radial_power_spectrum(x, 2)
    assert k.tolist() == list(range(1, 17))
    mean = p.mean(0)
    # Per shell, averaging 64 fields over counts[k] modes: relative error ~ 1/sqrt(64 * counts).
    tol = 5.0 / torch.sqrt(64 * counts)
    assert ((mean / sigma**2 - 1).abs() < tol).all(), (mean / sigma**2).tolist()


def test_noncubic_volume_has_no_empty_shells_and_nyquist_of_shortest_side():
    x = torch.randn(1, 8, 16, 32)
    k, p, counts = radial_power_spectrum(x, 3)
    assert k.tolist() == [1, 2, 3, 4]
    assert (counts > 0).all()
    assert p.shape == (1, 4)


def test_field_spectra_slices_and_ratio_bands():
    torch.manual_seed(3)
    truth = torch.randn(2, 2, 4, 16, 16)
    gen = truth.clone()
    gen[:, 1] *= 0.5  # variable 1 has a quarter of the power everywhere
    k, sp = field_spectra({"truth": truth, "generated": gen}, spatial_dims=2)
    assert k.tolist() == list(range(1, 9))
    assert sp["truth"].shape == (2, 8)
    bands = ratio_bands(sp["generated"], sp["truth"])
    torch.testing.assert_close(bands, torch.tensor([[1.0] * 3, [0.25] * 3]), rtol=1e-5, atol=0)


def test_ratio_bands_thirds():
    # 6 shells: thirds are shells [0,1], [2,3], [4,5]; geometric means 2, 1, sqrt(0.1*0.4) = 0.2.
    truth = torch.ones(1, 6)
    gen = torch.tensor([[2.0, 2.0, 1.0, 1.0, 0.1, 0.4]])
    torch.testing.assert_close(ratio_bands(gen, truth), torch.tensor([[2.0, 1.0, 0.2]]))


def test_shape_checks():
    with pytest.raises(ValueError):
        radial_power_spectrum(torch.zeros(8), 2)
    with pytest.raises(ValueError):
        field_spectra({"truth": torch.zeros(1, 1, 8, 8), "generated": torch.zeros(1, 2, 8, 8)}, 2)


def test_log_spectra_event_file(tmp_path):
    torch.manual_seed(4)
    truth = torch.randn(2, 2, 8, 8, 8)
    gen = 0.5 * truth
    with Writer(tmp_path) as w:
        host = log_spectra(w, 7, ["temperature", "vx"], truth, gen, upsampled=truth.clone())
    assert host["spectrum/vx/ratio_high"] == pytest.approx(0.25, rel=1e-5)
    ea = EventAccumulator(str(tmp_path), size_guidance={"scalars": 0, "images": 0})
    ea.Reload()
    tags = ea.Tags()
    for v in ("temperature", "vx"):
        for b in ("low", "mid", "high"):
            ev = ea.Scalars(f"spectrum/{v}/ratio_{b}")
            assert [e.step for e in ev] == [7]
            assert ev[0].value == pytest.approx(0.25, rel=1e-5)
    assert "spectrum/3d" in tags["images"]
    img = ea.Images("spectrum/3d")[0]
    assert img.width > 100 and img.height > 100


def test_figure_has_two_rows():
    k = np.arange(1, 9)
    sp = {"truth": np.ones((1, 8)), "generated": 0.5 * np.ones((1, 8))}
    fig = spectrum_figure(k, sp, ["t"])
    assert len(fig.axes) == 2
    (line,) = fig.axes[1].get_lines()[:1]
    np.testing.assert_allclose(line.get_ydata(), 0.5)
