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

import json
import logging
import os
import sys
import time
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diagnostics.core import Diagnostics
from diagnostics.embeddings import EmbeddingLogger, layer_features
from diagnostics.gan import GanBalance, ValueDistribution
from diagnostics.health import HealthMonitor, all_finite, named_grads, nonfinite_report
from diagnostics.hooks import probe_mode
from diagnostics.slices import slice_panel, take_slices
from diagnostics.snapshots import SnapshotWriter
from diagnostics.spectra import log_spectra
from diagnostics.writer import Writer
from experiments import common, distributed
from experiments.data import mantle
from experiments.losses import critic_loss, generator_loss, gradient_penalty
from experiments.models.gan3d import Critic, Generator, init_weights, upsample

log = logging.getLogger("train_gan")

common.register_resolvers()


class StopTraining(RuntimeError):
    """Raised when a guard (non-finite values, a health check) stops the run."""


# ------------------------------------------------------------------------------------------ data
# Keys whose type a command-line override can get wrong (Hydra keeps "many" as a string).
INT_KEYS = (
    "seed",
    "threads",
    "data.factor",
    "train.steps",
    "train.batch_size",
    "train.n_critic",
    "train.pretrain_steps",
    "log.every",
    "log.slices_every",
    "log.physics_every",
    "log.n_probe",
    "log.n_noise_draws",
    "snapshot.every",
    "checkpoint.every",
    "checkpoint.n_keep",
    "embed.every",
    "embed.n_items",
)
FLOAT_KEYS = ("train.lambda_gp", "train.lr_g", "train.lr_d")


def check_config(cfg: DictConfig) -> None:
    """Types and values Hydra cannot check without a schema; fail before touching data."""
    bad = []
    for key, kind in [(k, int) for k in INT_KEYS] + [(k, float) for k in FLOAT_KEYS]:
        v = OmegaConf.select(cfg, key)
        ok = isinstance(v, int | float) and not isinstance(v, bool)
        if kind is int and ok:
            ok = float(v).is_integer()
        if not ok:
            bad.append(f"{key}={v!r} (expected {'an integer' if kind is int else 'a number'})")
        elif kind is int and key not in ("seed", "train.pretrain_steps") and v < 1:
            bad.append(f"{key}={v!r} (expected >= 1)")
    if bad:
        raise ValueError("bad config values: " + "; ".join(bad))
    f = int(cfg.data.factor)
    if f & (f - 1):
        raise ValueError(f"data.factor must be a power of two >= 1, got {f}")
    crop = list(cfg.data.crop)
    if len(crop) != 3 or any(not isinstance(c, int) or c % f for c in crop):
        raise ValueError(
            f"data.crop must be 3 integer sizes (r, lat, lon) divisible by data.factor={f}, got {crop}"
        )
    if cfg.amp not in ("none", "bf16"):
        raise ValueError(f"amp must be 'none' or 'bf16', got {cfg.amp!r}")


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


def _check_finite(data_dir: Path, steps: list[int], fields: np.ndarray) -> None:
    """NaN or Inf in a data file is bad input: name every such file before training."""
    bad = [s for s, f in zip(steps, fields, strict=True) if not np.isfinite(f).all()]
    if bad:
        names = ", ".join(str(Path(data_dir) / mantle.file_name(s)) for s in bad)
        raise mantle.DataError(
            f"{len(bad)} file(s) hold NaN or Inf values (expected finite fields): {names}"
        )


def load_data(cfg: DictConfig, run_dir: Path, *, write: bool = True):
    """Validate every file, load, scale (min/max from the training set) and build the datasets.

    Every bad file is reported in one ``DataError`` before any model is built.
    """
    if cfg.data.dir is None:
        presets = {"default": mantle.DEFAULT, "tiny": mantle.TINY}
        if cfg.data.builtin not in presets:
            raise ValueError(
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
    variables = list(cfg.data.variables)
    mantle.validate_files(data_dir, variables, train_steps + val_steps)
    drop_r = [int(i) for i in cfg.data.drop_r]
    train_fields = mantle.load_fields(data_dir, train_steps, variables, drop_r, validate=False)
    _check_finite(data_dir, train_steps, train_fields)
    coords = mantle.load_coords(data_dir, train_steps[0], drop_r)
    scaler = mantle.Scaler.fit(train_fields, variables)
    if write:
        (run_dir / "scaling.json").write_text(json.dumps(scaler.to_dict(), indent=2))
    crop = tuple(int(c) for c in cfg.data.crop)
    f = int(cfg.data.factor)
    shape = train_fields.shape[2:]
    if any(c > s for c, s in zip(crop, shape, strict=True)):
        raise ValueError(
            f"data.crop {list(crop)} is larger than the fields (r, lat, lon) = {list(shape)}"
        )
    train_ds = mantle.CropDataset(
        scaler.transform(train_fields),
        crop=crop,
        factor=f,
        roll=bool(cfg.data.roll),
        seed=int(cfg.seed),
    )
    probe_src = train_ds
    if val_steps:
        val_fields = mantle.load_fields(data_dir, val_steps, variables, drop_r, validate=False)
        _check_finite(data_dir, val_steps, val_fields)
        probe_src = mantle.CropDataset(
            scaler.transform(val_fields), crop=crop, factor=f, roll=False, seed=int(cfg.seed) + 1
        )
    log.info(
        "data: %s, %d training and %d validation files, fields (V, r, lat, lon) = %s",
        data_dir,
        len(train_steps),
        len(val_steps),
        list(train_fields.shape[1:]),
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


def host(tensors: dict[str, torch.Tensor]) -> dict[str, float]:
    """Device scalars to host floats in one transfer (write time only)."""
    if not tensors:
        return {}
    vals = torch.stack([t.detach().reshape(()).float() for t in tensors.values()]).cpu().tolist()
    return dict(zip(tensors, vals, strict=True))


class Meter:
    """Running sums of scalars on the device; read (one host copy) only at write time."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}

    def add(self, name: str, value: torch.Tensor) -> None:
        v = value.detach().float()
        self.sums[name] = self.sums[name] + v if name in self.sums else v.clone()
        self.counts[name] = self.counts.get(name, 0) + 1

    def means(self) -> dict[str, float]:
        """Interval means as host floats (one device-to-host copy) and reset."""
        out = host({k: s / self.counts[k] for k, s in self.sums.items()})
        self.sums, self.counts = {}, {}
        return out


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
            raise ValueError(
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


# ---------------------------------------------------------------------------------------- train
def train(cfg: DictConfig, out_dir: str | Path) -> dict:
    """Train the GAN into ``out_dir`` (or continue the run named by ``cfg.resume``).

    Under ``torchrun`` every rank calls this; rank 0 alone writes events, snapshots and
    checkpoints. Returns a summary dict (also written to ``summary.json``).
    """
    check_config(cfg)
    common.set_threads(cfg.threads)
    torch.use_deterministic_algorithms(bool(cfg.deterministic))
    info, device = distributed.init(cfg.device)
    run_dir = Path(cfg.resume) if cfg.resume else Path(out_dir)
    if cfg.resume and not (run_dir / "checkpoints").is_dir():
        raise FileNotFoundError(f"resume={cfg.resume}: no checkpoints/ directory in that run")
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    data_dir, train_ds, probe_src, scaler, coords, _ = load_data(cfg, run_dir, write=info.is_main)
    variables = list(cfg.data.variables)
    n_var = len(variables)

    common.seed_everything(int(cfg.seed) + info.rank)
    G, D = build_models(cfg, n_var, device)
    G_fw, D_fw = G, D  # what the loop calls: DDP wrappers under torchrun
    if info.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [device.index] if device.type == "cuda" else None
        G_fw, D_fw = DDP(G, device_ids=ids), DDP(D, device_ids=ids)
    betas = tuple(float(b) for b in cfg.train.betas)
    opt_g = torch.optim.Adam(G.parameters(), lr=float(cfg.train.lr_g), betas=betas)
    opt_d = torch.optim.Adam(D.parameters(), lr=float(cfg.train.lr_d), betas=betas)
    B = int(cfg.train.batch_size)
    stream = BatchStream(len(train_ds), B, info, int(cfg.seed))

    start = 0
    found = common.load_latest_checkpoint(run_dir, map_location=device)
    if found is not None:
        ckpt, state = found
        G.load_state_dict(state["G"])
        D.load_state_dict(state["D"])
        opt_g.load_state_dict(state["opt_G"])
        opt_d.load_state_dict(state["opt_D"])
        stream.load(state["data"])
        rngs = state["rng"]
        if len(rngs) != info.world:
            raise ValueError(f"{ckpt} was written by {len(rngs)} ranks; this run has {info.world}")
        common.set_rng_state(rngs[info.rank])
        start = int(state["step"])
        log.info("resuming from %s at step %d", ckpt, start)
    if info.is_main:
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg))

    # Fixed, seeded probe samples: the same crops (and the same noise) at every write.
    probe_x, probe_y, windows = probe_src.probe_samples(
        int(cfg.log.n_probe), seed=int(cfg.log.probe_seed)
    )
    probe_x, probe_y = probe_x.to(device), probe_y.to(device)
    r_mid = probe_y.shape[2] // 2
    radii = [float(coords["r"][w[1] + r_mid]) for w in windows]
    clim = {v: [0.0, 1.0] for v in variables}  # min-max scaled: [0, 1] over the training set

    writer = Writer(run_dir, rank=info.rank, purge_step=start + 1 if start else None)
    diag = Diagnostics(
        {"G": G, "D": D}, {"G": opt_g, "D": opt_d}, writer, cfg.diagnostics, start_step=start + 1
    )
    snaps = SnapshotWriter(run_dir, rank=info.rank)
    snaps.write_meta(
        diag.snapshot_meta()
        | {
            "kind": "gan",
            "variables": variables,
            "radii_km": radii,
            "clim": clim,
            "diff_lim": 0.25,
            "run_name": run_dir.name,
            "overrides": _overrides(run_dir),
            "probe_windows": [list(w) for w in windows],  # (time index, r0, lat0, lon0)
            "data_dir": str(data_dir),
            "scaling": scaler.to_dict(),
        }
    )

    # Embeddings: the critic's pooled features of fixed validation crops, thumbnails = slices.
    emb_x, emb_y, emb_windows = probe_src.probe_samples(
        int(cfg.embed.n_items), seed=int(cfg.log.probe_seed) + 1
    )
    embedder = EmbeddingLogger(writer, run_dir, "D", cfg.embed) if cfg.embed.enabled else None

    balance = GanBalance()
    values = ValueDistribution(variables, lo=-0.25, hi=1.25)  # scaled units: [0, 1] is the data
    monitor = HealthMonitor(
        cfg.health,
        writer if info.is_main else None,
        run_dir if info.is_main else None,
        total_steps=int(cfg.train.steps),
    )
    if found is not None and "health" in found[1]:
        monitor.load_state_dict(found[1]["health"])

    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if cfg.amp == "bf16" and device.type == "cuda"
        else torch.autocast("cpu", enabled=False)
    )
    meter = Meter()
    n_critic, lam, f = int(cfg.train.n_critic), float(cfg.train.lambda_gp), int(cfg.data.factor)
    n_steps = int(cfg.train.steps)
    fixed = None

    def batch() -> tuple[torch.Tensor, torch.Tensor]:
        nonlocal fixed
        if cfg.train.fixed_input and fixed is not None:
            return fixed
        xs, ys = zip(*(train_ds[i] for i in stream.next()), strict=True)
        out = torch.stack(xs).to(device), torch.stack(ys).to(device)
        if cfg.train.fixed_input:
            fixed = out
        return out

    def guard(step: int, what: str, loss: torch.Tensor, module: torch.nn.Module) -> None:
        # The one deliberate host sync per optimizer step (agreed across ranks): a non-finite
        # update is never applied, and every rank stops together.
        if distributed.all_ranks_true(all_finite(loss, module.parameters()), info):
            return
        msg = nonfinite_report({f"loss/{what}": loss, **named_grads(module, what)}, step=step)
        msg += f" Last good checkpoint: {common.latest_checkpoint(run_dir)}"
        monitor.report_nonfinite(step, msg)
        raise StopTraining(msg)

    def checkpoint(step: int) -> None:
        rngs = [common.rng_state()]
        if info.enabled:
            rngs = [None] * info.world
            torch.distributed.all_gather_object(rngs, common.rng_state())
        if not info.is_main:
            return
        state = {
            "G": G.state_dict(),
            "D": D.state_dict(),
            "opt_G": opt_g.state_dict(),
            "opt_D": opt_d.state_dict(),
            "data": stream.state(),
            "rng": rngs,
            "step": step,
            "health": monitor.state_dict(),
        }
        common.save_checkpoint(
            run_dir / "checkpoints", step, state, n_keep=int(cfg.checkpoint.n_keep)
        )

    def generate_probe(n_draws: int) -> torch.Tensor:
        """(K, B, V, ...) generator draws on the fixed probe inputs: the same noise every time."""
        with probe_mode(G, seed=int(cfg.log.probe_seed)):
            return torch.stack([G(probe_x) for _ in range(n_draws)])

    def probe_pass() -> dict[str, torch.Tensor]:
        fake = generate_probe(1)[0]
        up = upsample(probe_x, f)
        return {
            k: take_slices(v, r_mid).float()
            for k, v in {"input_up": up, "fake": fake, "truth": probe_y}.items()
        }

    def write_physics(step: int) -> None:
        """Spectra and value distributions of the fixed probe samples."""
        fake = generate_probe(1)[0]
        up = upsample(probe_x, f)
        spec = log_spectra(writer, step, variables, probe_y, fake, up)
        # The lat-lon planes of the same volumes as 2D fields (each radius one more sample).
        log_spectra(writer, step, variables, probe_y, fake, up, spatial_dims=2, tag="spectrum2d")
        values.update(probe_y, fake)
        extra = values.write(writer, step)
        values.reset()
        monitor.record(step, spec | extra)

    def write_embeddings(step: int) -> None:
        feats = []
        for i in range(0, len(emb_x), B):
            x, y = emb_x[i : i + B].to(device), emb_y[i : i + B].to(device)
            feats.append(layer_features(D, cfg.embed.layer, y, upsample(x, f)))
        thumbs = emb_y[
            :, 0, emb_y.shape[2] // 2
        ]  # (N, lat, lon): first variable at the middle radius
        w = np.asarray(emb_windows)
        embedder.log(
            step,
            torch.cat(feats),
            thumbs,
            coords={"time_index": w[:, 0], "r0": w[:, 1], "lat0": w[:, 2], "lon0": w[:, 3]},
            attrs={
                "source": f"critic layer {cfg.embed.layer!r}, mean-pooled",
                "thumbnail": f"{variables[0]} at the crop's middle radius",
            },
        )

    def write_slices(step: int) -> None:
        with writer.cost("slices"):
            s = {k: v.cpu().numpy() for k, v in probe_pass().items()}
            for i in range(len(probe_x)):
                img = slice_panel(
                    s["input_up"][i], s["fake"][i], s["truth"][i], variables, radii[i], clim
                )
                writer.image(f"slices/G/probe{i}", img, step)

    def snapshot(step: int) -> None:
        arrays = {f"probe/{k}": v for k, v in probe_pass().items()}
        arrays |= {f"weights/G/{n}": p for n, p in G.state_dict().items()}
        arrays |= {f"weights/D/{n}": p for n, p in D.state_dict().items()}
        arrays |= {f"scalar/{k}": v for k, v in last_scalars.items()}
        snaps.write(step, arrays | diag.snapshot_arrays())

    def critic_step(x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        up = upsample(x, f)
        with torch.no_grad():
            fake = G_fw(x)
        s_real, s_fake = D_fw(y, up), D_fw(fake, up)
        gp = gradient_penalty(D_fw, y, fake, up)
        loss_d = critic_loss(s_real, s_fake) + lam * gp
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        guard(step, "D", loss_d, D)
        balance.update(s_real, s_fake)
        balance.update_grad_norm("D", D.parameters())
        opt_d.step()
        return {"loss/D": loss_d, "loss/gp": gp}

    if embedder is not None and start == 0:
        write_embeddings(0)
    t0, step = time.perf_counter(), start
    status, exit_code = "completed", 0
    last_scalars: dict[str, float] = {}
    pbar = tqdm(
        total=n_steps,
        initial=start,
        desc="train_gan",
        unit="step",
        disable=None if info.is_main else True,
    )
    preempt = common.Preemption(str(cfg.preempt.signal))
    self_signal = cfg.preempt.self_signal_step
    try:
        with diag, preempt:
            for step in range(start + 1, n_steps + 1):
                G.train()
                D.train()
                with autocast:
                    if step <= int(cfg.train.pretrain_steps):
                        x, y = batch()
                        loss_g = torch.nn.functional.mse_loss(G_fw(x), y)
                        opt_g.zero_grad(set_to_none=True)
                        loss_g.backward()
                        guard(step, "G", loss_g, G)
                        opt_g.step()
                        meter.add("loss/G_mse", loss_g)
                    else:
                        for _ in range(n_critic):
                            c = critic_step(*batch())
                        meter.add("loss/D", c["loss/D"])
                        meter.add("loss/gp", c["loss/gp"])
                        x, y = batch()
                        fake = G_fw(x)
                        loss_g = generator_loss(D_fw(fake, upsample(x, f)))
                        opt_g.zero_grad(set_to_none=True)
                        loss_g.backward()
                        guard(step, "G", loss_g, G)
                        balance.update_grad_norm("G", G.parameters())
                        opt_g.step()
                        meter.add("loss/G", loss_g)
                        meter.add("loss/mse", torch.nn.functional.mse_loss(fake.detach(), y))
                diag.step(step)
                pbar.update(1)

                if step % int(cfg.log.slices_every) == 0 or step == n_steps:
                    write_slices(step)
                if step % int(cfg.log.physics_every) == 0 or step == n_steps:
                    write_physics(step)
                if embedder is not None and embedder.due(step, last=step == n_steps):
                    write_embeddings(step)
                if step % int(cfg.log.every) == 0 or step == n_steps:
                    with writer.cost("scalars"):
                        # Diversity is cheap (a few generator passes on the probes): every write,
                        # so mode collapse shows within two writes.
                        balance.update_diversity(generate_probe(int(cfg.log.n_noise_draws)))
                        vals = meter.means() | host(balance.compute())
                        balance.reset()
                        rate = (step - start) / (time.perf_counter() - t0)
                        writer.scalars(vals | {"perf/steps_per_s": rate}, step)
                    last_scalars.update(vals)
                    with writer.cost("health"):
                        monitor.record(step, vals)
                        monitor.update(step, diag.history)
                    if distributed.any_rank_true(monitor.should_stop, info):
                        raise StopTraining(f"health check stopped the run: {monitor.stop_reason}")
                    pbar.set_postfix(
                        {k[5:]: f"{v:.3g}" for k, v in vals.items() if k.startswith("loss/")}
                    )
                    log.info(
                        "step %d %s (%.2f steps/s)",
                        step,
                        " ".join(f"{k}={v:.4g}" for k, v in vals.items()),
                        rate,
                    )
                if self_signal is not None and step == int(self_signal):
                    os.kill(os.getpid(), preempt.signum)  # tests: deliver the signal mid-run
                stop = distributed.any_rank_true(preempt.requested, info)
                if step % int(cfg.snapshot.every) == 0 or step == n_steps or stop:
                    with writer.cost("snapshots"):
                        snapshot(step)
                if step % int(cfg.checkpoint.every) == 0 or step == n_steps or stop:
                    with writer.cost("checkpoints"):
                        checkpoint(step)
                if stop:
                    status, exit_code = "preempted", common.EXIT_PREEMPTED
                    log.warning(
                        "%s received: saved step %d in %s; exiting with code %d (rerun to resume)",
                        cfg.preempt.signal,
                        step,
                        run_dir,
                        exit_code,
                    )
                    break
    except StopTraining:
        status, exit_code = "stopped", 3
        raise
    finally:
        pbar.close()
        verdict = monitor.finish(step)
        writer.text("run/status", f"{status} at step {step}", step)
        log.info("diagnostics cost:\n%s", writer.cost_report())
        writer.close()
        distributed.cleanup(info)

    summary = {
        "status": status,
        "exit_code": exit_code,
        "step": step,
        "run_dir": str(run_dir),
        "steps_per_s": (step - start) / max(time.perf_counter() - t0, 1e-9),
        "health": verdict,
    }
    if info.is_main:
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    log.info("done: %s", summary)
    return summary


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

    try:
        summary = train(cfg, HydraConfig.get().runtime.output_dir)
    except StopTraining as e:
        log.error("%s", e)
        sys.exit(3)
    except (mantle.DataError, ValueError, FileNotFoundError) as e:
        log.error("%s", e)
        sys.exit(2)
    sys.exit(summary["exit_code"])


if __name__ == "__main__":
    main()
