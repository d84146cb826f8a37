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
from diagnostics.skill import log_skill, predict, summary_dict
from diagnostics.slices import physical_ranges, slice_panel, take_slices
from diagnostics.snapshots import SnapshotWriter
from diagnostics.spectra import log_spectra
from diagnostics.weight_images import WeightImages
from diagnostics.writer import Writer
from experiments import common, distributed
from experiments.data import mantle, plausibility
from experiments.losses import content_loss, critic_loss, generator_loss, gradient_penalty
from experiments.models.gan3d import Critic, Generator, ema_update, init_weights, upsample

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
    "log.n_skill",
    "snapshot.every",
    "checkpoint.every",
    "checkpoint.n_keep",
    "embed.every",
    "embed.n_items",
)
FLOAT_KEYS = (
    "train.lambda_gp",
    "train.lr_g",
    "train.lr_d",
    "train.ema_decay",
    "train.content_weight",
)


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
    if not 0.0 <= float(cfg.train.ema_decay) < 1.0:
        raise ValueError(f"train.ema_decay must be in [0, 1), got {cfg.train.ema_decay}")
    if cfg.train.content_loss not in ("mse", "l1"):
        raise ValueError(
            f"train.content_loss must be 'mse' or 'l1', got {cfg.train.content_loss!r}"
        )
    if cfg.data.train_steps is None and not 0 <= float(cfg.data.val_fraction) < 1:
        raise ValueError(
            f"data.val_fraction={cfg.data.val_fraction} leaves no training files (expected [0, 1))"
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
    if write:
        (run_dir / "scaling.json").write_text(json.dumps(scaler.to_dict(), indent=2))
    crop = tuple(int(c) for c in cfg.data.crop)
    f = int(cfg.data.factor)
    shape = (n_r - len(drop_r), n_lat, n_lon)
    if any(c > s for c, s in zip(crop, shape, strict=True)):
        raise ValueError(
            f"data.crop {list(crop)} is larger than the fields (r, lat, lon) = {list(shape)}"
        )
    lazy = cfg.data.lazy
    if lazy == "auto":
        n_bytes = mantle.dataset_bytes(len(paths), len(variables), shape)
        lazy = n_bytes > float(cfg.data.memory_gb) * 2**30
    elif not isinstance(lazy, bool):
        raise ValueError(f"data.lazy must be true, false or auto, got {lazy!r}")

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


class Batches:
    """Stacked (input, truth) batches of a dataset in BatchStream order.

    ``n_workers`` > 0 reads them in DataLoader worker processes, ``prefetch`` batches ahead each.
    The workers follow a copy of the stream taken at the first batch, so what they deliver is
    exactly what ``stream.next()`` names, and the stream itself (the checkpointed state) only
    advances as batches are consumed: resume stays exact with any number of workers.
    """

    def __init__(self, dataset, stream: BatchStream, n_workers: int = 0, prefetch: int = 2):
        if n_workers < 0 or prefetch < 1:
            raise ValueError(
                f"data.n_workers must be >= 0 and data.prefetch >= 1, got {n_workers}, {prefetch}"
            )
        self.dataset, self.stream, self.n_workers, self.prefetch = (
            dataset,
            stream,
            n_workers,
            prefetch,
        )
        self._it = None

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
    common.set_threads(cfg.threads)
    torch.use_deterministic_algorithms(bool(cfg.deterministic))
    common.check_seed(cfg.seed)
    info, device = distributed.init(cfg.device)
    cfg, run_dir, lock = common.open_run(
        cfg, out_dir, "gan", mutable=GAN_RESUME_MUTABLE, overrides=overrides, is_main=info.is_main
    )
    if info.is_main:
        common.write_summary(run_dir, {"status": "running", "pid": os.getpid()})
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
    # Generator EMA (used for probes, skill and evaluation) and the frozen MSE-pretrained copy
    # (the regression baseline of skill/*_regression), both plain copies of G.
    G_ema = copy.deepcopy(G).requires_grad_(False) if float(cfg.train.ema_decay) > 0 else None
    G_eval = G_ema if G_ema is not None else G
    G_reg = None
    # A resumed run gets the adversarial lr back from opt_g's saved param_groups.
    lr_g_adv = None if cfg.train.lr_g_adv is None else float(cfg.train.lr_g_adv)
    B = int(cfg.train.batch_size)
    stream = BatchStream(len(train_ds), B, info, int(cfg.seed))

    start, extra = 0, {}
    found = common.load_latest_checkpoint(run_dir, map_location=device, required=GAN_CKPT_KEYS)
    if found is not None:
        ckpt, state = found
        G.load_state_dict(state["G"])
        D.load_state_dict(state["D"])
        opt_g.load_state_dict(state["opt_G"])
        opt_d.load_state_dict(state["opt_D"])
        stream.load(state["data"])
        if G_ema is not None and "G_ema" in state:
            G_ema.load_state_dict(state["G_ema"])
        if state.get("G_regression") is not None:
            G_reg = copy.deepcopy(G).requires_grad_(False)
            G_reg.load_state_dict(state["G_regression"])
        rngs = state["rng"]
        if len(rngs) != info.world:
            raise ValueError(f"{ckpt} was written by {len(rngs)} ranks; this run has {info.world}")
        common.set_rng_state(rngs[info.rank])
        start = int(state["step"])
        extra = state.get("extra", {})
        log.info("resuming from %s at step %d", ckpt, start)

    # Fixed, seeded probe samples: the same crops (and the same noise) at every write.
    probe_x, probe_y, windows = probe_src.probe_samples(
        int(cfg.log.n_probe), seed=int(cfg.log.probe_seed)
    )
    probe_x, probe_y = probe_x.to(device), probe_y.to(device)
    r_mid = probe_y.shape[2] // 2
    radii = [float(coords["r"][w[1] + r_mid]) for w in windows]
    clim = {v: [0.0, 1.0] for v in variables}
    # Skill crops: fixed validation windows (files disjoint from training when val files exist).
    skill_x, skill_y, _ = probe_src.probe_samples(
        int(cfg.log.n_skill), seed=int(cfg.log.probe_seed) + 2
    )
    skill_y = skill_y.to(device)
    skill_up = upsample(skill_x.to(device), int(cfg.data.factor))
    last_skill: dict = {}  # min-max scaled: [0, 1] over the training set

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
    weight_imgs = (
        WeightImages({"G": G, "D": D}, writer, deltas=bool(cfg.log.weight_deltas))
        if cfg.log.weight_images
        else None
    )

    balance = GanBalance()
    if start and "balance" in extra:
        common.load_accumulator_state(balance, extra["balance"])
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
    if start and "meter" in extra:  # a resume mid-interval: the first means match a straight run
        common.load_accumulator_state(meter, extra["meter"])
    n_critic, lam, f = int(cfg.train.n_critic), float(cfg.train.lambda_gp), int(cfg.data.factor)
    n_steps = int(cfg.train.steps)
    fixed = None
    batches = Batches(train_ds, stream, int(cfg.data.n_workers), int(cfg.data.prefetch))

    def batch() -> tuple[torch.Tensor, torch.Tensor]:
        nonlocal fixed
        if cfg.train.fixed_input and fixed is not None:
            return fixed
        x, y = batches.next()
        out = x.to(device), y.to(device)
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
            distributed.barrier(info)  # rank 0's save is durable before any rank goes on or exits
            return
        state = {
            "G": G.state_dict(),
            "D": D.state_dict(),
            "opt_G": opt_g.state_dict(),
            "opt_D": opt_d.state_dict(),
            "data": stream.state(),
            "rng": rngs,
            "step": step,
            # Named extra states (interval accumulators; other features add theirs here).
            "extra": {
                "meter": common.accumulator_state(meter, "sums", "counts"),
                "balance": common.accumulator_state(balance, "_sums", "_counts"),
            },
            "health": monitor.state_dict(),
        }
        if G_ema is not None:
            state["G_ema"] = G_ema.state_dict()
        state["G_regression"] = None if G_reg is None else G_reg.state_dict()
        common.save_checkpoint(
            run_dir / "checkpoints", step, state, n_keep=int(cfg.checkpoint.n_keep)
        )
        distributed.barrier(info)

    def generate_probe(n_draws: int) -> torch.Tensor:
        """(K, B, V, ...) generator draws on the fixed probe inputs: the same noise every time."""
        with probe_mode(G_eval, seed=int(cfg.log.probe_seed)):
            return torch.stack([G_eval(probe_x) for _ in range(n_draws)])

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
        value_scalars = values.write(writer, step)
        values.reset()
        monitor.record(step, spec | value_scalars)

    def write_skill(step: int) -> None:
        """skill/* scalars and figure: generator (EMA if on) vs trilinear (and regression)."""
        nonlocal last_skill
        preds = []
        for model in (G_eval, G_reg):
            if model is None:
                preds.append(None)
                continue
            with probe_mode(model, seed=int(cfg.log.probe_seed)):
                preds.append(predict(model, skill_x, B, device))
        vals = log_skill(writer, step, variables, skill_y, preds[0], skill_up, preds[1])
        last_skill = summary_dict(step, variables, vals)
        monitor.record(step, vals)

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
                    s["input_up"][i],
                    s["fake"][i],
                    s["truth"][i],
                    variables,
                    radii[i],
                    clim,
                    scaling=physical_ranges(scaler.to_dict()),
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
    self_signal = cfg.preempt.self_signal_step
    early = distributed.any_rank_true(preempt.requested, info)  # a signal during set-up
    if early:
        status, exit_code = "preempted", common.EXIT_PREEMPTED
    try:
        with diag:
            if start == 0:  # a step-0 frame: every video starts from the untrained model
                with writer.cost("snapshots"):
                    snapshot(0)
            for step in range(start + 1, n_steps + 1 if not early else start + 1):
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
                        ema_update(G_ema, G, float(cfg.train.ema_decay))
                        meter.add("loss/G_mse", loss_g)
                        if step == int(cfg.train.pretrain_steps) and cfg.log.skill_regression:
                            G_reg = copy.deepcopy(G_eval).requires_grad_(False)
                    else:
                        if step == int(cfg.train.pretrain_steps) + 1 and lr_g_adv is not None:
                            for group in opt_g.param_groups:  # pretraining's lr ends here
                                group["lr"] = lr_g_adv
                        for _ in range(n_critic):
                            c = critic_step(*batch())
                        meter.add("loss/D", c["loss/D"])
                        meter.add("loss/gp", c["loss/gp"])
                        x, y = batch()
                        fake = G_fw(x)
                        adv = generator_loss(D_fw(fake, upsample(x, f)))
                        loss_g = adv
                        if float(cfg.train.content_weight) > 0:
                            content = content_loss(fake, y, cfg.train.content_loss)
                            loss_g = adv + float(cfg.train.content_weight) * content
                            meter.add("loss/G_content", content)
                        opt_g.zero_grad(set_to_none=True)
                        loss_g.backward()
                        guard(step, "G", loss_g, G)
                        balance.update_grad_norm("G", G.parameters())
                        opt_g.step()
                        ema_update(G_ema, G, float(cfg.train.ema_decay))
                        meter.add("loss/G", adv)
                        meter.add("loss/mse", torch.nn.functional.mse_loss(fake.detach(), y))
                diag.step(step)
                pbar.update(1)

                if step % int(cfg.log.slices_every) == 0 or step == n_steps:
                    write_slices(step)
                    if weight_imgs is not None:
                        weight_imgs.write(step)
                if step % int(cfg.log.physics_every) == 0 or step == n_steps:
                    write_physics(step)
                    write_skill(step)
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
    except BaseException:
        status, exit_code = "failed", 1
        raise
    finally:
        if info.is_main and status in ("stopped", "failed"):
            common.write_summary(run_dir, {"status": status, "exit_code": exit_code, "step": step})
        pbar.close()
        verdict = monitor.finish(step)
        writer.text("run/status", f"{status} at step {step}", step)
        log.info("diagnostics cost:\n%s", writer.cost_report())
        writer.close()
        distributed.cleanup(info)
        if lock is not None:
            lock.release()

    summary = {
        "status": status,
        "exit_code": exit_code,
        "step": step,
        "run_dir": str(run_dir),
        "steps_per_s": (step - start) / max(time.perf_counter() - t0, 1e-9),
        "health": verdict,
        "skill": last_skill,
        "preempt": {"signal": preempt.received_name, "step": step}
        if status == "preempted"
        else None,
    }
    if info.is_main:
        common.write_summary(run_dir, summary)
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

    hc = HydraConfig.get()
    common.run_main(
        lambda: train(cfg, hc.runtime.output_dir, list(hc.overrides.task)),
        bad_input=(mantle.DataError, ValueError, FileNotFoundError),
        stopped=(StopTraining,),
    )


if __name__ == "__main__":
    main()
