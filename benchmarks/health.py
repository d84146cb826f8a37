"""The bad-run zoo: real GAN training runs made to fail through config only, and when health flags them.

Each run is ``experiments.train_gan.train`` composed with ``+exp=small`` plus the zoo entry's overrides:

- ``healthy``: ``+exp=small`` as is (must raise no alert);
- ``lr_high``: both learning rates far too high;
- ``dead_relu``: ReLU with a large negative bias initialisation (most ReLUs dead from the start);
- ``critic_lr``: the critic's learning rate far above the generator's (1000x; ``critic_lr_100x``: 100x);
- ``no_noise``: the generator's noise removed and its input fixed (mode collapse).

Reported per run: the alerts that fired, the step each first fired, and that step as a fraction of the
run's planned steps; target: every bad run flagged in its first 25 %, the healthy run silent.

Where the training loop runs the :class:`diagnostics.health.HealthMonitor` (it writes ``RUN/health.json``),
its record is used. Otherwise (``--replay``, or no health.json) the run's scalar stream is read back
from the event file and replayed through a monitor write by write, which sees exactly the values the loop
wrote; a run stopped by the loop's own non-finite guard counts as a ``nonfinite`` alert at the step the
guard names. The table says which source each row used.

    python benchmarks/health.py                    # all runs, results in outputs/bench_health/
    python benchmarks/health.py --only healthy lr_high --steps 100
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from diagnostics.health import HealthMonitor  # noqa: E402

ZOO: dict[str, list[str]] = {
    "healthy": [],
    "lr_high": ["train.lr_g=0.1", "train.lr_d=0.1"],
    "dead_relu": ["model.act=relu", "model.init_bias=-5.0"],
    "critic_lr": ["train.lr_d=0.1"],
    "critic_lr_100x": ["train.lr_d=0.01"],
    "no_noise": ["model.g.noise=none", "train.fixed_input=true"],
}


def compose_cfg(overrides: list[str]):
    """``train_gan`` composed with ``+exp=small`` and ``overrides``, as Hydra's CLI would."""
    from hydra import compose, initialize_config_dir

    import experiments.train_gan  # noqa: F401  (registers the config's resolvers)

    with initialize_config_dir(config_dir=str(ROOT / "conf" / "gan"), version_base="1.3"):
        return compose(config_name="train_gan", overrides=["+exp=small", *overrides])


def probe_series_from_checkpoints(
    cfg, run_dir: Path, k: int = 4
) -> dict[str, list[tuple[int, float]]]:
    """``gan/diversity`` and ``spectrum/<var>/ratio_*`` at every kept checkpoint, on the fixed probes.

    Diversity from k noise draws of G on the same inputs; spectra of G's output against the truth. A
    stand-in for the loop's own ``GanBalance.update_diversity`` and ``log_spectra`` where the loop does
    not log them yet.
    """
    from diagnostics.gan import GanBalance
    from diagnostics.spectra import field_spectra, spectrum_scalars
    from experiments import common
    from experiments.train_gan import build_models, load_data

    probe_src = load_data(cfg, run_dir, write=False)[2]
    res = probe_src.probe_samples(int(cfg.log.n_probe), seed=int(cfg.log.probe_seed))
    if isinstance(res, tuple):
        x, y = res[0], res[1]
    else:
        x = torch.stack([p[0] for p in res["samples"]])
        y = torch.stack([p[1] for p in res["samples"]])
    variables = list(cfg.data.variables)
    G, _ = build_models(cfg, len(variables), torch.device("cpu"))
    out: dict[str, list[tuple[int, float]]] = {}
    for step, path in common.list_checkpoints(run_dir / "checkpoints"):
        G.load_state_dict(common.load_checkpoint(path)["G"])
        G.eval()
        bal = GanBalance()
        with torch.no_grad(), torch.random.fork_rng():
            torch.manual_seed(int(cfg.log.probe_seed))
            draws = torch.stack([G(x) for _ in range(k)])
            bal.update_diversity(draws)
            _, spectra = field_spectra({"truth": y, "generated": draws[0]}, spatial_dims=3)
            vals = {
                "gan/diversity": bal.compute()["gan/diversity"],
                **spectrum_scalars(variables, spectra),
            }
        for tag, v in vals.items():
            out.setdefault(tag, []).append((step, float(v)))
    return out


def replay(
    run_dir: Path, total_steps: int, health_cfg, extra: dict | None = None
) -> tuple[HealthMonitor, dict[str, int]]:
    """Feed the run's scalars, read back from its event file, through a monitor one write at a time."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    series = {t: [(e.step, float(e.value)) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}
    series = {t: v for t, v in series.items() if not t.startswith(("health/", "perf/"))}
    for t, v in (extra or {}).items():
        series.setdefault(t, v)
    steps = sorted({s for v in series.values() for s, _ in v})
    mon = HealthMonitor(health_cfg, None, None, total_steps=total_steps)
    first: dict[str, int] = {}
    history: dict[str, list[tuple[int, float]]] = {}
    for step in steps:
        for t, v in series.items():
            history[t] = [(s, x) for s, x in v if s <= step]
        for name, active in mon.update(step, history).items():
            if active:
                first.setdefault(name, step)
    return mon, first


def run_one(
    name: str, overrides: list[str], out_root: Path, steps: int | None, force_replay: bool
) -> dict:
    """Train one zoo entry and return its row of the report."""
    from omegaconf import OmegaConf, open_dict

    from experiments.train_gan import train

    # A checkpoint at every write, all kept, so diversity can be measured where the loop does not log it.
    ckpt = ["checkpoint.every=10", "checkpoint.n_keep=100000"]
    cfg = compose_cfg(overrides + ckpt + ([f"train.steps={steps}"] if steps else []))
    total = int(cfg.train.steps)
    health_cfg = OmegaConf.to_container(cfg.health, resolve=True) if "health" in cfg else None
    if health_cfg is not None:
        # Bad runs end at their first alert: the zoo measures when, not what follows.
        with open_dict(cfg):
            for check in cfg.health:
                if isinstance(cfg.health[check], dict) or OmegaConf.is_dict(cfg.health[check]):
                    cfg.health[check].policy = "stop"
    run_dir = out_root / name
    shutil.rmtree(run_dir, ignore_errors=True)
    t0 = time.perf_counter()
    error = ""
    try:
        out = train(cfg, run_dir)
        last = int(out.get("step", total))
    except Exception as e:  # noqa: BLE001 - a stopped or crashed run is a result, not a failure
        error = f"{type(e).__name__}: {e}"
        m = re.search(r"step (\d+)", str(e))
        last = int(m.group(1)) if m else -1
    seconds = time.perf_counter() - t0

    first: dict[str, int] = {}
    hj = run_dir / "health.json"
    if hj.is_file() and not force_replay:
        source = "monitor"
        for a in json.loads(hj.read_text())["alerts"]:
            first[a["check"]] = int(a["first_step"])
    else:
        source = "replay"
        extra = {}
        try:
            extra = probe_series_from_checkpoints(cfg, run_dir)
        except Exception as e:  # noqa: BLE001 - the loop's interface moves; report, do not hide
            print(
                f"{name}: probe statistics from checkpoints failed: {type(e).__name__}: {e}",
                flush=True,
            )
        _, first = replay(run_dir, total, health_cfg, extra)
        if error and "non-finite" in error and last >= 0:
            first.setdefault("nonfinite", last)
            source = "replay+guard"
    alerts = sorted(first.items(), key=lambda kv: kv[1])
    return {
        "run": name,
        "overrides": overrides,
        "total_steps": total,
        "last_step": last,
        "seconds": round(seconds, 1),
        "source": source,
        "alerts": [{"check": c, "step": s, "fraction": round(s / total, 3)} for c, s in alerts],
        "error": error[:300],
    }


def verdict(row: dict) -> str:
    """PASS/FAIL of a row against the target; ERROR when the run crashed instead of being stopped."""
    if row["error"] and not row["error"].startswith("StopTraining"):
        return "ERROR"
    if row["run"] == "healthy":
        return "PASS" if not row["alerts"] else "FAIL"
    return "PASS" if row["alerts"] and row["alerts"][0]["fraction"] <= 0.25 else "FAIL"


def main() -> None:
    """Run the zoo and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", choices=list(ZOO), help="subset of runs")
    ap.add_argument(
        "--steps", type=int, default=None, help="override train.steps (default: +exp=small's)"
    )
    ap.add_argument("--out", type=Path, default=ROOT / "outputs" / "bench_health")
    ap.add_argument(
        "--replay", action="store_true", help="always replay the event file, ignore health.json"
    )
    args = ap.parse_args()

    torch.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.only or list(ZOO):
        row = run_one(name, ZOO[name], args.out, args.steps, args.replay)
        row["verdict"] = verdict(row)
        rows.append(row)
        first = row["alerts"][0] if row["alerts"] else None
        print(
            f"{name:<10} {row['verdict']:<4} {row['source']:<12} "
            + (
                f"{first['check']} at step {first['step']}/{row['total_steps']} ({100 * first['fraction']:.0f} %)"
                if first
                else "no alert"
            )
            + f"  [{row['seconds']:.0f} s, last step {row['last_step']}]",
            flush=True,
        )
    (args.out / "zoo.json").write_text(json.dumps(rows, indent=2))
    print("\nrun        verdict source       alerts (check@step, fraction of run)")
    for r in rows:
        al = (
            ", ".join(
                f"{a['check']}@{a['step']} ({100 * a['fraction']:.0f} %)" for a in r["alerts"]
            )
            or "-"
        )
        print(f"{r['run']:<10} {r['verdict']:<7} {r['source']:<12} {al}")
    for r in rows:
        if r["error"]:
            print(f"{r['run']}: {r['error']}")
    print(f"threads: torch {torch.get_num_threads()}; results in {args.out / 'zoo.json'}")


if __name__ == "__main__":
    main()
