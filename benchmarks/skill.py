"""Does the GAN super-resolve? ``+exp=cpu_skill`` for several seeds, each evaluated on every validation tile.

    python benchmarks/skill.py                      # 3 seeds, one after the other, 1 torch thread each
    python benchmarks/skill.py --jobs 3             # side by side (wall time then includes contention)
    python benchmarks/skill.py --runs DIR [DIR ...] # evaluate runs already trained with +exp=cpu_skill

Per run: wall and CPU seconds of the training process, then experiments/evaluate_gan.py's table
and the issue-12 criteria: (a) the MSE-pretrained (regression) generator beats trilinear MSE by
>= 10 % (mean over variables); (b) after adversarial training the GAN's high-k spectrum ratio is
in [0.8, 1.25] for every variable, with MSE <= 2x trilinear for every variable.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def train_runs(seeds: list[int], out_root: Path, jobs: int, extra: list[str]) -> dict[Path, dict]:
    """Train one run per seed (``jobs`` at a time); wall and CPU seconds per run from os.wait4."""
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    pending, running, done = list(seeds), {}, {}
    while pending or running:
        while pending and len(running) < jobs:
            s = pending.pop(0)
            run = out_root / f"seed{s}"
            cmd = [sys.executable, str(ROOT / "experiments" / "train_gan.py"), "+exp=cpu_skill"]
            cmd += [f"seed={s}", f"out_root={out_root}", f"run_name=seed{s}", "threads=1", *extra]
            log = open(out_root / f"seed{s}.log", "w")  # noqa: SIM115 - closed when the run ends
            p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
            running[p.pid] = (p, s, time.perf_counter(), log)
        pid, status, usage = os.wait4(-1, 0)
        if pid not in running:
            continue
        p, s, t0, log = running.pop(pid)
        log.close()
        run = out_root / "gan" / f"seed{s}"
        done[run] = {
            "seed": s,
            "rc": os.waitstatus_to_exitcode(status),
            "wall_s": time.perf_counter() - t0,
            "cpu_s": usage.ru_utime + usage.ru_stime,
        }
    return done


def criteria(ev: dict) -> dict:
    """The issue-12 checks from an eval.json dict."""
    t = ev["table"]
    variables = list(t["trilinear"])
    out: dict = {}
    if "regression" in t:
        r = {v: t["regression"][v]["mse"] / t["trilinear"][v]["mse"] for v in variables}
        out["regression_mse_ratio_per_var"] = r
        out["regression_mse_ratio"] = sum(r.values()) / len(r)
        out["regression_spectrum_high"] = {
            v: t["regression"][v]["spectrum_high"] for v in variables
        }
        out["a_regression_beats_trilinear_10pct"] = out["regression_mse_ratio"] <= 0.9
    g = {v: t["generated"][v]["mse"] / t["trilinear"][v]["mse"] for v in variables}
    hi = {v: t["generated"][v]["spectrum_high"] for v in variables}
    out["gan_mse_ratio"] = g
    out["gan_spectrum_high"] = hi
    out["trilinear_spectrum_high"] = {v: t["trilinear"][v]["spectrum_high"] for v in variables}
    out["b_spectrum_in_band"] = all(0.8 <= x <= 1.25 for x in hi.values())
    out["b_mse_at_most_2x"] = all(x <= 2.0 for x in g.values())
    return out


def passed(c: dict) -> bool:
    return all(v for k, v in c.items() if k[:2] in ("a_", "b_"))


def seed_table(rows: list[tuple[Path, dict, dict, dict]]) -> str:
    """One line per run and quantity: MSE / trilinear (GAN, regression) and high-k power ratio
    (GAN, regression, trilinear) per variable, then the run's times and verdicts."""
    if not rows:
        return "(no runs)"
    variables = list(rows[0][2]["gan_mse_ratio"])
    head = f"{'run':<14} {'quantity':<22}" + "".join(f"{v:>12}" for v in variables)
    lines = [head, "-" * len(head)]
    quantities = [
        ("MSE/tri GAN", "gan_mse_ratio"),
        ("MSE/tri regression", "regression_mse_ratio_per_var"),
        ("high-k GAN", "gan_spectrum_high"),
        ("high-k regression", "regression_spectrum_high"),
        ("high-k trilinear", "trilinear_spectrum_high"),
    ]
    for run, info, c, ev in rows:
        name = f"{run.parent.parent.name}/{run.name}"
        for label, key in quantities:
            if key in c:
                vals = "".join(f"{c[key][v]:>12.3f}" for v in variables)
                lines.append(f"{name:<14} {label:<22}{vals}")
        timing = (
            f"wall {info['wall_s']:.0f} s, CPU {info['cpu_s']:.0f} s"
            if "wall_s" in info
            else "times: not measured here (--runs)"
        )
        a = c.get("a_regression_beats_trilinear_10pct")
        lines.append(
            f"{name:<14} step {ev['step']}, {ev['n_crops']} crops, {timing}; "
            f"(a) regression/trilinear {c.get('regression_mse_ratio', float('nan')):.3f} "
            f"{'PASS' if a else 'FAIL'}; (b) band {'PASS' if c['b_spectrum_in_band'] else 'FAIL'}, "
            f"MSE<=2x {'PASS' if c['b_mse_at_most_2x'] else 'FAIL'}"
        )
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--out-root", default="outputs/bench_skill")
    p.add_argument(
        "--runs", nargs="+", default=None, help="evaluate these runs instead of training"
    )
    p.add_argument("overrides", nargs="*", help="extra Hydra overrides for train_gan.py")
    args = p.parse_args()
    import torch

    torch.set_num_threads(1)
    from experiments.evaluate_gan import evaluate

    load0 = os.getloadavg()
    t0 = time.perf_counter()
    if args.runs:
        runs = {Path(r): {} for r in args.runs}
    else:
        out_root = Path(args.out_root)
        out_root.mkdir(parents=True, exist_ok=True)
        runs = train_runs(args.seeds, out_root, args.jobs, args.overrides)
    runs = dict(sorted(runs.items(), key=lambda kv: str(kv[0])))  # seed order, not finish order
    load1 = os.getloadavg()
    setting = (
        f"torch threads 1 per process (OMP_NUM_THREADS=1, threads=1), {os.cpu_count()} cores seen, "
        f"jobs={args.jobs}, niceness {os.nice(0)}, load average (1/5/15 min) "
        f"{' '.join(f'{x:.1f}' for x in load0)} at start"
    )
    if not args.runs:
        setting += (
            f", {' '.join(f'{x:.1f}' for x in load1)} after training "
            f"({time.perf_counter() - t0:.0f} s wall for all runs)"
        )
    print(setting)
    if args.overrides:
        print(f"overrides: {' '.join(args.overrides)}")
    ok_all, rows = True, []
    for run, info in runs.items():
        if info.get("rc", 0) != 0:
            print(f"{run}: training exited {info['rc']}")
            ok_all = False
            continue
        ev = evaluate(run)
        c = criteria(ev)
        timing = (
            f" wall {info['wall_s']:.0f} s, CPU {info['cpu_s']:.0f} s" if "wall_s" in info else ""
        )
        print(f"\n== {run} (step {ev['step']}, {ev['n_crops']} validation crops){timing}")
        print(ev["table_text"])
        for k, v in c.items():
            if isinstance(v, dict):
                v = " ".join(f"{n}={x:.3g}" for n, x in v.items())
            print(f"  {k}: {v}")
        ok = passed(c)
        ok_all &= ok
        print(f"  all criteria: {'PASS' if ok else 'FAIL'}")
        rows.append((run, info, c, ev))
    print(f"\n== per-seed table ({setting})")
    print(seed_table(rows))
    print(
        f"\n(c) (a) and (b) for every run ({len(rows)} of {len(runs)} evaluated): "
        f"{'PASS' if ok_all else 'FAIL'}"
    )
    print(f"overall: {'PASS' if ok_all else 'FAIL'}")
    return 0 if ok_all else 1


if __name__ == "__main__":
    sys.exit(main())
