"""GAN balance signals and value distributions, accumulated on the device.

Both classes follow the statistics rule of the house (stylegan2-ada ``training_stats``): ``update(...)``
only does tensor operations on the device, ``compute()`` returns device tensors, and the writer makes the
one host copy at write time. No ``.item()`` anywhere on the step's path.

Tags written (``compute()`` keys):

- ``gan/score_real``, ``gan/score_fake``: mean critic score on real and generated samples;
- ``gan/gap``: their difference (the Wasserstein estimate of a WGAN critic);
- ``gan/real_positive``: fraction of real samples scored > 0, and ``gan/r_t`` = E[sign D(real)] (StyleGAN2-ADA's
  overfitting heuristic; for a WGAN critic the score offset is arbitrary, so read it with ``gan/separation``);
- ``gan/separation``: fraction of (real, fake) pairs in a batch where the real one scores higher, which does not
  depend on the score's offset or scale (0.5: the critic cannot tell them apart; 1: it always can);
- ``gan/grad_norm/<name>``: mean L2 norm of each network's gradients;
- ``gan/diversity``: spread of generated samples across noise draws for the same input, relative to the
  samples' own spread (0: the noise does nothing, the generator is deterministic).
- ``values/<var>/w1``: Wasserstein-1 distance between the truth and generated value histograms.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch

from . import tags
from .stats import Scalars


def grad_norm(parameters: Iterable[torch.nn.Parameter]) -> torch.Tensor:
    """L2 norm of all gradients together, a 0-dim device tensor (0 where no parameter has a gradient)."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.nn.utils.get_total_norm(grads, norm_type=2.0)


class GanBalance:
    """Critic scores, gradient norms and sample diversity, reported into a scalar stream.

    Args:
        stream: the run's :class:`diagnostics.stats.Scalars` (``diag.scalars``: written, reduced
            across ranks and fed to health with every other scalar); None keeps a private one,
            read with :meth:`compute`.
        prefix: tag prefix.
    """

    def __init__(self, stream: Scalars | None = None, prefix: str = "gan") -> None:
        self.prefix = prefix
        self.stream = stream if stream is not None else Scalars()

    def _add(self, key: str, mean: torch.Tensor, n: float = 1.0) -> None:
        self.stream.report(tags.gan(key, self.prefix), mean, n)

    def update(self, d_real: torch.Tensor, d_fake: torch.Tensor) -> None:
        """Record the critic's scores on a batch of real and of generated samples.

        ``gan/gap`` is the running mean of each batch's gap, equal to the difference of the
        running score means when every batch has as many real as generated samples.

        Args:
            d_real, d_fake: (B,) per-sample scores, or (B, ...) score fields averaged per sample.
        """
        # (B, ...) -> (B,)
        if d_real.ndim == 0 or d_fake.ndim == 0:
            raise ValueError("critic scores need a batch axis: (B,) or (B, ...)")
        r = d_real.detach().reshape(d_real.shape[0], -1).mean(1).to(torch.float64)
        f = d_fake.detach().reshape(d_fake.shape[0], -1).mean(1).to(torch.float64)
        nr, nf = r.numel(), f.numel()
        self._add("score_real", r.mean(), nr)
        self._add("score_fake", f.mean(), nf)
        self._add("gap", r.mean() - f.mean(), nr)
        self._add("real_positive", (r > 0).to(torch.float64).mean(), nr)
        self._add("r_t", torch.sign(r).mean(), nr)
        # All (real, fake) pairs of the batch: ties count half, so equal scores read 0.5.
        diff = r[:, None] - f[None, :]
        sep = (diff > 0).to(torch.float64).sum() + 0.5 * (diff == 0).to(torch.float64).sum()
        self._add("separation", sep / (nr * nf), nr * nf)

    def update_grad_norm(self, name: str, parameters: Iterable[torch.nn.Parameter]) -> None:
        """Record one network's gradient norm (call after backward, before the optimizer step)."""
        self._add(f"grad_norm/{name}", grad_norm(parameters))

    def update_diversity(self, draws: torch.Tensor) -> None:
        """Record the spread of K generated samples of the same inputs under different noise draws.

        Args:
            draws: (K, B, C, *S) with K >= 2 noise draws of the generator on the same B inputs.
        """
        # (K, B, C, *S)
        if draws.ndim < 3 or draws.shape[0] < 2:
            raise ValueError(f"diversity needs (K>=2, B, C, ...) draws, got {tuple(draws.shape)}")
        d = draws.detach().to(torch.float64)
        across = d.std(0, unbiased=True).mean()
        # Relative to the samples' own spatial spread, so the number does not depend on the data's units.
        scale = d.flatten(3).std(-1).mean() if d.ndim > 3 else d.std()
        self._add("diversity", across / (scale + 1e-12))

    def compute(self) -> dict[str, torch.Tensor]:
        """This rank's means since the last reset, 0-dim device tensors keyed by tag."""
        p = self.prefix + "/"
        return {
            t: v.to(torch.float32) for t, v in self.stream.local_means().items() if t.startswith(p)
        }

    def reset(self) -> None:
        """Start a new accumulation window (only for a private stream; a run's stream resets
        at each write)."""
        self.stream.reset()


class ValueDistribution:
    """Histograms of each variable's values, truth against generated, over fixed edges per variable.

    Counts have ``n_bins + 2`` entries per variable: underflow, the bins, overflow (the writer's histogram
    layout), so nothing is silently dropped and counts add across steps.

    Args:
        var_names: one name per channel.
        lo, hi: value range per variable (or one for all); fixed for the whole run so frames compare.
    """

    def __init__(
        self,
        var_names: Sequence[str],
        lo: float | Sequence[float],
        hi: float | Sequence[float],
        n_bins: int = 64,
    ) -> None:
        self.var_names = list(var_names)
        nv = len(self.var_names)
        lo_t = torch.as_tensor(lo, dtype=torch.float64).expand(nv).clone()
        hi_t = torch.as_tensor(hi, dtype=torch.float64).expand(nv).clone()
        if not bool((hi_t > lo_t).all()):
            raise ValueError("every hi must exceed its lo")
        self.n_bins = int(n_bins)
        self.lo, self.hi = lo_t, hi_t
        self.edges = [
            np.linspace(float(a), float(b), self.n_bins + 1)
            for a, b in zip(lo_t, hi_t, strict=True)
        ]
        self._counts: torch.Tensor | None = None

    def _bin(self, x: torch.Tensor) -> torch.Tensor:
        # (B, C, *S) -> (C, n_bins + 2) counts
        if x.ndim < 2 or x.shape[1] != len(self.var_names):
            raise ValueError(f"expected (B, {len(self.var_names)}, ...), got {tuple(x.shape)}")
        c = x.shape[1]
        v = x.detach().movedim(1, 0).reshape(c, -1).to(torch.float64)
        lo, hi = self.lo.to(v.device)[:, None], self.hi.to(v.device)[:, None]
        # Bin index 1..n_bins inside, 0 below, n_bins + 1 at or above hi; NaN goes nowhere (masked out).
        idx = (
            torch.floor((v - lo) / (hi - lo) * self.n_bins).clamp(-1, self.n_bins).to(torch.int64)
            + 1
        )
        idx = torch.where(v >= hi, self.n_bins + 1, idx)
        idx = torch.where(torch.isinf(v) & (v < 0), 0, idx)
        ok = ~torch.isnan(v)
        flat = (idx + (self.n_bins + 2) * torch.arange(c, device=v.device)[:, None])[ok]
        return (
            torch.bincount(flat, minlength=c * (self.n_bins + 2))
            .reshape(c, self.n_bins + 2)
            .to(torch.float64)
        )

    def update(self, real: torch.Tensor, fake: torch.Tensor) -> None:
        """Add a batch of truth and generated fields, both (B, C, *S)."""
        counts = torch.stack([self._bin(real), self._bin(fake)])
        self._counts = counts if self._counts is None else self._counts + counts

    def compute(self) -> dict[str, torch.Tensor]:
        """``counts`` (2, C, n_bins + 2) [truth, generated] and ``w1`` (C,), in value units."""
        if self._counts is None:
            raise RuntimeError("ValueDistribution.compute() before any update()")
        return {
            "counts": self._counts,
            "w1": histogram_w1(self._counts[0], self._counts[1], self.hi - self.lo),
        }

    def scalars(self, prefix: str = "values") -> dict[str, torch.Tensor]:
        """``{prefix/<var>/w1: tensor}`` on the device."""
        w1 = self.compute()["w1"]
        return {f"{prefix}/{v}/w1": w1[i] for i, v in enumerate(self.var_names)}

    def figure(self, title: str = "", *, counts=None, w1=None):
        """Step plots of the normalised histograms, truth vs generated, one panel per variable (a Figure).

        ``counts``/``w1``: host copies already made by the caller (``write``), else computed here.
        """
        from matplotlib.figure import Figure

        if counts is None or w1 is None:
            res = self.compute()
            counts, w1 = res["counts"].cpu(), res["w1"].cpu()
        counts, w1 = np.asarray(counts), np.asarray(w1)
        nv = len(self.var_names)
        fig = Figure(figsize=(3.2 * nv, 2.8), dpi=80)
        axes = fig.subplots(1, nv, squeeze=False)[0]
        for i, v in enumerate(self.var_names):
            ax, e = axes[i], self.edges[i]
            for j, (lab, col) in enumerate((("truth", "k"), ("generated", "tab:red"))):
                c = counts[j, i, 1:-1]
                ax.stairs(c / max(counts[j, i].sum(), 1.0) / (e[1] - e[0]), e, color=col, label=lab)
            ax.set_title(f"v={v}  W1={w1[i]:.3g}", fontsize=9)
        axes[0].legend(fontsize=7)
        if title:
            fig.suptitle(title)
        fig.tight_layout()
        return fig

    def write(
        self, writer, step: int, prefix: str = "values", *, stream: Scalars | None = None
    ) -> dict[str, float]:
        """Histograms (``values/<truth|generated>/<var>``), the figure and W1 scalars; returns the scalars.

        With ``stream`` (the run's scalar stream) the W1 scalars are reported there and written
        with the run's other scalars; without it they are written here.
        """
        with writer.cost("values"):
            res = self.compute()
            counts = res["counts"].cpu()
            w1 = res["w1"].cpu().tolist()
            host = {tags.values(v, prefix=prefix): w1[i] for i, v in enumerate(self.var_names)}
            if stream is not None:
                for i, tag in enumerate(host):
                    stream.report(tag, res["w1"][i])
            else:
                writer.scalars(host, step)
            for i, v in enumerate(self.var_names):
                for j, src in enumerate(("truth", "generated")):
                    writer.histogram(tags.values(v, src, prefix), counts[j, i], self.edges[i], step)
            writer.figure(
                f"{prefix}/figure", self.figure(f"step {step}", counts=counts, w1=w1), step
            )
        return host

    def reset(self) -> None:
        """Start a new accumulation window."""
        self._counts = None


def histogram_w1(
    counts_a: torch.Tensor, counts_b: torch.Tensor, span: torch.Tensor | float
) -> torch.Tensor:
    """Wasserstein-1 distance between histograms over the same uniform edges, mass at the bin centres.

    Args:
        counts_a, counts_b: (C, n_bins + 2) with under- and overflow, counted as mass one bin width
            beyond the outer edges.
        span: (C,) or scalar ``hi - lo`` of the edges; the result is in those units.
    """
    # (C, n + 2)
    if counts_a.shape != counts_b.shape or counts_a.ndim != 2:
        raise ValueError(
            f"expected two (C, n + 2) histograms, got {tuple(counts_a.shape)}, {tuple(counts_b.shape)}"
        )
    a = counts_a.to(torch.float64)
    b = counts_b.to(torch.float64)
    a = a / a.sum(1, keepdim=True).clamp_min(1e-300)
    b = b / b.sum(1, keepdim=True).clamp_min(1e-300)
    width = torch.as_tensor(span, dtype=torch.float64, device=a.device) / (a.shape[1] - 2)
    # In 1D, W1 is the area between the two CDFs; between adjacent centres the CDFs are constant.
    return (a.cumsum(1) - b.cumsum(1))[:, :-1].abs().sum(1) * width
