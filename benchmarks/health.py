"""The health zoo: labelled training runs, healthy and failing, and when the health monitor flags them.

Every GAN row is ``experiments.train_gan.train`` (``+exp=small`` at tiny sizes, ``BASE``) with the
row's config overrides; failures are induced by overrides only, or by the test-only fault keys
``train.fault.lr_spike_step`` / ``train.fault.lr_spike_factor`` (a learning-rate spike in mid-run) and
a data directory with garbage written into one radial layer (``garbage_data``). The BCE/DCGAN row
is a small 2D DCGAN written here (``dcgan2d``), because the 3D GAN is WGAN-GP only; it feeds the same
:class:`diagnostics.health.HealthMonitor` with the same ``gan/*`` tags, its loss declared ``bce``.

Each row is labelled ``healthy`` or ``failing`` (with the step of a mid-run onset where there is
one) and ``tune`` (looked at while choosing the thresholds in ``diagnostics.health.DEFAULTS``) or
``judge`` (not looked at before the thresholds were fixed). Every check runs with policy ``stop``:
a failing run ends at its first alert (the zoo measures when, not what follows).

Targets: a failing run's first alert within the first 25 % of the run (after a mid-run onset:
within 10 % of the run length after the onset, and none before it); no alert on a healthy run.
Printed: each run's first alert as a share of the run (of the steps after the onset), and the
confusion table.

    nice -n 5 python benchmarks/health.py                  # the whole zoo, 2 runs at a time
    python benchmarks/health.py --only healthy_s0 g_blowup --jobs 1
    python benchmarks/health.py --worker g_blowup --out DIR  # one row (what the pool runs)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from experiments.presets import GAN_TINY as _TINY  # noqa: E402

# Tiny sizes (experiments.presets.GAN_TINY) and a light logging schedule: a write every 10 steps,
# skill and spectra every 20, no images beyond what the checks read.
BASE = [
    *_TINY,
    "log.physics_every=20",
    "log.slices_every=100000",
    "log.weight_images=false",
    "log.n_skill=8",
    "embed.enabled=false",
    "snapshot.every=100000",
    "checkpoint.every=100000",
    "diagnostics.every=10",
    "diagnostics.image_every=100000",
]
# A skilful run: MSE pretraining, then an adversarial phase held by a content loss (as +exp=cpu_skill).
SKILLED = [
    "train.pretrain_steps=100",
    "train.lr_g=1.0e-3",
    "train.lr_g_adv=2.0e-5",
    "train.lr_d=2.0e-4",
    "train.content_weight=10000.0",
    "train.ema_decay=0.99",
]


# The 1000-step rows write every 20 steps (skill and spectra every 40) to fit the machine.
LONG = ["log.physics_every=40", "diagnostics.every=20"]


@dataclass
class Entry:
    label: str  # healthy | failing
    role: str  # tune | judge
    overrides: list[str] = field(default_factory=list)
    steps: int = 200
    onset: int | None = None  # step a mid-run failure starts
    kind: str = "gan"  # gan | dcgan2d
    note: str = ""


ZOO: dict[str, Entry] = {
    # healthy
    "healthy_s0": Entry("healthy", "tune", SKILLED, 300, note="skilful recipe, seed 0"),
    "healthy_long_s1": Entry(
        "healthy", "judge", [*SKILLED, *LONG, "seed=1"], 1000, note="1000 steps, seed 1, lr_d 2e-4"
    ),
    "healthy_long_s2": Entry(
        "healthy",
        "judge",
        [
            *SKILLED,
            *LONG,
            "seed=2",
            "train.lr_g=5.0e-4",
            "train.lr_d=1.0e-4",
            "train.pretrain_steps=200",
        ],
        1000,
        note="1000 steps, seed 2, lr_g 5e-4, lr_d 1e-4",
    ),
    "healthy_lr_g3e-4": Entry(
        "healthy",
        "judge",
        [*SKILLED, "seed=3", "train.lr_g=3.0e-4"],
        300,
        note="lr_g 3e-4 (issue: was told to restart)",
    ),
    # failing: the cases
    "g_blowup": Entry(
        "failing", "tune", ["train.lr_g=0.03"], note="generator lr 0.03: values leave the range"
    ),
    "no_skill": Entry(
        "failing",
        "judge",
        [],
        note="plain WGAN-GP of +exp=small: worse than trilinear and getting worse",
    ),
    "critic_osc": Entry(
        "failing",
        "tune",
        ["train.lambda_gp=0.0", "train.lr_d=0.01", "train.betas=[0.9,0.999]"],
        note="no gradient penalty, fast critic: scores swing",
    ),
    "lr_spike": Entry(
        "failing",
        "judge",
        [*SKILLED, "train.fault.lr_spike_step=200", "train.fault.lr_spike_factor=1000.0"],
        400,
        onset=200,
        note="skilful run, both lrs x1000 at step 200",
    ),
    "garbage_data": Entry(
        "failing",
        "judge",
        [*SKILLED, "data.check=warn"],
        note="one radial layer of one training file holds 1e20..1e30 (data.check=warn)",
    ),
    "dcgan_d_wins": Entry(
        "failing",
        "tune",
        ["lr_d=2e-3", "lr_g=1e-5", "d_steps=3"],
        300,
        kind="dcgan2d",
        note="2D DCGAN, BCE: discriminator wins",
    ),
    # failing: the earlier zoo
    "lr_high": Entry("failing", "tune", ["train.lr_g=0.1", "train.lr_d=0.1"]),
    "dead_relu": Entry("failing", "judge", ["model.act=relu", "model.init_bias=-5.0"]),
    "critic_lr": Entry("failing", "tune", ["train.lr_d=0.1"]),
    "critic_lr_100x": Entry("failing", "judge", ["train.lr_d=0.01", "train.lr_g=1.0e-4"]),
    # first zoo run: with SKILLED's 100 pretraining steps the alert came at 120 (60 %): diversity
    # only means something once the adversarial phase starts. 20 pretraining steps here.
    "no_noise": Entry(
        "failing",
        "tune",
        [*SKILLED, "train.pretrain_steps=20", "model.g.noise=none", "train.fixed_input=true"],
        note="noise removed, one fixed batch (20 pretraining steps)",
    ),
}


def garbage_dir(cache_dir: Path, out: Path) -> Path:
    """A copy of the tiny built-in data whose first file's outermost layer holds 1e20..1e30."""
    import numpy as np
    import xarray as xr

    from experiments.data import mantle

    src = mantle.ensure_builtin(cache_dir, **mantle.TINY)
    dst = out / "garbage_data_files"
    if dst.is_dir():
        return dst
    tmp = out / "garbage_data_files.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    f = tmp / mantle.file_name(1)
    with xr.open_dataset(f) as ds:
        ds = ds.load()
    t = ds["temperature"].values  # (lat, r, lon)
    n = t.shape[0] * t.shape[2]
    t[:, -1, :] = np.logspace(20, 30, n).reshape(t.shape[0], t.shape[2])
    ds["temperature"] = (ds["temperature"].dims, t, ds["temperature"].attrs)
    ds.to_netcdf(f.with_suffix(".tmp.nc"))
    os.replace(f.with_suffix(".tmp.nc"), f)
    os.replace(tmp, dst)
    return dst


def compose_cfg(overrides: list[str]):
    """``train_gan`` composed with ``+exp=small``, ``BASE`` and ``overrides``, as Hydra's CLI would."""
    from hydra import compose, initialize_config_dir

    import experiments.train_gan  # noqa: F401  (registers the config's resolvers)

    with initialize_config_dir(config_dir=str(ROOT / "conf" / "gan"), version_base="1.3"):
        return compose(config_name="train_gan", overrides=["+exp=small", *BASE, *overrides])


def all_stop(health_cfg: dict) -> dict:
    """Every check with policy ``stop``: the zoo measures the first alert."""
    return {
        k: (dict(v, policy="stop") if isinstance(v, dict) else v) for k, v in health_cfg.items()
    }


def run_gan(name: str, e: Entry, out: Path, extra: list[str] = ()) -> dict:
    """Train one GAN row into ``out/name``; ``extra``: more overrides (tests: the data cache)."""
    from omegaconf import OmegaConf, open_dict

    from experiments.train_gan import train

    ov = [*e.overrides, f"train.steps={e.steps}", *extra]
    if name == "garbage_data":
        cache = Path(compose_cfg(ov).data.cache_dir)
        ov.append(f"data.dir={garbage_dir(cache, out)}")
    cfg = compose_cfg(ov)
    with open_dict(cfg):
        cfg.health = OmegaConf.create(all_stop(OmegaConf.to_container(cfg.health, resolve=True)))
    run_dir = out / name
    shutil.rmtree(run_dir, ignore_errors=True)
    error = ""
    try:
        train(cfg, run_dir)
    except Exception as ex:  # noqa: BLE001 - a stopped or crashed run is a result
        error = f"{type(ex).__name__}: {ex}"
    hj = run_dir / "health.json"
    alerts = json.loads(hj.read_text())["alerts"] if hj.is_file() else []
    verdict = json.loads(hj.read_text())["verdict"] if hj.is_file() else ""
    return {"alerts": alerts, "error": error[:400], "verdict": verdict}


def dcgan2d(name: str, e: Entry, out: Path, extra: list[str] = ()) -> dict:
    """A small 2D DCGAN (BCE, sigmoid discriminator) on lat-lon layers of the tiny built-in data."""
    import torch
    from torch import nn

    from diagnostics.gan import GanBalance
    from diagnostics.health import HealthMonitor
    from diagnostics.spectra import field_spectra, spectrum_scalars
    from experiments.data import mantle

    opts = dict(o.split("=", 1) for o in e.overrides)
    lr_d, lr_g, d_steps = float(opts["lr_d"]), float(opts["lr_g"]), int(opts["d_steps"])
    torch.manual_seed(int(opts.get("seed", 0)))
    cache = Path(compose_cfg(list(extra)).data.cache_dir)
    d = mantle.ensure_builtin(cache, **mantle.TINY)
    steps = mantle.list_steps(d)
    f = mantle.load_fields(d, steps, ["temperature"], [], validate=False)  # (T, 1, R, LAT, LON)
    f = torch.as_tensor(f, dtype=torch.float32)
    f = (f - f.min()) / (f.max() - f.min())
    real_all = f.movedim(2, 1).reshape(-1, 1, f.shape[-2], f.shape[-1])  # (T*R, 1, 8, 16)
    h, w = real_all.shape[-2:]
    nz = 16
    G = nn.Sequential(
        nn.Linear(nz, 32 * (h // 4) * (w // 4)),
        nn.Unflatten(1, (32, h // 4, w // 4)),
        nn.ReLU(),
        nn.ConvTranspose2d(32, 16, 4, 2, 1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.ConvTranspose2d(16, 1, 4, 2, 1),
        nn.Sigmoid(),
    )
    D = nn.Sequential(
        nn.Conv2d(1, 16, 4, 2, 1),
        nn.LeakyReLU(0.2),
        nn.Conv2d(16, 32, 4, 2, 1),
        nn.LeakyReLU(0.2),
        nn.Flatten(),
        nn.Linear(32 * (h // 4) * (w // 4), 1),
    )
    opt_g = torch.optim.Adam(G.parameters(), lr=lr_g, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=lr_d, betas=(0.5, 0.999))
    bce = nn.BCEWithLogitsLoss()
    cfg = {
        k: {"policy": "stop"}
        for k in ("nonfinite", "mode_collapse", "spectrum", "value_range", "blowup")
    }
    cfg["discriminator_wins"] = {"policy": "stop", "loss": "bce"}
    cfg["critic_overpowering"] = {"policy": "stop"}
    run_dir = out / name
    shutil.rmtree(run_dir, ignore_errors=True)
    mon = HealthMonitor(cfg, None, run_dir, total_steps=e.steps)
    bal = GanBalance()
    z_probe = torch.randn(4, 8, nz, generator=torch.Generator().manual_seed(1))
    B = 16
    history: dict[str, list[tuple[int, float]]] = {}
    for step in range(1, e.steps + 1):
        for _ in range(d_steps):
            real = real_all[torch.randint(len(real_all), (B,))]
            fake = G(torch.randn(B, nz)).detach()
            s_r, s_f = D(real).squeeze(1), D(fake).squeeze(1)
            loss_d = bce(s_r, torch.ones_like(s_r)) + bce(s_f, torch.zeros_like(s_f))
            opt_d.zero_grad()
            loss_d.backward()
            opt_d.step()
            bal.update(s_r, s_f)
        s_f = D(G(torch.randn(B, nz))).squeeze(1)
        loss_g = bce(s_f, torch.ones_like(s_f))  # non-saturating
        opt_g.zero_grad()
        loss_g.backward()
        bal.update_grad_norm("G", G.parameters())
        opt_g.step()
        if step % 10 == 0:
            G.eval()
            with torch.no_grad():
                draws = torch.stack([G(z_probe[k]) for k in range(4)])  # (K, 8, 1, h, w)
                bal.update_diversity(draws)
                bal.update_range(draws)
                _, spec = field_spectra({"truth": real_all[:32], "generated": draws[0]}, 2)
                vals = {k: float(v) for k, v in bal.compute().items()}
                vals |= {k: float(v) for k, v in spectrum_scalars(["temperature"], spec).items()}
            G.train()
            bal.reset()
            vals |= {"loss/D": float(loss_d.detach()), "loss/G": float(loss_g.detach())}
            for k, v in vals.items():
                history.setdefault(k, []).append((step, v))
            mon.update(step, history)
            if mon.should_stop:
                break
    mon.finish(step)
    s = mon.summary()
    return {"alerts": s["alerts"], "error": "", "verdict": s["verdict"]}


def score(e: Entry, alerts: list[dict]) -> dict:
    """The row's first alert, its share of the run (or of the steps after the onset), and PASS/FAIL."""
    first = min(alerts, key=lambda a: a["first_step"]) if alerts else None
    out = {"first": None, "share": None, "flagged": bool(first)}
    if first is not None:
        s = int(first["first_step"])
        share = (s - e.onset) / e.steps if e.onset is not None else s / e.steps
        out |= {"first": f"{first['check']}@{s}", "share": round(share, 3)}
    if e.label == "healthy":
        out["ok"] = first is None
    elif first is None:
        out["ok"] = False
    elif e.onset is not None:
        out["ok"] = 0 <= out["share"] <= 0.10
    else:
        out["ok"] = out["share"] <= 0.25
    return out


def worker(name: str, out: Path, e: Entry | None = None, extra: list[str] = ()) -> dict:
    """Run one row (``e``: a variant of ``ZOO[name]``, e.g. shorter, for the test suite)."""
    import torch

    torch.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    e = e or ZOO[name]
    t0 = time.perf_counter()
    res = (dcgan2d if e.kind == "dcgan2d" else run_gan)(name, e, out, list(extra))
    row = {"run": name, **asdict(e), **res, "seconds": round(time.perf_counter() - t0, 1)}
    row |= score(e, res["alerts"])
    (out / f"{name}.row.json").write_text(json.dumps(row, indent=2, default=str))
    return row


def table(rows: list[dict]) -> str:
    """Per-row lines and the confusion table (actual label x flagged in time / late / none)."""
    lines = [
        f"{'run':<18} {'label':<8} {'role':<6} {'steps':>5} {'onset':>5} {'first alert':<24} "
        f"{'share':>6} {'ok':<4} {'s':>5}"
    ]
    for r in rows:
        share = "-" if r["share"] is None else f"{100 * r['share']:.0f} %"
        lines.append(
            f"{r['run']:<18} {r['label']:<8} {r['role']:<6} {r['steps']:>5} {r['onset'] or '-':>5} "
            f"{r['first'] or 'none':<24} {share:>6} {'PASS' if r['ok'] else 'FAIL':<4} {r['seconds']:>5.0f}"
        )
    failing = [r for r in rows if r["label"] == "failing"]
    healthy = [r for r in rows if r["label"] == "healthy"]
    tp = sum(r["flagged"] and r["ok"] for r in failing)
    late = sum(r["flagged"] and not r["ok"] for r in failing)
    fn = sum(not r["flagged"] for r in failing)
    fp = sum(r["flagged"] for r in healthy)
    tn = len(healthy) - fp
    lines += [
        "",
        "confusion            alert in time   alert late/early   no alert",
        f"failing ({len(failing):>2})         {tp:>8}        {late:>8}          {fn:>6}",
        f"healthy ({len(healthy):>2})         {fp:>8} (any alert)                  {tn:>6}",
    ]
    for role in ("tune", "judge"):
        rr = [r for r in rows if r["role"] == role]
        lines.append(f"{role}: {sum(r['ok'] for r in rr)}/{len(rr)} rows meet the target")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", choices=list(ZOO), help="subset of rows")
    ap.add_argument("--jobs", type=int, default=2, help="runs at a time (each 1 thread)")
    ap.add_argument("--out", type=Path, default=ROOT / "outputs" / "bench_health")
    ap.add_argument("--worker", choices=list(ZOO), help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.worker:
        worker(args.worker, args.out)
        return
    names = args.only or list(ZOO)
    # The longest first, so two slots finish together.
    names = sorted(names, key=lambda n: -ZOO[n].steps)
    t0 = time.perf_counter()

    def launch(name: str) -> dict:
        log = args.out / f"{name}.log"
        with open(log, "w") as fh:
            subprocess.run(
                [sys.executable, __file__, "--worker", name, "--out", str(args.out)],
                stdout=fh,
                stderr=subprocess.STDOUT,
                env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)},
                check=False,
            )
        p = args.out / f"{name}.row.json"
        if not p.is_file():
            tail = log.read_text()[-600:]
            return {"run": name, **asdict(ZOO[name]), "alerts": [], "error": f"worker died: {tail}",
                    "verdict": "", "seconds": 0.0, "first": None, "share": None, "flagged": False,
                    "ok": False}  # fmt: skip
        row = json.loads(p.read_text())
        print(f"{name}: {row['first'] or 'no alert'} ({row['seconds']:.0f} s)", flush=True)
        return row

    with ThreadPoolExecutor(args.jobs) as ex:
        rows = list(ex.map(launch, names))
    rows.sort(key=lambda r: list(ZOO).index(r["run"]))
    (args.out / "zoo.json").write_text(json.dumps(rows, indent=2, default=str))
    print()
    print(table(rows))
    for r in rows:
        if r["error"] and "health check stopped" not in r["error"]:
            print(f"{r['run']}: {r['error']}")
    print(
        f"\n{len(rows)} runs, {args.jobs} at a time, 1 torch thread each: "
        f"{time.perf_counter() - t0:.0f} s wall; results in {args.out / 'zoo.json'}"
    )


if __name__ == "__main__":
    main()
