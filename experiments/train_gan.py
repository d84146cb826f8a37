"""Train the 3D-slice conditional WGAN-GP that super-resolves mantle-convection fields.

    python experiments/train_gan.py +exp=small            # CPU smoke run on built-in data
    python experiments/train_gan.py data.dir=/path/to/scivis2021 data.drop_r=[0,1,200]
    python experiments/train_gan.py resume=outputs/gan/RUN # continue from the newest checkpoint
    tensorboard --logdir outputs

Read top to bottom: config checks and data (all bad input fails here, before any training),
models, the fixed probe samples, then the loop: n_critic critic steps with gradient penalty, one
generator step, cheap on-device statistics, and periodic writes (scalars, slice panels,
snapshots, checkpoints).
"""

from __future__ import annotations

if __name__ == "__main__":  # first, before the heavy imports: a signal while starting is kept
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from experiments import early_signals

    early_signals.install()

import copy
import functools
import json
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diagnostics import tags
from diagnostics.core import Diagnostics
from diagnostics.embeddings import EmbeddingLogger
from diagnostics.gan import GanBalance
from diagnostics.health import HealthMonitor, StepGuard
from diagnostics.layout import GAN_METRICS
from diagnostics.snapshots import SnapshotWriter
from diagnostics.weight_images import WeightImages
from diagnostics.writer import Writer
from experiments import common, distributed, schema
from experiments.data import mantle, plausibility
from experiments.gan_probe import Probes
from experiments.losses import (
    content_loss,
    critic_loss,
    generator_loss,
    gradient_penalty,
    trilinear_reference,
)
from experiments.models.gan3d import Critic, Generator, ema_update, init_weights, upsample
from experiments.schema import ConfigError

log = logging.getLogger("train_gan")

common.register_resolvers()


StopTraining = common.StopTraining  # a guard (non-finite values, a health check) stops the run


# ------------------------------------------------------------------------------------------ data
def check_config(cfg: DictConfig) -> None:
    """Types and ranges (``schema.GAN``) and the values a schema cannot express; fail before
    touching data (``ConfigError``, exit 2)."""
    schema.check(cfg, schema.GAN)
    f = int(cfg.data.factor)
    if f & (f - 1):
        raise ConfigError(f"data.factor must be a power of two >= 1, got {f}")
    crop = list(cfg.data.crop)
    if len(crop) != 3 or any(not isinstance(c, int) or c % f for c in crop):
        raise ConfigError(
            f"data.crop must be 3 integer sizes (r, lat, lon) divisible by data.factor={f}, got {crop}"
        )
    if not 0.0 <= float(cfg.train.ema_decay) < 1.0:
        raise ConfigError(f"train.ema_decay must be in [0, 1), got {cfg.train.ema_decay}")
    if cfg.train.content_loss not in ("mse", "l1"):
        raise ConfigError(
            f"train.content_loss must be 'mse' or 'l1', got {cfg.train.content_loss!r}"
        )
    if cfg.train.content_norm not in ("none", "trilinear"):
        raise ConfigError(
            f"train.content_norm must be 'none' or 'trilinear', got {cfg.train.content_norm!r}"
        )
    if cfg.data.train_steps is None and not 0 <= float(cfg.data.val_fraction) < 1:
        raise ConfigError(
            f"data.val_fraction={cfg.data.val_fraction} leaves no training files (expected [0, 1))"
        )
    if cfg.amp not in ("none", "bf16"):
        raise ConfigError(f"amp must be 'none' or 'bf16', got {cfg.amp!r}")


def split_steps(cfg: DictConfig, available: list[int]) -> tuple[list[int], list[int]]:
    """Training and validation file numbers from config (explicit lists or a tail fraction)."""
    if cfg.data.train_steps is not None:
        train = [int(s) for s in cfg.data.train_steps]
        val = [int(s) for s in (cfg.data.val_steps or [])]
        return train, val
    n_val = (
        max(1, int(round(len(available) * float(cfg.data.val_fraction))))
        if len(available) > 1
        else 0
    )
    return available[: len(available) - n_val], available[len(available) - n_val :]


def _check_steps(data_dir: Path, available: list[int], train: list[int], val: list[int]) -> None:
    if not train:
        raise mantle.DataError(
            f"no training files: data.train_steps={train} ({len(available)} files in {data_dir})"
        )
    missing = sorted(set(train + val) - set(available))
    if missing:
        raise mantle.DataError(
            f"data.train_steps / data.val_steps name missing file(s) "
            f"{[mantle.file_name(s) for s in missing]} in {data_dir} "
            f"(present: steps {available[0]}..{available[-1]}, {len(available)} files)"
        )


def load_data(cfg: DictConfig, run_dir: Path, *, write: bool = True):
    """Validate and check every file, scale (min/max from the training set), build the datasets.

    One streaming pass (a file at a time) checks every file, variable and radial layer
    (``data.check``) and gives the scaling statistics; every problem is reported in one
    ``DataError`` before any model is built. The crops are then read from memory, or lazily
    from the files (``data.lazy``) so that memory does not grow with the number of files.
    """
    if cfg.data.dir is None:
        presets = {"default": mantle.DEFAULT, "tiny": mantle.TINY}
        if cfg.data.builtin not in presets:
            raise ConfigError(
                f"data.builtin must be one of {sorted(presets)}, got {cfg.data.builtin!r}"
            )
        data_dir = mantle.ensure_builtin(cfg.data.cache_dir, **presets[cfg.data.builtin])
    else:
        data_dir = Path(cfg.data.dir)
        if not data_dir.is_dir():
            raise mantle.DataError(
                f"data.dir={data_dir} does not exist (expected spherical###.nc files)"
            )
    available = mantle.list_steps(data_dir)
    if not available:
        raise mantle.DataError(f"data.dir={data_dir} holds no spherical###.nc files")
    train_steps, val_steps = split_steps(cfg, available)
    _check_steps(data_dir, available, train_steps, val_steps)
    variables = list(cfg.data.variables)
    paths = mantle.validate_files(data_dir, variables, train_steps + val_steps)
    n_lat, n_r, n_lon = mantle.grid_shape(paths[0])
    drop_r = plausibility.check_drop_r(cfg.data.drop_r, n_r, str(paths[0]))
    n_workers = int(cfg.data.n_workers)
    stats = plausibility.scan(paths, variables, n_workers)
    coords = mantle.load_coords(data_dir, train_steps[0])
    bounds = OmegaConf.to_container(cfg.data.bounds) if cfg.data.get("bounds") else None
    plausibility.check(
        stats,
        variables,
        drop_r,
        data_dir,
        mode=str(cfg.data.check),
        bounds=bounds,
        r_km=coords["r"],
    )
    coords["r"] = np.delete(coords["r"], drop_r)
    vmin, vmax = plausibility.scaling(stats[: len(train_steps)], drop_r)
    scaler = mantle.Scaler(variables, vmin, vmax)
    # data/<file>/<var>/span etc. for the health monitor's data check at step 0
    scaler.health_scalars = plausibility.scaling_scalars(
        stats[: len(train_steps)], variables, drop_r, vmin, vmax
    )
    if write:
        common.write_normalisation(run_dir, scaler.to_dict())
    crop = tuple(int(c) for c in cfg.data.crop)
    f = int(cfg.data.factor)
    shape = (n_r - len(drop_r), n_lat, n_lon)
    if any(c > s for c, s in zip(crop, shape, strict=True)):
        raise ConfigError(
            f"data.crop {list(crop)} is larger than the fields (r, lat, lon) = {list(shape)}"
        )
    lazy = cfg.data.lazy
    if lazy == "auto":
        n_bytes = mantle.dataset_bytes(len(paths), len(variables), shape)
        lazy = n_bytes > float(cfg.data.memory_gb) * 2**30
    elif not isinstance(lazy, bool):
        raise ConfigError(f"data.lazy must be true, false or auto, got {lazy!r}")

    def dataset(steps: list[int], part: list, *, roll: bool, seed: int):
        if lazy:
            return mantle.LazyCropDataset(
                part, variables, n_r, drop_r, scaler, crop, f,
                n_lat=n_lat, n_lon=n_lon, roll=roll, seed=seed,
            )  # fmt: skip
        fields = mantle.load_fields(data_dir, steps, variables, drop_r, validate=False)
        return mantle.CropDataset(
            scaler.transform(fields), crop=crop, factor=f, roll=roll, seed=seed
        )

    n_train = len(train_steps)
    train_ds = dataset(train_steps, paths[:n_train], roll=bool(cfg.data.roll), seed=int(cfg.seed))
    probe_src = train_ds
    if val_steps:
        probe_src = dataset(val_steps, paths[n_train:], roll=False, seed=int(cfg.seed) + 1)
    log.info(
        "data: %s, %d training and %d validation files, fields (V, r, lat, lon) = %s, %s",
        data_dir,
        len(train_steps),
        len(val_steps),
        [len(variables), *shape],
        "read lazily from the files" if lazy else "in memory",
    )
    return data_dir, train_ds, probe_src, scaler, coords, (train_steps, val_steps)


# ------------------------------------------------------------------------------------- models
def build_models(cfg: DictConfig, n_var: int, device: torch.device) -> tuple[Generator, Critic]:
    g, d = cfg.model.g, cfg.model.d
    G = Generator(
        n_var,
        int(cfg.data.factor),
        chan_base=g.chan_base,
        chan_min=g.chan_min,
        chan_max=g.chan_max,
        noise=g.noise,
        act=cfg.model.act,
    )
    D = Critic(
        n_var,
        chan_base=d.chan_base,
        chan_min=d.chan_min,
        chan_max=d.chan_max,
        n_blocks=d.n_blocks,
        act=cfg.model.act,
    )
    std = None if cfg.model.init_std is None else float(cfg.model.init_std)
    bias = None if cfg.model.init_bias is None else float(cfg.model.init_bias)
    init_weights(G, std, bias)
    init_weights(D, std, bias)
    return G.to(device), D.to(device)


class BatchStream:
    """Batches of dataset indices in DistributedSampler order, resumable at any position.

    Each rank reads its own shard of a seeded permutation per epoch; ``state()`` (epoch and
    position) goes into the checkpoint so a resumed run continues the same data order.
    """

    def __init__(
        self, n_items: int, batch_size: int, info: distributed.DistInfo, seed: int
    ) -> None:
        from torch.utils.data.distributed import DistributedSampler

        if n_items < batch_size * info.world:
            raise ConfigError(
                f"{n_items} training samples are fewer than batch_size x ranks = {batch_size * info.world}"
            )
        self.sampler = DistributedSampler(
            range(n_items),
            num_replicas=info.world,
            rank=info.rank,
            shuffle=True,
            seed=seed,
            drop_last=True,
        )
        self.batch_size = batch_size
        self.epoch, self.pos = 0, 0
        self._order: list[int] | None = None

    def next(self) -> list[int]:
        if self._order is None:
            self.sampler.set_epoch(self.epoch)
            self._order = list(self.sampler)
        if self.pos + self.batch_size > len(self._order):
            self.epoch, self.pos, self._order = self.epoch + 1, 0, None
            return self.next()
        idx = self._order[self.pos : self.pos + self.batch_size]
        self.pos += self.batch_size
        return idx

    def state(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos}

    def load(self, state: dict) -> None:
        self.epoch, self.pos, self._order = int(state["epoch"]), int(state["pos"]), None


class Batches:
    """Stacked (input, truth) batches of a dataset in BatchStream order.

    ``n_workers`` > 0 reads them in DataLoader worker processes, ``prefetch`` batches ahead each.
    The workers follow a copy of the stream taken at the first batch, so what they deliver is
    exactly what ``stream.next()`` names, and the stream itself (the checkpointed state) only
    advances as batches are consumed: resume stays exact with any number of workers.
    """

    def __init__(
        self,
        dataset,
        stream: BatchStream,
        n_workers: int = 0,
        prefetch: int = 2,
        *,
        device: torch.device | str = "cpu",
        fixed_input: bool = False,
    ):
        self.device, self.fixed_input, self._fixed = torch.device(device), fixed_input, None
        if n_workers < 0 or prefetch < 1:
            raise ConfigError(
                f"data.n_workers must be >= 0 and data.prefetch >= 1, got {n_workers}, {prefetch}"
            )
        self.dataset, self.stream, self.n_workers, self.prefetch = (
            dataset,
            stream,
            n_workers,
            prefetch,
        )
        self._it = None

    def next_on_device(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next batch on ``device``; with ``fixed_input`` the first batch, every time."""
        if self._fixed is not None:
            return self._fixed
        x, y = self.next()
        out = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        if self.fixed_input:
            self._fixed = out
        return out

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.n_workers == 0:
            xs, ys = zip(*(self.dataset[i] for i in self.stream.next()), strict=True)
            return torch.stack(xs), torch.stack(ys)
        if self._it is None:
            import copy

            ahead = copy.deepcopy(self.stream)
            loader = torch.utils.data.DataLoader(
                self.dataset,
                batch_sampler=iter(ahead.next, None),  # endless; the stream never returns None
                num_workers=self.n_workers,
                prefetch_factor=self.prefetch,
                persistent_workers=True,
                multiprocessing_context="spawn",  # no torch or HDF5 state carried over a fork
                worker_init_fn=_worker_init,
                generator=torch.Generator(),  # its worker seed must not draw on the global RNG
            )
            self._it = iter(loader)
        self.stream.next()  # the batch the workers read, in order
        return next(self._it)


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # the workers only read and pool; the trainer owns the cores


# ---------------------------------------------------------------------------------------- train
GAN_RESUME_MUTABLE = ("train.steps",)  # beyond common.RESUME_FREE; README "Resume"
GAN_CKPT_KEYS = ("G", "D", "opt_G", "opt_D", "data", "rng", "step")


@dataclass
class Nets:
    """The networks and optimizers of a GAN run, and what a checkpoint holds of them.

    ``G_fw``/``D_fw`` are what the loop calls (DDP wrappers under torchrun); ``G_eval`` (the
    weight EMA if on, else G) makes probes, skill and evaluation; ``G_reg`` is the frozen copy
    of G at the end of MSE pretraining (the regression baseline of ``skill/*_regression``).
    """

    G: Generator
    D: Critic
    G_fw: torch.nn.Module
    D_fw: torch.nn.Module
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    G_ema: Generator | None
    G_reg: Generator | None = None

    @property
    def G_eval(self) -> Generator:
        return self.G_ema if self.G_ema is not None else self.G

    def state_dict(self) -> dict:
        state = {
            "G": self.G.state_dict(),
            "D": self.D.state_dict(),
            "opt_G": self.opt_g.state_dict(),
            "opt_D": self.opt_d.state_dict(),
            "G_regression": None if self.G_reg is None else self.G_reg.state_dict(),
        }
        if self.G_ema is not None:
            state["G_ema"] = self.G_ema.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.G.load_state_dict(state["G"])
        self.D.load_state_dict(state["D"])
        self.opt_g.load_state_dict(state["opt_G"])
        self.opt_d.load_state_dict(state["opt_D"])
        if self.G_ema is not None and "G_ema" in state:
            self.G_ema.load_state_dict(state["G_ema"])
        if state.get("G_regression") is not None:
            self.G_reg = copy.deepcopy(self.G).requires_grad_(False)
            self.G_reg.load_state_dict(state["G_regression"])


def make_nets(cfg: DictConfig, n_var: int, device: torch.device, info) -> Nets:
    """Models (DDP-wrapped under torchrun), Adam optimizers and the generator EMA."""
    G, D = build_models(cfg, n_var, device)
    G_fw, D_fw = G, D
    if info.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [device.index] if device.type == "cuda" else None
        G_fw, D_fw = DDP(G, device_ids=ids), DDP(D, device_ids=ids)
    betas = tuple(float(b) for b in cfg.train.betas)
    opt_g = torch.optim.Adam(G.parameters(), lr=float(cfg.train.lr_g), betas=betas)
    opt_d = torch.optim.Adam(D.parameters(), lr=float(cfg.train.lr_d), betas=betas)
    G_ema = copy.deepcopy(G).requires_grad_(False) if float(cfg.train.ema_decay) > 0 else None
    return Nets(G, D, G_fw, D_fw, opt_g, opt_d, G_ema)


def make_probes(cfg, probe_src, coords, scaler, nets: Nets, writer, stream, snaps, device):
    """The fixed, seeded probe, skill and embedding samples (the same crops at every write)."""
    variables, seed, f = list(cfg.data.variables), int(cfg.log.probe_seed), int(cfg.data.factor)
    probe_x, probe_y, windows = probe_src.probe_samples(int(cfg.log.n_probe), seed=seed)
    r_mid = probe_y.shape[2] // 2
    # Skill crops: fixed validation windows (files disjoint from training when val files exist).
    skill_x, skill_y, _ = probe_src.probe_samples(int(cfg.log.n_skill), seed=seed + 2)
    probes = Probes(
        writer=writer,
        stream=stream,
        snaps=snaps,
        variables=variables,
        factor=f,
        probe_seed=seed,
        batch_size=int(cfg.train.batch_size),
        device=device,
        G=nets.G,
        D=nets.D,
        G_eval=nets.G_eval,
        G_reg=nets.G_reg,
        probe_x=probe_x.to(device),
        probe_y=probe_y.to(device),
        radii=[float(coords["r"][w[1] + r_mid]) for w in windows],
        clim={v: [0.0, 1.0] for v in variables},
        scaling=scaler.to_dict(),
        skill_x=skill_x,
        skill_y=skill_y.to(device),
        skill_up=upsample(skill_x.to(device), f),
        windows=windows,
    )
    if cfg.embed.enabled:
        # The critic's pooled features of fixed validation crops, thumbnails = slices.
        probes.emb_x, probes.emb_y, probes.emb_windows = probe_src.probe_samples(
            int(cfg.embed.n_items), seed=seed + 1
        )
        probes.embedder = EmbeddingLogger(writer, writer.log_dir, "D", cfg.embed)
        probes.embed_layer = cfg.embed.layer
    return probes


def guard(step: int, what: str, loss, module, nonfinite: StepGuard) -> None:
    """No host sync: a non-finite update is masked on the device (every rank alike);
    common.stop_if_nonfinite reads the verdict at the next write, before any checkpoint."""
    nonfinite.check(what, loss, step)


def save_checkpoint(cfg, run_dir: Path, step: int, info, nets: Nets, stream, diag, monitor):
    """Every rank's RNG state gathered; rank 0 writes; all ranks wait until it is durable."""
    rngs = [common.rng_state()]
    if info.enabled:
        rngs = [None] * info.world
        torch.distributed.all_gather_object(rngs, common.rng_state())
    if info.is_main:
        state = nets.state_dict() | {
            "data": stream.state(),
            "rng": rngs,
            "step": step,
            # Named extra states (the scalar stream's interval sums and history: a resume
            # mid-interval writes the same means; other features add theirs here).
            "extra": {"diagnostics": diag.state_dict()},
            "health": monitor.state_dict(),
        }
        common.save_checkpoint(
            run_dir / "checkpoints", step, state, n_keep=int(cfg.checkpoint.n_keep)
        )
    distributed.barrier(info)  # rank 0's save is durable before any rank goes on or exits


@dataclass
class GanStep:
    """One training step's updates: MSE pretraining, or n_critic critic steps with gradient
    penalty and one generator step. Every loss goes into the scalar stream (``report``);
    ``guard(step, what, loss, module)`` masks a non-finite update on the device; ``hold(decay)``
    freezes the EMA with it."""

    nets: Nets
    batches: Batches
    report: Callable
    balance: GanBalance
    guard: Callable
    factor: int
    n_critic: int
    lambda_gp: float
    ema_decay: float
    content_weight: float
    content_loss: str
    hold: Callable = float
    content_reference: torch.Tensor | None = None  # train.content_norm: per-variable divisors

    def pretrain(self, step: int) -> None:
        """A generator-only MSE step."""
        n = self.nets
        x, y = self.batches.next_on_device()
        loss_g = torch.nn.functional.mse_loss(n.G_fw(x), y)
        n.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.guard(step, "G", loss_g, n.G)
        n.opt_g.step()
        ema_update(n.G_ema, n.G, self.hold(self.ema_decay))
        self.report(tags.LOSS_G_MSE, loss_g)

    def adversarial(self, step: int) -> None:
        """``n_critic`` critic steps, then one generator step."""
        n, f = self.nets, self.factor
        for _ in range(self.n_critic):
            x, y = self.batches.next_on_device()
            up = upsample(x, f)
            with torch.no_grad():
                fake = n.G_fw(x)
            s_real, s_fake = n.D_fw(y, up), n.D_fw(fake, up)
            gp = gradient_penalty(n.D_fw, y, fake, up)
            loss_d = critic_loss(s_real, s_fake) + self.lambda_gp * gp
            n.opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            self.guard(step, "D", loss_d, n.D)
            self.balance.update(s_real, s_fake)
            self.balance.update_grad_norm("D", n.D.parameters())
            n.opt_d.step()
        self.report(tags.LOSS_D, loss_d)  # the last critic step of this step
        self.report(tags.LOSS_GP, gp)
        x, y = self.batches.next_on_device()
        fake = n.G_fw(x)
        adv = generator_loss(n.D_fw(fake, upsample(x, f)))
        loss_g = adv
        if self.content_weight > 0:
            content = content_loss(fake, y, self.content_loss, self.content_reference)
            loss_g = adv + self.content_weight * content
            self.report(tags.LOSS_G_CONTENT, content)
        n.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.guard(step, "G", loss_g, n.G)
        self.balance.update_grad_norm("G", n.G.parameters())
        n.opt_g.step()
        ema_update(n.G_ema, n.G, self.hold(self.ema_decay))
        self.report(tags.LOSS_G, adv)
        self.report(tags.LOSS_MSE, torch.nn.functional.mse_loss(fake.detach(), y))


def restore(state: dict, nets: Nets, stream: BatchStream, info) -> None:
    """Networks, optimizers, data order and this rank's RNG streams from a checkpoint."""
    nets.load_state_dict(state)
    stream.load(state["data"])
    if len(state["rng"]) != info.world:
        raise common.RunError(
            f"the checkpoint was written by {len(state['rng'])} ranks; this run has {info.world}"
        )
    common.set_rng_state(state["rng"][info.rank])


def snapshot_meta(run_dir: Path, data_dir, scaler, probes: Probes, diag: Diagnostics) -> dict:
    """What videos and notebooks need to read the GAN's snapshots."""
    return diag.snapshot_meta() | {
        "kind": "gan",
        "variables": probes.variables,
        "radii_km": probes.radii,
        "clim": probes.clim,
        "diff_lim": 0.25,
        "run_name": run_dir.name,
        "overrides": _overrides(run_dir),
        "probe_windows": [list(w) for w in probes.windows],  # (time index, r0, lat0, lon0)
        "data_dir": str(data_dir),
        "scaling": scaler.to_dict(),
    }


def train(cfg: DictConfig, out_dir: str | Path, overrides: list[str] | None = None) -> dict:
    """Train the GAN into ``out_dir`` (or continue the run named by ``cfg.resume``); a signal
    from the very start (data generation included) ends it saved, with exit code 75."""
    with common.Preemption(str(cfg.preempt.signal)) as preempt:
        return _train(cfg, out_dir, overrides, preempt)


def _train(cfg: DictConfig, out_dir, overrides, preempt: common.Preemption) -> dict:
    """Train the GAN into ``out_dir`` (or continue the run named by ``cfg.resume``).

    Under ``torchrun`` every rank calls this; rank 0 alone writes events, snapshots and
    checkpoints. Returns a summary dict (also written to ``summary.json``).
    """
    check_config(cfg)
    torch.use_deterministic_algorithms(bool(cfg.deterministic))
    info, device = distributed.init(cfg.device)
    cfg, run_dir, lock = common.start_run(
        cfg, out_dir, "gan", mutable=GAN_RESUME_MUTABLE, overrides=overrides, is_main=info.is_main
    )
    data_dir, train_ds, probe_src, scaler, coords, _ = load_data(cfg, run_dir, write=info.is_main)
    common.seed_everything(int(cfg.seed) + info.rank)
    nets = make_nets(cfg, len(cfg.data.variables), device, info)
    stream = BatchStream(len(train_ds), int(cfg.train.batch_size), info, int(cfg.seed))
    start, state = common.resume_state(run_dir, device, GAN_CKPT_KEYS)
    if state:
        restore(state, nets, stream, info)
    # train.content_norm=trilinear: per-variable references (trilinear's content loss on fixed
    # training crops) that the adversarial phase's content loss divides each variable's loss by.
    ref_content = None
    if cfg.train.content_norm == "trilinear":
        ref_x, ref_y, _ = train_ds.probe_samples(256, seed=int(cfg.log.probe_seed) + 3)
        kind = cfg.train.content_loss
        ref_content = trilinear_reference(ref_x, ref_y, int(cfg.data.factor), kind).to(device)
        log.info("content reference (trilinear %s per variable): %s", kind, ref_content.tolist())

    n_steps, pretrain = int(cfg.train.steps), int(cfg.train.pretrain_steps)
    writer = Writer(run_dir, rank=info.rank, purge_step=start + 1 if start else None)
    common.tensorboard_layout(writer, cfg, ["G", "D"], gan=True, metrics=GAN_METRICS, start=start)
    models, optimizers = {"G": nets.G, "D": nets.D}, {"G": nets.opt_g, "D": nets.opt_d}
    diag = Diagnostics(
        models,
        optimizers,
        writer,
        cfg.diagnostics,
        periods={"physics": int(cfg.log.physics_every)},
        total_steps=n_steps,
    )
    diag.load_state_dict(state.get("extra", {}).get("diagnostics", {"step": start}))
    snaps = SnapshotWriter(run_dir, rank=info.rank)
    probes = make_probes(cfg, probe_src, coords, scaler, nets, writer, diag.scalars, snaps, device)
    snaps.write_meta(snapshot_meta(run_dir, data_dir, scaler, probes, diag))
    weight_imgs = (
        WeightImages(models, writer, deltas=bool(cfg.log.weight_deltas))
        if cfg.log.weight_images
        else None
    )
    monitor = HealthMonitor(
        cfg.health,
        writer if info.is_main else None,
        run_dir if info.is_main else None,
        total_steps=n_steps,
    )
    if "health" in state:
        monitor.load_state_dict(state["health"])
    batches = Batches(
        train_ds,
        stream,
        int(cfg.data.n_workers),
        int(cfg.data.prefetch),
        device=device,
        fixed_input=bool(cfg.train.fixed_input),
    )
    balance = GanBalance(diag.scalars)
    nonfinite = StepGuard({"G": (nets.G, nets.opt_g), "D": (nets.D, nets.opt_d)})  # after restore
    gan_step = GanStep(
        nets,
        batches,
        diag.report,
        balance,
        functools.partial(guard, nonfinite=nonfinite),
        factor=int(cfg.data.factor),
        n_critic=int(cfg.train.n_critic),
        lambda_gp=float(cfg.train.lambda_gp),
        ema_decay=float(cfg.train.ema_decay),
        content_weight=float(cfg.train.content_weight),
        content_loss=str(cfg.train.content_loss),
        hold=nonfinite.hold,
        content_reference=ref_content,
    )
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if cfg.amp == "bf16" and device.type == "cuda"
        else torch.autocast("cpu", enabled=False)
    )
    lr_g_adv = None if cfg.train.lr_g_adv is None else float(cfg.train.lr_g_adv)
    self_signal = cfg.preempt.self_signal_step
    preempt_agreed = distributed.LaggedAny(info)

    if probes.embedder is not None and start == 0:
        probes.write_embeddings(0)
    run = common.Outcome(start)
    if distributed.any_rank_true(preempt.requested, info):  # a signal during set-up
        run.preempted()
    pbar = tqdm(total=n_steps, initial=start, desc="train_gan", unit="step", disable=None if info.is_main else True)  # fmt: skip
    try:
        with run.guard(run_dir, info.is_main), diag:
            if start == 0:  # data sanity (health check "data") before any training step
                for tag, value in getattr(scaler, "health_scalars", {}).items():
                    diag.report(tag, value)
                diag.flush_scalars(0)
                monitor.update(0, diag.history)
                if distributed.any_rank_true(monitor.should_stop, info):
                    raise StopTraining(f"health check stopped the run: {monitor.stop_reason}")
            if start == 0:  # a step-0 frame: every video starts from the untrained model
                probes.snapshot(0, {}, diag.snapshot_arrays())
            for step in run.steps(n_steps):
                nets.G.train()
                nets.D.train()
                if step == cfg.train.fault.lr_spike_step:  # test-only fault (benchmarks/health.py)
                    for group in nets.opt_g.param_groups + nets.opt_d.param_groups:
                        group["lr"] *= float(cfg.train.fault.lr_spike_factor)
                with autocast:
                    if step <= pretrain:
                        gan_step.pretrain(step)
                        if step == pretrain and cfg.log.skill_regression:
                            nets.G_reg = copy.deepcopy(nets.G_eval).requires_grad_(False)
                            probes.G_reg = nets.G_reg
                    else:
                        if step == pretrain + 1 and lr_g_adv is not None:
                            for group in nets.opt_g.param_groups:  # pretraining's lr ends here
                                group["lr"] = lr_g_adv
                        gan_step.adversarial(step)
                pbar.update(1)
                periods = (int(cfg.log.slices_every), "physics", "scalars", int(cfg.snapshot.every))
                emb = probes.embedder is not None and probes.embedder.due(
                    step, last=step == n_steps
                )
                if emb or any(diag.due(p, step) for p in periods):
                    common.stop_if_nonfinite(nonfinite, run_dir, monitor)  # a write: read the flag

                # Probe writes, then the one scalar write of the step (health reads its history).
                if diag.due(int(cfg.log.slices_every), step):
                    probes.write_slices(step)
                    if weight_imgs is not None:
                        weight_imgs.write(step)
                if diag.due("physics", step):
                    probes.write_physics(step)
                    probes.write_skill(step)
                if probes.embedder is not None and probes.embedder.due(step, last=step == n_steps):
                    probes.write_embeddings(step)
                if diag.due("scalars", step):
                    # Diversity is cheap (a few generator passes on the probes): every write,
                    # so mode collapse shows within two writes.
                    draws = probes.generate(int(cfg.log.n_noise_draws))
                    balance.update_diversity(draws)
                    balance.update_range(draws)  # gan/outside_range: vs the scaled data's [0, 1]
                    diag.report(tags.STEPS_PER_S, run.steps_per_s())
                if diag.step(step):
                    with writer.cost("health"):
                        monitor.update(step, diag.history)
                    if distributed.any_rank_true(monitor.should_stop, info):
                        raise StopTraining(f"health check stopped the run: {monitor.stop_reason}")
                    losses = {k: v for k, v in diag.last.items() if k.startswith("loss/")}
                    pbar.set_postfix({k[5:]: f"{v:.3g}" for k, v in losses.items()})
                    log.info("%s", common.console_line(step, diag.last, run.steps_per_s()))
                if self_signal is not None and step == int(self_signal):
                    os.kill(os.getpid(), preempt.signum)  # tests: deliver the signal mid-run
                stop = preempt_agreed(preempt.requested)  # ranks agree one step late, no sync
                if stop or diag.due(int(cfg.checkpoint.every), step):
                    common.stop_if_nonfinite(nonfinite, run_dir, monitor)  # nothing bad is saved
                if diag.due(int(cfg.snapshot.every), step) or stop:
                    probes.snapshot(step, _latest(diag.history), diag.snapshot_arrays())
                if diag.due(int(cfg.checkpoint.every), step) or stop:
                    with writer.cost("checkpoints"):
                        save_checkpoint(cfg, run_dir, step, info, nets, stream, diag, monitor)
                if stop:
                    diag.keep_pending()  # the interval's sums are in the checkpoint
                    run.preempted()
                    common.log_preempted(preempt, step, run_dir, run.exit_code)
                    break
    finally:
        verdict = common.end_run(run, monitor=monitor, writer=writer, pbar=pbar, lock=lock)
        preempt_agreed.wait()
        distributed.cleanup(info)

    summary = run.summary(
        run_dir,
        preempt,
        health=verdict,
        skill=probes.last_skill,
        content_reference=None
        if ref_content is None
        else dict(zip(cfg.data.variables, ref_content.tolist(), strict=True)),
    )
    if info.is_main:
        common.write_summary(run_dir, summary)
    log.info("done: %s", {k: summary[k] for k in ("status", "step", "steps_per_s")})
    return summary


def _latest(history: dict) -> dict[str, float]:
    """The latest written loss/* and gan/* values (a snapshot's ``scalar/*`` arrays)."""
    return {t: v[-1][1] for t, v in history.items() if v and t.startswith(("loss/", "gan/"))}


def _overrides(run_dir: Path) -> list[str]:
    """The Hydra overrides that made this run (a resume keeps those of the original start)."""
    p = run_dir / ".hydra" / "overrides.yaml"
    now = (
        [str(o) for o in OmegaConf.load(p) if not str(o).startswith("resume=")]
        if p.is_file()
        else []
    )
    meta = run_dir / "snapshots" / "meta.json"
    if not now and meta.is_file():
        return list(json.loads(meta.read_text()).get("overrides", []))
    return now


@hydra.main(version_base="1.3", config_path="../conf/gan", config_name="train_gan")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    hc = HydraConfig.get()
    common.run_main(lambda: train(cfg, hc.runtime.output_dir, list(hc.overrides.task)))


if __name__ == "__main__":
    main()
