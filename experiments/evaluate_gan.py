"""Evaluate a GAN run's checkpoint on every validation file against trilinear upsampling.

    python experiments/evaluate_gan.py outputs/gan/RUN                 # newest checkpoint
    python experiments/evaluate_gan.py outputs/gan/RUN --checkpoint RUN/checkpoints/ckpt_00000500.pt
    make evaluate RUN=outputs/gan/RUN

Loads the run's own ``config.yaml`` and scaling, tiles every validation file with non-overlapping
crops (plus one flush with the far edge where the crop does not divide the side; longitude wraps),
and compares the generator (its EMA when the run kept one), the MSE-pretrained regression copy
(when the run had pretraining) and trilinear upsampling of the same coarse input. Writes
``RUN/eval.json`` and prints the table. Bad input (no run, no checkpoint, a checkpoint of another
script) exits 2 and writes nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diagnostics.hooks import probe_mode
from diagnostics.skill import format_table, predict, skill_scalars, skill_stats, skill_table
from experiments import common

EXIT_BAD_INPUT = 2


class BadInput(ValueError):
    """The run or checkpoint cannot be evaluated (exit 2, nothing written)."""


def tile_starts(n: int, c: int, periodic: bool = False) -> list[int]:
    """Window starts that cover a side of ``n`` with crops of ``c`` (non-overlapping where possible)."""
    if periodic:
        return list(range(0, n, c))
    starts = list(range(0, n - c + 1, c))
    if starts[-1] + c < n:
        starts.append(n - c)
    return starts


def tile_windows(
    shape: tuple[int, ...], crop: tuple[int, int, int]
) -> list[tuple[int, int, int, int]]:
    """Every (t, r0, lat0, lon0) tiling fields of shape (T, V, R, LAT, LON); lon is periodic."""
    n_t, _, n_r, n_lat, n_lon = shape
    return [
        (t, r0, la0, lo0)
        for t in range(n_t)
        for r0 in tile_starts(n_r, crop[0])
        for la0 in tile_starts(n_lat, crop[1])
        for lo0 in tile_starts(n_lon, crop[2], periodic=True)
    ]


def resolve(run_dir: Path, checkpoint: str | None) -> tuple[object, Path, dict]:
    """The run's config, the checkpoint path and its state; ``BadInput`` names what is wrong."""
    if not run_dir.is_dir():
        raise BadInput(f"{run_dir}: no such run directory")
    cfg_path = run_dir / "config.yaml"
    if not cfg_path.is_file():
        raise BadInput(
            f"{run_dir}: no config.yaml (not a run directory of experiments/train_gan.py)"
        )
    cfg = OmegaConf.load(cfg_path)
    if OmegaConf.select(cfg, "experiment") != "gan":
        raise BadInput(
            f"{cfg_path}: experiment={OmegaConf.select(cfg, 'experiment')!r}, "
            "expected 'gan' (a run of experiments/train_gan.py)"
        )
    if checkpoint is not None:
        path = Path(checkpoint)
        if not path.is_file():
            raise BadInput(f"--checkpoint {path}: no such file")
        try:
            state = common.load_checkpoint(path)
        except RuntimeError as e:
            raise BadInput(str(e)) from e
    else:
        found = common.load_latest_checkpoint(run_dir)
        if found is None:
            raise BadInput(f"{run_dir}: no complete checkpoint in {run_dir / 'checkpoints'}")
        path, state = found
    if not isinstance(state, dict) or not {"G", "D", "step"} <= set(state):
        keys = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise BadInput(
            f"{path}: not a checkpoint of experiments/train_gan.py (expected keys G, D, step; got {keys})"
        )
    return cfg, path, state


def evaluate(run_dir: str | Path, checkpoint: str | None = None, *, batch_size: int = 8) -> dict:
    """Evaluate and write ``RUN/eval.json``; returns its content. Raises ``BadInput``."""
    from experiments.data import mantle
    from experiments.models.gan3d import upsample
    from experiments.train_gan import build_models, load_data

    run_dir = Path(run_dir)
    cfg, path, state = resolve(run_dir, checkpoint)
    common.set_threads(cfg.threads)
    device = torch.device("cpu")
    try:
        _, train_ds, val_ds, _, _, (train_steps, val_steps) = load_data(cfg, run_dir, write=False)
    except (mantle.DataError, ValueError, FileNotFoundError) as e:
        raise BadInput(f"{run_dir}: the run's data cannot be loaded: {e}") from e
    if not val_steps:
        raise BadInput(f"{run_dir}: the run has no validation files (data.val_steps/val_fraction)")
    variables = list(cfg.data.variables)
    f = int(cfg.data.factor)
    G, _ = build_models(cfg, len(variables), device)
    which = "G_ema" if state.get("G_ema") is not None else "G"
    G.load_state_dict(state[which])
    models = {"generated": G}
    if state.get("G_regression") is not None:
        G_reg, _ = build_models(cfg, len(variables), device)
        G_reg.load_state_dict(state["G_regression"])
        models["regression"] = G_reg

    windows = tile_windows(val_ds.fields.shape, val_ds.crop)
    pairs = [val_ds.cut(*w) for w in windows]
    x = torch.stack([p[0] for p in pairs])
    truth = torch.stack([p[1] for p in pairs])
    preds = {}
    for name, model in models.items():
        with probe_mode(model, seed=int(cfg.log.probe_seed)):
            preds[name] = predict(model, x, batch_size, device)
    stats = skill_stats(truth, preds["generated"], upsample(x, f), preds.get("regression"))
    table = skill_table(variables, stats)
    scalars = {k: float(v) for k, v in skill_scalars(variables, stats).items()}
    out = {
        "run_dir": str(run_dir),
        "checkpoint": str(path),
        "step": int(state["step"]),
        "generator_weights": which,
        "val_steps": [int(s) for s in val_steps],
        "n_crops": len(windows),
        "crop": [int(c) for c in val_ds.crop],
        "factor": f,
        "units": "min-max scaled over the training files",
        "table": table,
        "skill": scalars,
        "table_text": format_table(variables, table),
    }
    if set(train_steps) & set(val_steps):
        out["warning"] = "validation files overlap the training files"
    (run_dir / "eval.json").write_text(json.dumps(out, indent=2))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", help="run directory of experiments/train_gan.py")
    p.add_argument("--checkpoint", default=None, help="a checkpoint file (default: the newest)")
    p.add_argument("--batch-size", type=int, default=8)
    args = p.parse_args(argv)
    try:
        out = evaluate(args.run, args.checkpoint, batch_size=args.batch_size)
    except BadInput as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(
        f"{out['run_dir']} step {out['step']} ({out['generator_weights']}), "
        f"{out['n_crops']} validation crops of files {out['val_steps']}: "
        f"mse_ratio {out['skill']['skill/mse_ratio']:.4g}"
    )
    print(out["table_text"])
    print(f"wrote {Path(out['run_dir']) / 'eval.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
