"""The GAN's fixed probes: slice panels, physics (spectra, value distributions, skill),
embeddings and snapshot arrays, all on fixed, seeded samples so that frames compare.

One object holds what the probe writes need (the fixed inputs, the models they run, the
writer and the run's scalar stream), so the training loop calls ``probes.<write>(step)`` and
reads top to bottom. Scalars go into the stream (``diag.scalars``) and are written, reduced
and seen by health with every other scalar; figures, images and histograms are written here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from diagnostics import tags
from diagnostics.embeddings import EmbeddingLogger, layer_features
from diagnostics.gan import ValueDistribution
from diagnostics.hooks import probe_mode
from diagnostics.skill import log_skill, predict, summary_dict
from diagnostics.slices import physical_ranges, slice_panel, take_slices
from diagnostics.snapshots import SnapshotWriter
from diagnostics.spectra import log_spectra
from diagnostics.stats import Scalars
from diagnostics.writer import Writer
from experiments.models.gan3d import upsample


@dataclass
class Probes:
    """Fixed probe samples of a GAN run and the writes made from them.

    ``G_eval`` (the EMA generator, or G) makes every probe; ``G_reg`` (the frozen MSE-pretrained
    copy, set when pretraining ends) is the regression baseline of ``skill/*``.
    """

    writer: Writer
    stream: Scalars
    snaps: SnapshotWriter
    variables: list[str]
    factor: int
    probe_seed: int
    batch_size: int
    device: torch.device
    G: torch.nn.Module
    D: torch.nn.Module
    G_eval: torch.nn.Module
    probe_x: torch.Tensor  # (N, V, r, lat, lon) low-resolution inputs, on the device
    probe_y: torch.Tensor  # (N, V, r, lat, lon) truth, on the device
    radii: list[float]  # km at the middle radius of each probe crop
    clim: dict[str, list[float]]
    scaling: dict
    skill_x: torch.Tensor
    skill_y: torch.Tensor
    skill_up: torch.Tensor
    G_reg: torch.nn.Module | None = None
    windows: list | None = None  # (time index, r0, lat0, lon0) of each probe crop
    embedder: EmbeddingLogger | None = None
    embed_layer: str = "head"
    emb_x: torch.Tensor | None = None
    emb_y: torch.Tensor | None = None
    emb_windows: list | None = None
    last_skill: dict = field(default_factory=dict)  # min-max scaled: [0, 1] over the training set

    def __post_init__(self) -> None:
        self.r_mid = self.probe_y.shape[2] // 2
        # Scaled units: [0, 1] is the data.
        self.values = ValueDistribution(self.variables, lo=-0.25, hi=1.25)

    def generate(self, n_draws: int) -> torch.Tensor:
        """(K, B, V, ...) generator draws on the fixed probe inputs: the same noise every time."""
        with probe_mode(self.G_eval, seed=self.probe_seed):
            return torch.stack([self.G_eval(self.probe_x) for _ in range(n_draws)])

    def _slices(self) -> dict[str, torch.Tensor]:
        fake = self.generate(1)[0]
        up = upsample(self.probe_x, self.factor)
        return {
            k: take_slices(v, self.r_mid).float()
            for k, v in {"input_up": up, "fake": fake, "truth": self.probe_y}.items()
        }

    def write_slices(self, step: int) -> None:
        """``slices/G/probe<i>``: input, generated, truth and difference of each probe sample."""
        with self.writer.cost("slices"):
            s = {k: v.cpu().numpy() for k, v in self._slices().items()}
            scaling = physical_ranges(self.scaling)
            for i in range(len(self.probe_x)):
                img = slice_panel(
                    s["input_up"][i],
                    s["fake"][i],
                    s["truth"][i],
                    self.variables,
                    self.radii[i],
                    self.clim,
                    scaling=scaling,
                )
                self.writer.image(tags.slices("G", i), img, step)

    def write_physics(self, step: int) -> None:
        """Spectra (3D and lat-lon 2D) and value distributions of the probe samples."""
        fake = self.generate(1)[0]
        up = upsample(self.probe_x, self.factor)
        w, v, y = self.writer, self.variables, self.probe_y
        log_spectra(w, step, v, y, fake, up, stream=self.stream)
        # The lat-lon planes of the same volumes as 2D fields (each radius one more sample).
        log_spectra(w, step, v, y, fake, up, spatial_dims=2, tag="spectrum2d", stream=self.stream)
        self.values.update(y, fake)
        self.values.write(w, step, stream=self.stream)
        self.values.reset()

    def write_skill(self, step: int) -> None:
        """``skill/*`` scalars and figure: generator (EMA if on) vs trilinear (and regression)."""
        preds = []
        for model in (self.G_eval, self.G_reg):
            if model is None:
                preds.append(None)
                continue
            with probe_mode(model, seed=self.probe_seed):
                preds.append(predict(model, self.skill_x, self.batch_size, self.device))
        vals = log_skill(
            self.writer,
            step,
            self.variables,
            self.skill_y,
            preds[0],
            self.skill_up,
            preds[1],
            stream=self.stream,
        )
        self.last_skill = summary_dict(step, self.variables, vals)

    def write_embeddings(self, step: int) -> None:
        """The critic's pooled features of the fixed embedding crops (thumbnails: slices)."""
        feats = []
        B, f = self.batch_size, self.factor
        for i in range(0, len(self.emb_x), B):
            x, y = self.emb_x[i : i + B].to(self.device), self.emb_y[i : i + B].to(self.device)
            feats.append(layer_features(self.D, self.embed_layer, y, upsample(x, f)))
        # (N, lat, lon): first variable at the middle radius
        thumbs = self.emb_y[:, 0, self.emb_y.shape[2] // 2]
        w = np.asarray(self.emb_windows)
        self.embedder.log(
            step,
            torch.cat(feats),
            thumbs,
            coords={"time_index": w[:, 0], "r0": w[:, 1], "lat0": w[:, 2], "lon0": w[:, 3]},
            attrs={
                "source": f"critic layer {self.embed_layer!r}, mean-pooled",
                "thumbnail": f"{self.variables[0]} at the crop's middle radius",
            },
        )

    def snapshot(self, step: int, scalars: dict[str, float], act: dict[str, np.ndarray]) -> None:
        """A run snapshot: probe slices, both networks' weights, the latest scalars, ``act``."""
        with self.writer.cost("snapshots"):
            arrays = {f"probe/{k}": v for k, v in self._slices().items()}
            arrays |= {f"weights/G/{n}": p for n, p in self.G.state_dict().items()}
            arrays |= {f"weights/D/{n}": p for n, p in self.D.state_dict().items()}
            arrays |= {f"scalar/{k}": v for k, v in scalars.items()}
            self.snaps.write(step, arrays | act)
