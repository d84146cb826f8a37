"""Shared plumbing for the training scripts: threads, seeding, run directories, checkpoints."""

from __future__ import annotations

import logging
import os
import random
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)

CKPT_RE = re.compile(r"^ckpt_(\d{8})\.pt$")


def set_threads(n: int | None) -> None:
    """Set torch's intra-op threads explicitly (on 2 cores, 2 threads ran 6-15x slower than 1)."""
    if n:
        torch.set_num_threads(int(n))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """Every RNG stream as tensors and plain containers (loadable with weights_only=True)."""
    py = random.getstate()
    np_state = np.random.get_state()
    state = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": {
            "key": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            n["key"].numpy().astype(np.uint32),
            n["pos"],
            n["has_gauss"],
            n["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def atomic_torch_save(obj, path: str | os.PathLike) -> Path:
    """Save to ``path.tmp``, fsync, then rename: a crash never leaves a partial file at ``path``."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # no partial file left behind, the previous one untouched
        raise
    return path


def list_checkpoints(ckpt_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    d = Path(ckpt_dir)
    if not d.is_dir():
        return []
    out = [(int(m.group(1)), p) for p in d.iterdir() if (m := CKPT_RE.match(p.name))]
    return sorted(out)


def save_checkpoint(
    ckpt_dir: str | os.PathLike, step: int, state: Mapping, *, n_keep: int = 3
) -> Path:
    """Write ``ckpt_<step>.pt`` atomically and keep the newest ``n_keep``."""
    d = Path(ckpt_dir)
    d.mkdir(parents=True, exist_ok=True)
    path = atomic_torch_save({**state, "complete": True}, d / f"ckpt_{step:08d}.pt")
    for _, old in list_checkpoints(d)[:-n_keep] if n_keep > 0 else []:
        old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Load with ``weights_only=True``: tensors and plain containers only, no pickled objects."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - re-raised with the file named
        raise RuntimeError(f"{path}: not a loadable checkpoint ({type(e).__name__}: {e})") from e


def load_latest_checkpoint(
    run_dir: str | os.PathLike, map_location="cpu"
) -> tuple[Path, dict] | None:
    """Newest complete checkpoint of a run and its state; files that fail to load or lack the
    completion marker (``complete: True``) are skipped with a warning."""
    for _, path in reversed(list_checkpoints(Path(run_dir) / "checkpoints")):
        try:
            state = load_checkpoint(path, map_location=map_location)
        except RuntimeError as e:
            log.warning("skipping checkpoint %s: %s", path, e)
            continue
        if isinstance(state, dict) and state.get("complete") is True:
            return path, state
        log.warning("skipping checkpoint %s: no completion marker", path)
    return None


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """Path of the newest complete checkpoint, or None."""
    found = load_latest_checkpoint(run_dir)
    return found[0] if found else None


def register_resolvers() -> None:
    """OmegaConf resolvers the configs use (``first_set``, ``safe_name``); idempotent."""
    from omegaconf import OmegaConf

    OmegaConf.register_new_resolver(
        "first_set", lambda *xs: next((x for x in xs if x), None), replace=True
    )
    OmegaConf.register_new_resolver("safe_name", safe_run_name, replace=True)


# ------------------------------------------------------------------------------ run names
_SLUG_BAD = re.compile(r"[^A-Za-z0-9._=-]+")


def safe_run_name(name: str) -> str:
    """Slugify a run name and refuse anything that could leave the outputs root.

    Spaces and other characters become ``-``; a name with a path separator, ``..``, a leading
    ``/`` or ``~``, or nothing left is rejected with a clear error.
    """
    raw = str(name)
    if not raw or "/" in raw or "\\" in raw or raw.startswith(("~", ".")) or ".." in raw:
        raise ValueError(
            f"run_name={raw!r} is not allowed: use letters, digits, '.', '_', '-' and '=' "
            "(no '/', no '..', not starting with '.' or '~'); runs stay inside out_root"
        )
    slug = _SLUG_BAD.sub("-", raw).strip("-")
    if not slug:
        raise ValueError(f"run_name={raw!r} has no usable characters")
    return slug


def inside(root: str | os.PathLike, path: str | os.PathLike) -> bool:
    """True if ``path`` resolves to ``root`` or below it."""
    r, p = Path(root).resolve(), Path(path).resolve()
    return p == r or r in p.parents


# ------------------------------------------------------------------------------ preemption
EXIT_PREEMPTED = 75  # EX_TEMPFAIL: saved and stopped on a signal; requeue and rerun to resume


class Preemption:
    """Turns a signal (default SIGUSR2, as submitit sends before a time limit) into a flag.

    The loop polls ``requested`` at step boundaries, saves and exits with ``EXIT_PREEMPTED``.
    Handlers are installed on ``__enter__`` and the previous ones restored on ``__exit__``.
    """

    SIGNALS = ("SIGUSR2", "SIGUSR1", "SIGTERM")

    def __init__(self, signame: str = "SIGUSR2") -> None:
        if signame not in self.SIGNALS:
            raise ValueError(f"preempt.signal must be one of {self.SIGNALS}, got {signame!r}")
        import signal

        self.signum = getattr(signal, signame)
        self.requested = False
        self._old = None

    def _handler(self, signum, frame) -> None:  # noqa: ARG002 - signal handler signature
        self.requested = True

    def __enter__(self) -> Preemption:
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(self.signum, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        import signal

        old, self._old = self._old, None
        if old is None:
            return
        signal.signal(self.signum, old)
        # Under submitit the previous handler requeues the job: hand the signal on once our
        # checkpoint is safely written.
        if self.requested and callable(old):
            old(self.signum, None)
