"""Train Brohan's climate autoencoder and log weight-map summary frames.

    python experiments/train_autoencoder.py +exp=small                 # CPU run, built-in data
    python experiments/train_autoencoder.py data=prmsl data.paths=[/data/prmsl.nc]
    python experiments/train_autoencoder.py resume=outputs/autoencoder/RUN
    tensorboard --logdir outputs

Read top to bottom: data (all bad input fails here, before any training), model and optimizer,
the fixed probe field, then the loop: one masked-MSE step on a random batch of fields, loss summed
on the device, and periodic writes (scalars, snapshots with the weights and the probe
reconstruction, Brohan summary frames and weight images, checkpoints). At the end the validation
error is compared with that of the climatological mean and stored in ``metrics.json``.
"""

from __future__ import annotations

if __name__ == "__main__":  # first, before the heavy imports: a signal while starting is kept
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from experiments import early_signals

    early_signals.install()

import contextlib
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
from diagnostics.embeddings import EmbeddingLogger
from diagnostics.health import HealthMonitor, all_finite, named_grads, nonfinite_report
from diagnostics.hooks import probe_mode
from diagnostics.snapshots import SnapshotWriter
from diagnostics.weight_images import WeightImages
from diagnostics.weightmaps import context_from_arrays, render_summary_frame
from diagnostics.writer import Writer
from experiments import common
from experiments.data.climate import ClimateData, load_climate
from experiments.models.autoencoder import DenseAutoencoder, make_optimizer, masked_mse

log = logging.getLogger("train_autoencoder")

common.register_resolvers()


class StopTraining(RuntimeError):
    """Raised when the non-finite guard or a health check with policy ``stop`` ends the run."""


def check_config(cfg: DictConfig) -> None:
    """Semantic checks Hydra cannot express; fail before touching data."""
    t = cfg.train
    if int(t.n_epochs) < 1 or int(t.steps_per_epoch) < 1 or int(t.batch_size) < 1:
        raise ValueError("train.n_epochs, train.steps_per_epoch and train.batch_size must be >= 1")
    for key in ("log.every", "snapshot.every", "frames.every", "checkpoint.every"):
        if int(OmegaConf.select(cfg, key)) < 1:
            raise ValueError(f"{key} must be >= 1")
    if cfg.frames.quantity not in ("bias", "norm"):
        raise ValueError(f"frames.quantity must be 'bias' or 'norm', got {cfg.frames.quantity!r}")


def load_data(cfg: DictConfig) -> ClimateData:
    """The fields named by ``cfg.data``; wrong paths or variables raise here, naming them."""
    d = cfg.data
    if OmegaConf.is_missing(d, "paths"):
        raise ValueError(
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
        raise ValueError(
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


def make_diagnostics(cfg: DictConfig, model, opt, writer: Writer, start: int) -> Diagnostics | None:
    """The diagnostics core (activation, weight and gradient statistics); None when not configured."""
    if cfg.get("diagnostics") is None:
        return None
    return Diagnostics(
        models={"AE": model},
        optimizers={"AE": opt},
        writer=writer,
        cfg=cfg.diagnostics,
        start_step=start,
    )


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
    common.check_seed(cfg.seed)
    common.check_device(cfg.device)
    common.set_threads(cfg.threads)
    cfg, run_dir, lock = common.open_run(
        cfg, out_dir, "autoencoder", mutable=AE_RESUME_MUTABLE, overrides=overrides
    )
    common.write_summary(run_dir, {"status": "running", "pid": os.getpid()})
    device = resolve_device(cfg.device)
    data = load_data(cfg)
    h, w = data.shape
    n_field = h * w
    weight = data.mask.reshape(-1).float().to(device)  # loss weight: 0 where the data are missing
    x_train = data.train.reshape(-1, n_field).to(device)
    x_val = data.val.reshape(-1, n_field).to(device)

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
    history: dict[str, list] = {"steps": [], "train": [], "val": []}

    start, extra = 0, {}
    found = common.load_latest_checkpoint(run_dir, map_location=device, required=AE_CKPT_KEYS)
    if found is not None:
        ckpt, state = found
        extra = state.get("extra", {})
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sampler.set_state(state["sampler"])
        common.set_rng_state(state["rng"])
        history = {
            k: [float(v) if k != "steps" else int(v) for v in state["history"][k].tolist()]
            for k in history
        }
        start = int(state["step"])
        log.info("resuming from %s at step %d", ckpt, start)
    (run_dir / "normalisation.json").write_text(
        json.dumps(
            {
                "variable": data.variable,
                "units": data.units,
                **data.normaliser.to_dict(),
                "source": data.norm_source,  # fitted from the training fields, or configured
                "formula": "(x - offset) / scale",
                "fill": data.fill,
            },
            indent=2,
        )
    )

    probe = x_val[int(cfg.probe_index)].unsqueeze(0)  # (1, F): the fixed validation field
    keys = {n: f"weights/AE/{n}" for n, _ in model.named_parameters()}
    meta = {
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
    writer = Writer(run_dir, purge_step=start + 1 if start else None)
    weight_imgs = (
        WeightImages({"AE": model}, writer, deltas=bool(cfg.frames.weight_deltas))
        if cfg.frames.weight_images
        else None
    )
    diag = make_diagnostics(cfg, model, opt, writer, start)
    if diag is not None:
        meta |= diag.snapshot_meta()
    snaps = SnapshotWriter(run_dir)
    snaps.write_meta(meta)

    def state_arrays(step: int, loss_train: float, loss_val: float) -> dict[str, np.ndarray]:
        with probe_mode(model):
            recon = model(probe)
        arrays = {keys[n]: p.detach().cpu().numpy() for n, p in model.named_parameters()}
        arrays["probe/field"] = probe.reshape(h, w).cpu().numpy()
        arrays["probe/recon"] = recon.reshape(h, w).cpu().numpy()
        arrays["scalar/loss/train"] = np.float64(loss_train)
        arrays["scalar/loss/val"] = np.float64(loss_val)
        arrays["step"] = np.int64(step)
        return arrays

    def write_frame(step: int, arrays: dict) -> None:
        with writer.cost("frames"):
            ctx = context_from_arrays(
                meta,
                arrays,
                quantity=str(cfg.frames.quantity),
                loss_steps=history["steps"],
                loss_train=history["train"],
                loss_val=history["val"],
                total_steps=n_steps,
            )
            writer.image("frames/AE/summary", render_summary_frame(ctx, arrays), step)
        if weight_imgs is not None:
            weight_imgs.write(step)

    def checkpoint(step: int) -> None:
        common.save_checkpoint(
            run_dir / "checkpoints",
            step,
            {
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "sampler": sampler.get_state(),
                "rng": common.rng_state(),
                "step": step,
                "history": {k: torch.tensor(v, dtype=torch.float64) for k, v in history.items()},
                # Named extra states: the interval sums (a resume mid-interval logs the same
                # means as a straight run); other features add theirs here.
                "extra": {
                    "meter": {"loss": loss_sum, "n": n_sum, "snap": snap_sum, "n_snap": n_snap}
                },
            },
            n_keep=int(cfg.checkpoint.n_keep),
        )

    def record(step: int, loss_train: torch.Tensor) -> dict:
        """Validation loss, history, scalars and a snapshot at ``step`` (one host copy each)."""
        with writer.cost("snapshots"):
            loss_val = evaluate(model, x_val, weight)
            tr, va = (float(v) for v in torch.stack([loss_train.detach(), loss_val]).cpu().tolist())
            history["steps"].append(step)
            history["train"].append(tr)
            history["val"].append(va)
            writer.scalar("loss/AE/val", va, step)
            arrays = state_arrays(step, tr, va)
            if diag is not None:
                arrays |= diag.snapshot_arrays()
            snaps.write(step, arrays)
        return arrays

    # Embeddings: the hidden-layer code of every validation field, thumbnails = the fields.
    embedder = EmbeddingLogger(writer, run_dir, "AE", cfg.embed) if cfg.embed.enabled else None

    def write_embeddings(step: int) -> None:
        with probe_mode(model):
            codes = model.encode(x_val)
        thumbs = x_val.reshape(-1, h, w).clone()
        thumbs[:, ~data.mask.to(device)] = float("nan")  # missing points show as grey, not as fill
        embedder.log(
            step,
            codes,
            thumbs,
            coords={
                "val_index": np.arange(len(x_val)),
                "time": np.asarray(data.val_times, dtype=str),
            },
            attrs={
                "source": "autoencoder hidden layer (encoder + activation)",
                "thumbnail": "input field, normalised",
            },
        )

    if start == 0:
        arrays = record(0, evaluate(model, x_train, weight))  # the untrained state opens the video
        write_frame(0, arrays)
        if embedder is not None:
            write_embeddings(0)

    monitor = HealthMonitor(cfg.health, writer, run_dir, total_steps=n_steps)
    B, log_every = int(cfg.train.batch_size), int(cfg.log.every)
    loss_sum, n_sum = torch.zeros((), device=device), 0  # since the last log write
    snap_sum, n_snap = torch.zeros((), device=device), 0  # since the last snapshot
    if "meter" in extra:
        m = extra["meter"]
        loss_sum, n_sum, snap_sum, n_snap = m["loss"], int(m["n"]), m["snap"], int(m["n_snap"])
    t0, step, status = time.perf_counter(), start, "completed"
    exit_code, early = 0, preempt.requested  # a signal during set-up: nothing new to save
    if early:
        status, exit_code = "preempted", common.EXIT_PREEMPTED
    pbar = tqdm(total=n_steps, initial=start, desc="train_autoencoder", unit="step", disable=None)
    try:
        with diag if diag is not None else contextlib.nullcontext():
            model.train()
            for step in range(start + 1, n_steps + 1 if not early else start + 1):
                idx = torch.randint(x_train.shape[0], (B,), generator=sampler).to(device)
                x = x_train[idx]
                loss = masked_mse(model(x), x, weight)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                # The one deliberate host sync of the step: a non-finite update is never applied.
                if not bool(all_finite(loss, model.parameters())):
                    msg = nonfinite_report({"loss/AE": loss, **named_grads(model, "AE")}, step=step)
                    msg += f" Last good checkpoint: {common.latest_checkpoint(run_dir)}"
                    monitor.report_nonfinite(step, msg)
                    raise StopTraining(msg)
                opt.step()
                if diag is not None:
                    diag.step(step)
                loss_sum += loss.detach()
                snap_sum += loss.detach()
                n_sum += 1
                n_snap += 1
                pbar.update(1)

                if step % log_every == 0 or step == n_steps:
                    with writer.cost("scalars"):
                        writer.scalars(
                            {
                                "loss/AE/train": loss_sum / n_sum,
                                "perf/steps_per_s": (step - start) / (time.perf_counter() - t0),
                            },
                            step,
                        )
                    loss_sum, n_sum = torch.zeros((), device=device), 0
                    with writer.cost("health"):
                        monitor.update(step, diag.history if diag is not None else {})
                    if monitor.should_stop:
                        raise StopTraining(f"health check stopped the run: {monitor.stop_reason}")
                snap_now = step % int(cfg.snapshot.every) == 0 or step == n_steps
                frame_now = step % int(cfg.frames.every) == 0 or step == n_steps
                if snap_now or frame_now:
                    arrays = record(step, snap_sum / max(n_snap, 1))
                    snap_sum, n_snap = torch.zeros((), device=device), 0
                    pbar.set_postfix(
                        train=f"{history['train'][-1]:.3g}", val=f"{history['val'][-1]:.3g}"
                    )
                    if frame_now:
                        write_frame(step, arrays)
                if embedder is not None and embedder.due(step, last=step == n_steps):
                    write_embeddings(step)
                stop = preempt.requested
                if step % int(cfg.checkpoint.every) == 0 or step == n_steps or stop:
                    with writer.cost("checkpoints"):
                        checkpoint(step)
                if stop:
                    status, exit_code = "preempted", common.EXIT_PREEMPTED
                    log.warning(
                        "%s received: saved step %d in %s; exiting with code %d (rerun to resume)",
                        preempt.received_name,
                        step,
                        run_dir,
                        exit_code,
                    )
                    break
    except StopTraining:
        status, exit_code = "stopped", common.EXIT_STOPPED
        raise
    except BaseException:
        status, exit_code = "failed", 1
        raise
    finally:
        if status in ("stopped", "failed"):
            common.write_summary(run_dir, {"status": status, "exit_code": exit_code, "step": step})
        lock.release()
        pbar.close()
        verdict = monitor.finish(step)
        writer.text("run/status", f"{status} at step {step}", step)
        if diag is not None:
            log.info("diagnostics: %s", diag.summary())
        log.info("diagnostics cost:\n%s", writer.cost_report())
        writer.close()

    metrics = reconstruction_metrics(model, data, weight, device)
    metrics |= {
        "status": status,
        "exit_code": exit_code,
        "preempt": {"signal": preempt.received_name, "step": step}
        if status == "preempted"
        else None,
        "step": step,
        "run_dir": str(run_dir),
        "steps_per_s": (step - start) / max(time.perf_counter() - t0, 1e-9),
        "health": verdict,
    }
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    common.write_summary(run_dir, metrics)
    print(
        f"validation MSE (normalised): autoencoder {metrics['val_mse_autoencoder']:.4g}, "
        f"climatological mean {metrics['val_mse_climatology']:.4g}; RMS error "
        f"{metrics['val_rmse_autoencoder_phys']:.3g} vs {metrics['val_rmse_climatology_phys']:.3g} {data.units}"
    )
    return metrics


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
    common.run_main(
        lambda: train(cfg, hc.runtime.output_dir, list(hc.overrides.task)),
        bad_input=(ValueError, FileNotFoundError, KeyError),
        stopped=(StopTraining,),
    )


if __name__ == "__main__":
    main()
