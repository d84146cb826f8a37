"""Train Brohan's climate autoencoder and log weight-map summary frames.

    python experiments/train_autoencoder.py +exp=small                 # CPU run, built-in data
    python experiments/train_autoencoder.py data=prmsl data.paths=[/data/prmsl.nc]
    python experiments/train_autoencoder.py resume=outputs/autoencoder/RUN
    tensorboard --logdir outputs

Read top to bottom: data (all bad input fails here, before any training), model and optimizer,
the fixed probe field, then the loop: one masked-MSE step on a random batch of fields, loss reported
into the scalar stream on the device, and periodic writes (scalars, snapshots with the weights and the probe
reconstruction, Brohan summary frames and weight images, checkpoints). At the end the validation
error is compared with that of the climatological mean and stored in ``summary.json``.
"""

from __future__ import annotations

if __name__ == "__main__":  # first, before the heavy imports: a signal while starting is kept
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from experiments import early_signals

    early_signals.install()

import logging
import sys
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
from diagnostics.health import HealthMonitor, StepGuard
from diagnostics.hooks import probe_mode
from diagnostics.layout import AE_METRICS
from diagnostics.snapshots import SnapshotWriter
from diagnostics.weight_images import WeightImages
from diagnostics.weightmaps import context_from_arrays, render_summary_frame
from diagnostics.writer import Writer
from experiments import common, schema
from experiments.data.climate import ClimateData, load_climate
from experiments.models.autoencoder import (
    ACTIVATIONS,
    OPTIMIZERS,
    DenseAutoencoder,
    make_optimizer,
    masked_mse,
)
from experiments.schema import ConfigError

log = logging.getLogger("train_autoencoder")

common.register_resolvers()


StopTraining = common.StopTraining  # the non-finite guard or a health check with policy stop


def check_config(cfg: DictConfig) -> None:
    """Types and ranges (``schema.AUTOENCODER``) and the values a schema cannot express; fail
    before touching data (``ConfigError``, exit 2)."""
    schema.check(cfg, schema.AUTOENCODER)
    if cfg.frames.quantity not in ("bias", "norm"):
        raise ConfigError(f"frames.quantity must be 'bias' or 'norm', got {cfg.frames.quantity!r}")
    for key, choices in (
        ("model.activation", ACTIVATIONS),
        ("model.out_activation", ACTIVATIONS),
        ("optim.name", OPTIMIZERS),
    ):
        v = str(OmegaConf.select(cfg, key))
        if (v.lower() if key == "optim.name" else v) not in choices:
            raise ConfigError(f"{key}={v!r}: choose from {sorted(choices)}")


def load_data(cfg: DictConfig) -> ClimateData:
    """The fields named by ``cfg.data``; wrong paths or variables raise here, naming them."""
    d = cfg.data
    if OmegaConf.is_missing(d, "paths"):
        raise ConfigError(
            "data.paths is not set: give the NetCDF files, e.g. data.paths=[/data/prmsl.nc]"
        )
    paths = [d.paths] if isinstance(d.paths, str) else list(d.paths)
    data = load_climate(
        paths,
        str(d.variable),
        offset=d.offset,
        scale=d.scale,
        val_every=int(d.val_every),
        sample_dim=d.get("sample_dim"),
    )
    if not 0 <= int(cfg.probe_index) < data.val.shape[0]:
        raise ConfigError(
            f"probe_index {cfg.probe_index} outside the {data.val.shape[0]} validation fields"
        )
    log.info(
        "data: %s %s, %d training / %d validation fields of %s, %d of %d points valid",
        d.variable,
        data.sources,
        data.train.shape[0],
        data.val.shape[0],
        list(data.shape),
        int(data.mask.sum()),
        data.mask.numel(),
    )
    return data


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when available, otherwise the named device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def evaluate(model: torch.nn.Module, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Masked MSE of the model on all of ``x`` (B, F), on the device; restores the training flag."""
    with probe_mode(model):
        return masked_mse(model(x), x, weight)


# ---------------------------------------------------------------------------------------- train
AE_RESUME_MUTABLE = ("train.n_epochs",)  # beyond common.RESUME_FREE; README "Resume"
AE_CKPT_KEYS = ("model", "optimizer", "sampler", "rng", "step", "history")


def train(cfg: DictConfig, out_dir: str | Path, overrides: list[str] | None = None) -> dict:
    """Train the autoencoder into ``out_dir`` (or continue the run named by ``cfg.resume``); a
    signal (``preempt.signal`` or SIGTERM) from the very start ends it saved, exit code 75."""
    with common.Preemption(str(cfg.get("preempt", {}).get("signal", "SIGUSR2"))) as preempt:
        return _train(cfg, out_dir, overrides, preempt)


def _train(cfg: DictConfig, out_dir, overrides, preempt: common.Preemption) -> dict:
    check_config(cfg)
    common.check_device(cfg.device)
    cfg, run_dir, lock = common.start_run(
        cfg, out_dir, "autoencoder", mutable=AE_RESUME_MUTABLE, overrides=overrides
    )
    device = resolve_device(cfg.device)
    data = load_data(cfg)
    h, w = data.shape
    n_field = h * w
    weight = data.mask.reshape(-1).float().to(device)  # loss weight: 0 where the data are missing
    x_train = data.train.reshape(-1, n_field).to(device)
    x_val = data.val.reshape(-1, n_field).to(device)
    # skill/mse_ratio: validation MSE over climatology's (the training-mean field), as in the metrics
    clim_mse = float(masked_mse(x_train.mean(0).expand_as(x_val), x_val, weight))

    common.seed_everything(int(cfg.seed))
    model = DenseAutoencoder(
        n_field, int(cfg.model.n_hidden), str(cfg.model.activation), str(cfg.model.out_activation)
    ).to(device)
    opt = make_optimizer(
        str(cfg.optim.name),
        model.parameters(),
        lr=float(cfg.optim.lr),
        **OmegaConf.to_container(cfg.optim.kwargs),
    )
    sampler = torch.Generator().manual_seed(int(cfg.seed))
    n_steps = int(cfg.train.n_epochs) * int(cfg.train.steps_per_epoch)
    # The summary frames' loss curves: the stream's written means at each snapshot.
    history: dict[str, list] = {"steps": [], "train": [], "val": []}

    start, state = common.resume_state(run_dir, device, AE_CKPT_KEYS)
    if state:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sampler.set_state(state["sampler"])
        common.set_rng_state(state["rng"])
        history = {
            k: [float(v) if k != "steps" else int(v) for v in state["history"][k].tolist()]
            for k in history
        }
    common.write_normalisation(run_dir, normalisation(data))
    probe = x_val[int(cfg.probe_index)].unsqueeze(0)  # (1, F): the fixed validation field
    meta = snapshot_meta(cfg, data, model, n_steps)
    writer = Writer(run_dir, purge_step=start + 1 if start else None)
    common.tensorboard_layout(writer, cfg, ["AE"], gan=False, metrics=AE_METRICS, start=start)
    weight_imgs = (
        WeightImages({"AE": model}, writer, deltas=bool(cfg.frames.weight_deltas))
        if cfg.frames.weight_images
        else None
    )
    # The scalar stream and its cadence: loss/AE/val is reported at snapshots (and frames).
    diag = Diagnostics(
        {"AE": model},
        {"AE": opt},
        writer,
        cfg.get("diagnostics") or {"enabled": False},
        periods={"snapshot": int(cfg.snapshot.every), "frames": int(cfg.frames.every)},
        total_steps=n_steps,
    )
    diag.load_state_dict(state.get("extra", {}).get("diagnostics", {"step": start}))
    meta |= diag.snapshot_meta()
    snaps = SnapshotWriter(run_dir)
    snaps.write_meta(meta)
    embedder = EmbeddingLogger(writer, run_dir, "AE", cfg.embed) if cfg.embed.enabled else None
    frames = Frames(model, probe, (h, w), meta, cfg, history, n_steps, writer, weight_imgs)
    monitor = HealthMonitor(cfg.health, writer, run_dir, total_steps=n_steps)
    if "health" in state:
        monitor.load_state_dict(state["health"])
    B = int(cfg.train.batch_size)
    nonfinite = StepGuard({"AE": (model, opt)})  # after the optimizer state load

    if start == 0:  # the untrained state opens the curves and the video
        diag.report(tags.LOSS_AE_TRAIN, evaluate(model, x_train, weight))
        loss_val = evaluate(model, x_val, weight)
        diag.report(tags.LOSS_AE_VAL, loss_val)
        diag.report(tags.SKILL_MSE_RATIO, loss_val / max(clim_mse, 1e-30))
        diag.flush_scalars(0)
        frames.record(0, diag.last, snaps, diag.snapshot_arrays(), frame=True)
        if embedder is not None:
            write_embeddings(embedder, model, x_val, data, 0)
    run = common.Outcome(start)
    if preempt.requested:  # a signal during set-up: nothing new to save
        run.preempted()
    pbar = tqdm(total=n_steps, initial=start, desc="train_autoencoder", unit="step", disable=None)
    try:
        with run.guard(run_dir), diag:
            model.train()
            for step in run.steps(n_steps):
                idx = torch.randint(x_train.shape[0], (B,), generator=sampler)
                idx = idx.to(device, non_blocking=True)
                x = x_train[idx]
                loss = masked_mse(model(x), x, weight)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                # No host sync: a non-finite update is masked on the device; the verdict is read
                # at the next write, before any checkpoint (common.stop_if_nonfinite).
                nonfinite.check("AE", loss, step)
                opt.step()
                diag.report(tags.LOSS_AE_TRAIN, loss)
                pbar.update(1)

                snap_now, frame_now = diag.due("snapshot", step), diag.due("frames", step)
                stop = preempt.requested
                ckpt_now = diag.due(int(cfg.checkpoint.every), step) or stop
                emb = embedder is not None and embedder.due(step, last=step == n_steps)
                if snap_now or frame_now or ckpt_now or diag.due("scalars", step) or emb:
                    common.stop_if_nonfinite(nonfinite, run_dir, monitor)  # a write: read the flag
                if snap_now or frame_now:
                    with writer.cost("snapshots"):
                        loss_val = evaluate(model, x_val, weight)
                        diag.report(tags.LOSS_AE_VAL, loss_val)
                        diag.report(tags.SKILL_MSE_RATIO, loss_val / max(clim_mse, 1e-30))
                if diag.due("scalars", step):
                    diag.report(tags.STEPS_PER_S, run.steps_per_s())
                if diag.step(step):
                    log.info("%s", common.console_line(step, diag.last, run.steps_per_s()))
                    with writer.cost("health"):
                        monitor.update(step, diag.history)
                    if monitor.should_stop:
                        raise StopTraining(f"health check stopped the run: {monitor.stop_reason}")
                if snap_now or frame_now:
                    frames.record(step, diag.last, snaps, diag.snapshot_arrays(), frame=frame_now)
                    pbar.set_postfix(train=f"{history['train'][-1]:.3g}", val=f"{history['val'][-1]:.3g}")  # fmt: skip
                if embedder is not None and embedder.due(step, last=step == n_steps):
                    write_embeddings(embedder, model, x_val, data, step)
                if ckpt_now:
                    with writer.cost("checkpoints"):
                        ckpt = checkpoint_state(step, model, opt, sampler, history, diag, monitor)
                        common.save_checkpoint(
                            run_dir / "checkpoints", step, ckpt, n_keep=int(cfg.checkpoint.n_keep)
                        )
                if stop:
                    diag.keep_pending()  # the interval's sums are in the checkpoint
                    run.preempted()
                    common.log_preempted(preempt, step, run_dir, run.exit_code)
                    break
    finally:
        verdict = common.end_run(
            run, monitor=monitor, writer=writer, pbar=pbar, lock=lock, diag=diag
        )

    metrics = reconstruction_metrics(model, data, weight, device)
    summary = run.summary(run_dir, preempt, health=verdict) | metrics
    common.write_summary(run_dir, summary)
    print(
        f"validation MSE (normalised): autoencoder {metrics['val_mse_autoencoder']:.4g}, "
        f"climatological mean {metrics['val_mse_climatology']:.4g}; RMS error "
        f"{metrics['val_rmse_autoencoder_phys']:.3g} vs {metrics['val_rmse_climatology_phys']:.3g} {data.units}"
    )
    return summary


def normalisation(data: ClimateData) -> dict:
    """The content of ``normalisation.json``."""
    return {
        "variable": data.variable,
        "units": data.units,
        **data.normaliser.to_dict(),
        "source": data.norm_source,  # fitted from the training fields, or configured
        "formula": "(x - offset) / scale",
        "fill": data.fill,
    }


def snapshot_meta(cfg, data: ClimateData, model, n_steps: int) -> dict:
    """What videos and notebooks need to read the autoencoder's snapshots."""
    keys = {n: f"weights/AE/{n}" for n, _ in model.named_parameters()}
    return {
        "kind": "autoencoder",
        **data.meta(),
        "total_steps": n_steps,
        "n_hidden": int(cfg.model.n_hidden),
        "steps_per_epoch": int(cfg.train.steps_per_epoch),
        "probe_index": int(cfg.probe_index),
        "probe_label": data.val_times[int(cfg.probe_index)],
        "quantity": str(cfg.frames.quantity),
        "keys": {
            "enc_w": keys["encoder.weight"],
            "enc_b": keys["encoder.bias"],
            "dec_w": keys["decoder.weight"],
        },
    }


def checkpoint_state(step, model, opt, sampler, history, diag, monitor) -> dict:
    """What a checkpoint holds: weights, optimizer, sampler and RNG state, the frames' loss
    history, the stream (interval sums and history: a resume mid-interval writes the same
    means) and health."""
    return {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "sampler": sampler.get_state(),
        "rng": common.rng_state(),
        "step": step,
        "history": {k: torch.tensor(v, dtype=torch.float64) for k, v in history.items()},
        "extra": {"diagnostics": diag.state_dict()},  # named extra states; others add theirs
        "health": monitor.state_dict(),
    }


class Frames:
    """Snapshots (weights, probe reconstruction, losses) and Brohan summary frames."""

    def __init__(self, model, probe, shape, meta, cfg, history, n_steps, writer, weight_imgs):
        self.model, self.probe, self.shape, self.meta = model, probe, shape, meta
        self.quantity, self.history, self.n_steps = str(cfg.frames.quantity), history, n_steps
        self.writer, self.weight_imgs = writer, weight_imgs
        self.keys = {n: f"weights/AE/{n}" for n, _ in model.named_parameters()}

    def record(self, step: int, last: dict, snaps, act: dict, *, frame: bool) -> None:
        """A snapshot at ``step`` from the stream's just-written means; a frame if ``frame``."""
        tr, va = float(last[tags.LOSS_AE_TRAIN]), float(last[tags.LOSS_AE_VAL])
        self.history["steps"].append(step)
        self.history["train"].append(tr)
        self.history["val"].append(va)
        with self.writer.cost("snapshots"):
            with probe_mode(self.model):
                recon = self.model(self.probe)
            h, w = self.shape
            arrays = {self.keys[n]: p.detach().cpu().numpy() for n, p in self.model.named_parameters()}  # fmt: skip
            arrays["probe/field"] = self.probe.reshape(h, w).cpu().numpy()
            arrays["probe/recon"] = recon.reshape(h, w).cpu().numpy()
            arrays["scalar/loss/train"] = np.float64(tr)
            arrays["scalar/loss/val"] = np.float64(va)
            arrays["step"] = np.int64(step)
            snaps.write(step, arrays | act)
        if not frame:
            return
        with self.writer.cost("frames"):
            ctx = context_from_arrays(
                self.meta,
                arrays,
                quantity=self.quantity,
                loss_steps=self.history["steps"],
                loss_train=self.history["train"],
                loss_val=self.history["val"],
                total_steps=self.n_steps,
            )
            self.writer.image(tags.FRAME_AE, render_summary_frame(ctx, arrays), step)
        if self.weight_imgs is not None:
            self.weight_imgs.write(step)


def write_embeddings(embedder, model, x_val, data: ClimateData, step: int) -> None:
    """The hidden-layer code of every validation field, thumbnails = the fields."""
    h, w = data.shape
    with probe_mode(model):
        codes = model.encode(x_val)
    thumbs = x_val.reshape(-1, h, w).clone()
    thumbs[:, ~data.mask.to(x_val.device)] = float("nan")  # missing points show as grey, not fill
    embedder.log(
        step,
        codes,
        thumbs,
        coords={"val_index": np.arange(len(x_val)), "time": np.asarray(data.val_times, dtype=str)},
        attrs={
            "source": "autoencoder hidden layer (encoder + activation)",
            "thumbnail": "input field, normalised",
        },
    )


def reconstruction_metrics(model, data: ClimateData, weight: torch.Tensor, device) -> dict:
    """Validation MSE of the autoencoder and of the climatology (the training-mean field)."""
    n_field = weight.numel()
    x_val = data.val.reshape(-1, n_field).to(device)
    clim = data.train.reshape(-1, n_field).mean(0).to(device).expand_as(x_val)
    mse_ae = float(evaluate(model, x_val, weight))
    mse_clim = float(masked_mse(clim, x_val, weight))
    s = abs(data.normaliser.scale)
    return {
        "val_mse_autoencoder": mse_ae,
        "val_mse_climatology": mse_clim,
        "val_rmse_autoencoder_phys": mse_ae**0.5 * s,
        "val_rmse_climatology_phys": mse_clim**0.5 * s,
        "units": data.units,
        "beats_climatology": mse_ae < mse_clim,
    }


@hydra.main(version_base="1.3", config_path="../conf/autoencoder", config_name="train_autoencoder")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    hc = HydraConfig.get()
    common.run_main(lambda: train(cfg, hc.runtime.output_dir, list(hc.overrides.task)))


if __name__ == "__main__":
    main()
