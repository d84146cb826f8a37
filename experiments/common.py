"""Shared plumbing for the training scripts: threads, seeding, run directories, checkpoints,
the run lock, resume semantics, preemption and exit codes (one copy for both scripts)."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import random
import re
import socket
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import numpy as np
import torch

from diagnostics import tags
from diagnostics.rundir import atomic_write_bytes, fsync_dir

log = logging.getLogger(__name__)

CKPT_RE = re.compile(r"^ckpt_(\d{8})\.pt$")
MARKER_SUFFIX = ".done"
CKPT_FORMAT = 2  # 1: completion flag in the payload only; 2: plus a marker file with the digest

# Exit codes of both training scripts (README "Running on a cluster").
EXIT_BAD_INPUT = 2  # bad data, paths, config values or run directory; reported before training
EXIT_STOPPED = 3  # non-finite guard or a health check with policy stop
EXIT_PREEMPTED = 75  # EX_TEMPFAIL: saved and stopped on a signal; requeue and rerun to resume


class RunError(ValueError):
    """The run cannot start or resume as asked (exit 2); the message says why and what to do."""


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


_fsync_dir = (
    fsync_dir  # the helpers live in diagnostics/rundir.py (the library writes run files too)
)


def atomic_torch_save(obj, path: str | os.PathLike) -> Path:
    """Serialise ``obj`` in memory, then write it atomically (see ``atomic_write_bytes``)."""
    buf = io.BytesIO()
    torch.save(obj, buf)  # a failure here touches no file
    return atomic_write_bytes(buf.getvalue(), path)


def list_checkpoints(ckpt_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """``(step, path)`` of every ``ckpt_<step>.pt`` in ``ckpt_dir``, oldest first (valid or not)."""
    d = Path(ckpt_dir)
    if not d.is_dir():
        return []
    out = [(int(m.group(1)), p) for p in d.iterdir() if (m := CKPT_RE.match(p.name))]
    return sorted(out)


def marker_path(path: str | os.PathLike) -> Path:
    """The completion marker of a checkpoint: ``ckpt_<step>.pt.done``, JSON with the digest."""
    path = Path(path)
    return path.with_name(path.name + MARKER_SUFFIX)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def save_checkpoint(
    ckpt_dir: str | os.PathLike, step: int, state: Mapping, *, n_keep: int = 3
) -> Path:
    """Write ``ckpt_<step>.pt`` and then its completion marker (the payload's SHA-256), both
    atomically; then keep the newest ``n_keep`` (``n_keep`` <= 0 keeps all).

    The file is read back and its digest checked before any older checkpoint is deleted, so
    rotation never removes the newest valid checkpoint.
    """
    d = Path(ckpt_dir)
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"ckpt_{step:08d}.pt"
    buf = io.BytesIO()
    torch.save({**state, "complete": True}, buf)
    data = buf.getvalue()
    digest = _sha256(data)
    marker = marker_path(path)
    marker.unlink(missing_ok=True)  # an old marker must never vouch for new bytes
    atomic_write_bytes(data, path)
    meta = {"format": CKPT_FORMAT, "step": int(step), "bytes": len(data), "sha256": digest}
    atomic_write_bytes(json.dumps(meta).encode(), marker)
    if _sha256(path.read_bytes()) != digest:
        raise CheckpointError(f"{path}: the bytes on disk differ from those written")
    rotate_checkpoints(d, step, n_keep)
    return path


def rotate_checkpoints(ckpt_dir: Path, newest: int, n_keep: int) -> None:
    """Keep ``ckpt_<newest>`` and the ``n_keep - 1`` newest older ones that have a marker.

    Files with a higher step than ``newest`` can only exist if they were invalid when this run
    resumed (it resumes from the newest valid one): they are renamed ``*.corrupt`` and kept for
    inspection, so they never shadow a valid checkpoint and are never deleted.
    """
    ckpts = list_checkpoints(ckpt_dir)
    for step, p in ckpts:
        if step > newest:
            bad = p.with_name(p.name + ".corrupt")
            log.warning("checkpoint %s is newer than the step just saved: renamed %s", p, bad)
            os.replace(p, bad)
            marker_path(p).unlink(missing_ok=True)
    if n_keep <= 0:
        return
    older = [p for s, p in ckpts if s < newest]
    marked = [p for p in older if marker_path(p).is_file()]
    keep = set(marked[max(0, len(marked) - (n_keep - 1)) :])
    for p in older:
        if p not in keep:
            p.unlink(missing_ok=True)
            marker_path(p).unlink(missing_ok=True)


class CheckpointError(RuntimeError):
    """A checkpoint file that must not be loaded (truncated, altered, incomplete, wrong keys)."""


def load_checkpoint(
    path: str | os.PathLike, map_location="cpu", *, required: tuple[str, ...] = ()
) -> dict:
    """Verify and load one checkpoint (``weights_only=True``: tensors and plain containers only).

    With a completion marker the payload's SHA-256 must match it (a flipped byte or a truncated
    file is refused); a file without one (written before markers existed) must load and carry
    ``complete: True``. ``required`` keys must all be present. Raises ``CheckpointError`` naming
    the file and the reason.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"{path}: cannot be read ({e})") from e
    marker = marker_path(path)
    if marker.is_file():
        try:
            meta = json.loads(marker.read_text())
            want = str(meta["sha256"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise CheckpointError(f"{path}: unreadable completion marker {marker} ({e})") from e
        if len(data) != meta.get("bytes", len(data)):
            raise CheckpointError(
                f"{path}: {len(data)} bytes, the completion marker recorded {meta['bytes']} "
                "(truncated or appended to)"
            )
        if _sha256(data) != want:
            raise CheckpointError(f"{path}: SHA-256 differs from its completion marker (altered)")
    try:
        state = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - re-raised with the file named
        raise CheckpointError(f"{path}: not a loadable checkpoint ({type(e).__name__}: {e})") from e
    if not isinstance(state, dict) or state.get("complete") is not True:
        raise CheckpointError(f"{path}: no completion marker")
    if not marker.is_file():
        log.warning("%s has no digest (older format): loaded unverified", path)
    missing = [k for k in required if k not in state]
    if missing:
        raise CheckpointError(f"{path}: lacks the keys {missing}")
    return state


def load_latest_checkpoint(
    run_dir: str | os.PathLike, map_location="cpu", *, required: tuple[str, ...] = ()
) -> tuple[Path, dict] | None:
    """Newest valid checkpoint of a run and its state, falling back past invalid ones with a
    warning; None if the run has no checkpoint files at all.

    Raises ``RunError`` if there are checkpoint files but none is valid: a run never starts
    over silently on top of its own broken checkpoints.
    """
    ckpts = list_checkpoints(Path(run_dir) / "checkpoints")
    reasons = []
    for _, path in reversed(ckpts):
        try:
            state = load_checkpoint(path, map_location=map_location, required=required)
        except CheckpointError as e:
            log.warning("skipping invalid checkpoint: %s", e)
            reasons.append(str(e))
            continue
        if reasons:
            log.warning("falling back to %s (newest valid of %d)", path, len(ckpts))
        return path, state
    if ckpts:
        raise RunError(
            f"{run_dir}: none of its {len(ckpts)} checkpoints is valid, refusing to start "
            f"over ({'; '.join(reasons)}). Move checkpoints/ away to start this run afresh."
        )
    return None


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """Path of the newest valid checkpoint, or None (also when none is valid)."""
    try:
        found = load_latest_checkpoint(run_dir)
    except RunError:
        return None
    return found[0] if found else None


def register_resolvers() -> None:
    """OmegaConf resolvers the configs use (``first_set``, ``safe_name``, ``run_dir``,
    ``safe_subdir``); idempotent."""
    from omegaconf import OmegaConf

    OmegaConf.register_new_resolver(
        "first_set", lambda *xs: next((x for x in xs if x), None), replace=True
    )
    OmegaConf.register_new_resolver("safe_name", _refusing(safe_run_name), replace=True)
    OmegaConf.register_new_resolver("run_dir", _refusing(cli_run_dir), replace=True)
    OmegaConf.register_new_resolver("safe_subdir", _refusing(safe_subdir), replace=True)
    OmegaConf.register_new_resolver("run_label", _run_label_resolver, replace=True)


def _refusing(fn: Callable) -> Callable:
    """Wrap a resolver so a refused value ends the program with a one-line message and exit 2.

    Hydra resolves the run directory before it creates it and writes ``.hydra/`` there: this is
    the last moment a wrong run name or resume target can be refused with nothing written. A
    ``SystemExit`` passes through OmegaConf and Hydra (they catch ``Exception`` only), so the user
    sees the message instead of a long traceback.
    """

    def resolver(*args):
        try:
            return fn(*args)
        except RunError as e:
            print(f"Error: {e}", file=sys.stderr)
            report_exit(EXIT_BAD_INPUT)  # under torchrun: the job's status is 2, not torchrun's 1
            raise SystemExit(EXIT_BAD_INPUT) from None

    return resolver


# ------------------------------------------------------------------------------ run names
_NAME_OK = re.compile(r"^[A-Za-z0-9_=][A-Za-z0-9._=-]*$")


def safe_run_name(name: str) -> str:
    """Check a run name: letters, digits, ``.``, ``_``, ``-`` and ``=`` only, not starting with
    ``.`` or ``-``; anything else is refused (``RunError``) rather than rewritten, so two names
    never map to one directory (``my run`` would otherwise collide with ``my-run``)."""
    raw = str(name)
    if not _NAME_OK.match(raw) or ".." in raw:
        hint = re.sub(r"[^A-Za-z0-9._=-]+", "-", raw).strip("-.")
        raise RunError(
            f"run_name={raw!r} is not allowed: use letters, digits, '.', '_', '-' and '=' "
            "(no spaces, no '/', no '..', not starting with '.' or '-'); runs stay inside "
            f"out_root" + (f". For example: run_name={hint}" if hint and ".." not in hint else "")
        )
    return raw


def _run_label_resolver(stamp) -> str:
    """``${run_label:<stamp>}``: :func:`run_label` of this Hydra job's overrides (none when the
    config is composed outside a Hydra app, e.g. with the compose API in tests)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        overrides = HydraConfig.get().job.override_dirname
    except (ImportError, ValueError):
        overrides = ""
    return run_label(overrides, stamp)


def run_label(override_dirname, stamp) -> str:
    """The default run name: the run's overrides as Hydra's ``override_dirname`` lists them,
    made one safe path component, then the start time: ``exp=small_train.lr_g=3e-4_<stamp>``.

    So runs that differ by an override are told apart by name (TensorBoard's run list, the video
    labels); a run without overrides is named by its time alone. ``+`` is dropped, ``,`` becomes
    ``_`` and any character :func:`safe_run_name` refuses becomes ``-``; beyond 120 characters the
    label is cut and an 8-digit hash of the whole keeps names apart."""
    import hashlib

    raw = str(override_dirname or "")
    s = ",".join(part.lstrip("+~") for part in raw.split(",") if part.strip("+~"))
    s = re.sub(r"[^A-Za-z0-9._=-]+", "-", s.replace(",", "_")).strip("-.")
    s = s.replace("..", "-")
    if len(s) > 120:
        s = s[:120].rstrip("-._") + "-" + hashlib.sha1(raw.encode()).hexdigest()[:8]
    return f"{s}_{stamp}" if s else str(stamp)


def safe_subdir(override_dirname: str) -> str:
    """A sweep job's sub-directory from Hydra's ``override_dirname``, as one path component.

    Override values may hold ``/`` or ``..`` (``data.dir=../x``); ``/`` and ``\\`` become ``_``,
    so the job directory stays under the sweep directory.
    """
    s = str(override_dirname).replace("/", "_").replace("\\", "_")
    return s if s not in ("", ".", "..") else f"_{s}"


def inside(root: str | os.PathLike, path: str | os.PathLike) -> bool:
    """True if ``path`` resolves to ``root`` or below it."""
    r, p = Path(root).resolve(), Path(path).resolve()
    return p == r or r in p.parents


# ------------------------------------------------------------------------------ run directory
def check_run_target(
    run_dir: str | os.PathLike, kind: str, *, resume: bool, check_lock: bool = True
) -> None:
    """Refuse (``RunError``) a run directory this script must not use, before anything is written.

    ``resume=`` must name an existing run directory of this script (``kind`` is its
    ``experiment``: ``gan`` or ``autoencoder``) with a config or checkpoints; any existing run
    directory must be of this script and not held by a live run (see ``RunLock``; not checked
    with ``check_lock=False``: the other ranks of a torchrun job, whose rank 0 holds the lock).
    """
    d = Path(run_dir)
    if resume:
        if not d.exists():
            raise RunError(f"resume={d}: no such run directory (nothing was created)")
        if not d.is_dir():
            raise RunError(
                f"resume={d} is a file; give the run directory (e.g. outputs/{kind}/<run>), "
                "which resumes from its newest valid checkpoint"
            )
        if not (d / "config.yaml").is_file() and not (d / "checkpoints").is_dir():
            raise RunError(f"resume={d}: no config.yaml and no checkpoints/: not a run directory")
    if not d.is_dir():
        return
    cfg_file = d / "config.yaml"
    if cfg_file.is_file():
        from omegaconf import OmegaConf

        try:
            other = OmegaConf.load(cfg_file).get("experiment")
        except Exception as e:  # noqa: BLE001 - a broken config is bad input, named
            raise RunError(f"{cfg_file}: unreadable run config ({e})") from e
        if other is not None and other != kind:
            raise RunError(
                f"{d} is a run of the {other} script, not of the {kind} script; "
                "nothing was written (resume it with its own script)"
            )
    lock = RunLock(d)
    held = lock.holder_info() if check_lock else None
    if held is not None and not _peer_of(held):
        raise RunError(f"{d} is in use by another run ({lock._describe()}); nothing was written")


def job_id() -> str | None:
    """The multi-process job this process belongs to (torchrun's run id, or the Slurm job step
    of an srun task), or None: the ranks of one job share it."""
    if os.environ.get("TORCHELASTIC_RUN_ID"):
        return f"torchrun:{os.environ['TORCHELASTIC_RUN_ID']}"
    if "SLURM_PROCID" in os.environ and os.environ.get("SLURM_JOB_ID"):
        return f"slurm:{os.environ['SLURM_JOB_ID']}.{os.environ.get('SLURM_STEP_ID', '')}"
    return None


def _peer_of(held: Mapping) -> bool:
    """True if the lock is held by rank 0 of this process's own job (this is another rank):
    its lock names the same job, or it has taken the lock and not yet written its name."""
    me = job_id()
    rank = int(os.environ.get("RANK") or os.environ.get("SLURM_PROCID") or 0)
    return me is not None and rank > 0 and (not held or held.get("job") == me)


def cli_run_dir(kind: str, resume, out_root: str, run_name: str) -> str:
    """``hydra.run.dir``: the ``resume`` directory or ``out_root/<kind>/<run_name>``, checked."""
    if resume:
        check_run_target(resume, kind, resume=True)
        return str(resume)
    d = Path(str(out_root)) / kind / safe_run_name(run_name)
    check_run_target(d, kind, resume=False)
    return str(d)


class RunLock:
    """Advisory lock on ``<run_dir>/.lock`` (``flock``), holding who holds it (pid, host, time,
    command). The kernel drops it when the holder exits, even on SIGKILL, so a requeued job never
    finds a stale lock. ``flock`` is not reliable on every network filesystem (old NFS)."""

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.path = Path(run_dir) / ".lock"
        self._fd: int | None = None

    def holder(self) -> str | None:
        """Who holds the lock now (a description), or None if nobody does."""
        import fcntl

        if not self.path.is_file():
            return None
        fd = os.open(self.path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return self._describe()
        finally:
            os.close(fd)  # closing drops a lock we may have taken
        return None

    def holder_info(self) -> dict | None:
        """What the holder wrote about itself (``{}`` if not yet), or None if nobody holds it."""
        if self.holder() is None:
            return None
        try:
            h = json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return {}
        return h if isinstance(h, dict) else {}

    def _describe(self) -> str:
        try:
            h = json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            h = {}
        if not h:
            return "a process that has not written its name yet"
        return f"pid {h.get('pid')} on {h.get('host')} since {h.get('since')}: {h.get('command')}"

    def acquire(self) -> RunLock:
        """Take the lock or raise ``RunError`` naming the holder."""
        import fcntl

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunError(
                f"{self.path.parent} is in use by another run ({self._describe()}); wait for it "
                "to end or choose another run_name"
            ) from None
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "command": " ".join(sys.argv),
            "job": job_id(),  # the other ranks of this job accept this lock as their own
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None


def clean_stale_tmp(run_dir: str | os.PathLike) -> list[Path]:
    """Remove ``*.tmp`` files a killed run left in the run directory, ``checkpoints/`` and
    ``snapshots/`` (call only while holding the run lock: nobody else is writing them)."""
    d = Path(run_dir)
    gone = []
    for sub in (d, d / "checkpoints", d / "snapshots"):
        if sub.is_dir():
            for p in sub.glob("*.tmp"):
                p.unlink(missing_ok=True)
                gone.append(p)
    if gone:
        log.info("removed %d stale temporary file(s): %s", len(gone), [p.name for p in gone])
    return gone


# ------------------------------------------------------------------------------ resume semantics
# Keys that may differ from the run's saved config when it resumes, in both scripts (prefixes).
# Everything else must equal the saved value or the resume is refused: the models, data, optimizer
# (its learning rate lives in the checkpoint) and the seed define the run.
RESUME_FREE = (
    "resume",
    "run_name",
    "out_root",
    "threads",
    "device",
    "deterministic",
    "data.cache_dir",
    "log",
    "snapshot",
    "checkpoint",
    "frames",
    "embed",
    "diagnostics",
    "health",
    "preempt",
)
# Always taken from the new command line, never from the saved config.
RESUME_CURRENT = ("resume", "run_name", "out_root", "data.cache_dir", "threads", "device")


def _allowed(key: str, prefixes: Iterable[str]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def _leaves(node, prefix: str = "") -> dict:
    """Flat ``{dotted.key: raw value}`` of a config (interpolations kept as written)."""
    from omegaconf import DictConfig, OmegaConf

    if isinstance(node, DictConfig):
        node = OmegaConf.to_container(node, resolve=False)
    out = {}
    if isinstance(node, dict):
        for k, v in node.items():
            out |= _leaves(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v}
    return out


def _override_keys(overrides: Iterable[str], cfg) -> tuple[list[str], list[str]]:
    """Dotted keys the command line set (``a.b=1``, ``+a=1``, ``++a=1``, ``~a``, groups ``data=x``
    expand to their leaves) and the overrides that name no key of the job config (``+exp=...``)."""
    from omegaconf import DictConfig, OmegaConf

    keys, overlays = [], []
    for o in overrides:
        o = str(o)
        key = o.split("=", 1)[0].lstrip("+~").split("@", 1)[0].replace("/", ".")
        if not key or key.startswith("hydra"):
            continue
        node = OmegaConf.select(cfg, key, default=None, throw_on_missing=False)
        if isinstance(node, DictConfig):
            keys += [f"{key}.{k}" for k in _leaves(node)]
        elif OmegaConf.select(cfg, key, default="\0absent", throw_on_missing=False) == "\0absent":
            overlays.append(o)
        else:
            keys.append(key)
    return keys, overlays


def resume_config(
    cfg,
    run_dir: str | os.PathLike,
    *,
    mutable: tuple[str, ...],
    overrides: Iterable[str] | None,
):
    """The config a resumed run continues with: the run's saved ``config.yaml`` is the base.

    Keys set now (``overrides``, the command line; or, without it, every key where ``cfg``
    differs from the saved config) take effect if they are in ``RESUME_FREE`` or ``mutable``
    (e.g. ``train.steps``); a change to any other key raises ``RunError`` listing each key with
    both values. Keys the saved config lacks (added to the code since) keep ``cfg``'s values.
    """
    from omegaconf import OmegaConf

    saved_file = Path(run_dir) / "config.yaml"
    if not saved_file.is_file():
        log.warning("%s has no config.yaml: resuming with the config given now", run_dir)
        return cfg
    saved = OmegaConf.load(saved_file)
    now = _leaves(cfg)
    if overrides is None:
        old = _leaves(saved)
        keys = [k for k, v in now.items() if k in old and old[k] != v]
        overlays = []
    else:
        keys, overlays = _override_keys(overrides, cfg)
    if overlays:
        log.warning(
            "resume: %s ignored; the run's saved config (%s) already holds what it chose",
            " ".join(overlays),
            saved_file,
        )
    base = OmegaConf.merge(OmegaConf.create(OmegaConf.to_container(cfg, resolve=False)), saved)
    refused, changed = [], []
    for key in dict.fromkeys(keys + [k for k in now if _allowed(k, RESUME_CURRENT)]):
        new_v = OmegaConf.select(cfg, key, default=None, throw_on_missing=False)
        old_v = OmegaConf.select(base, key, default=None, throw_on_missing=False)
        if key in now and _allowed(key, RESUME_CURRENT):
            OmegaConf.update(base, key, now[key], force_add=True)  # as written, not resolved
            continue
        if new_v == old_v:
            continue
        if _allowed(key, RESUME_FREE + tuple(mutable)):
            OmegaConf.update(base, key, now.get(key, new_v), force_add=True)
            changed.append(f"{key}: {old_v!r} -> {new_v!r}")
        else:
            refused.append(f"{key}={new_v!r} (the run has {old_v!r})")
    if refused:
        raise RunError(
            f"resume of {run_dir} refused: {'; '.join(refused)}. Only "
            f"{', '.join(sorted(set(RESUME_FREE[3:] + tuple(mutable))))} may change on resume; "
            "start a new run (another run_name) to change the others"
        )
    if changed:
        log.info("resume: changed from the saved config: %s", "; ".join(changed))
    OmegaConf.set_struct(base, True)
    return base


# ------------------------------------------------------------------------------ config checks
def check_device(name: str) -> None:
    """``device`` must be auto, cpu, cuda or cuda:N, and CUDA must exist if asked for."""
    name = str(name)
    if name not in ("auto", "cpu") and not re.fullmatch(r"cuda(:\d+)?", name):
        raise RunError(f"device={name!r}: expected auto, cpu, cuda or cuda:<index>")
    if name.startswith("cuda") and not torch.cuda.is_available():
        build = (
            "this torch build has no CUDA" if torch.version.cuda is None else "no GPU is visible"
        )
        raise RunError(f"device={name}: {build}; use device=cpu or device=auto")


def check_seed(seed) -> None:
    """``seed`` must be an integer in [0, 2**32) (numpy's generators refuse negative seeds)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise RunError(f"seed={seed!r}: expected an integer in [0, 2**32)")


# ------------------------------------------------------------------------------ run state
def write_summary(run_dir: str | os.PathLike, summary: Mapping) -> None:
    """``summary.json`` written atomically: after any stop it says how the run ended."""
    atomic_write_bytes(json.dumps(dict(summary), indent=2).encode(), Path(run_dir) / SUMMARY_FILE)
    if summary.get("status") != "running":  # the start was logged by open_run
        at = f" at step {summary['step']}" if summary.get("step") is not None else ""
        log.info("%s%s; run directory: %s", summary.get("status"), at, Path(run_dir).resolve())


SUMMARY_FILE = "summary.json"  # how the run ended, its metrics (both scripts; README "Run files")
NORMALISATION_FILE = "normalisation.json"  # how the data were scaled to the model's units


def write_normalisation(run_dir: str | os.PathLike, norm: Mapping) -> Path:
    """``normalisation.json`` (atomically): the data scaling a reader needs to undo."""
    return atomic_write_bytes(
        json.dumps(dict(norm), indent=2).encode(), Path(run_dir) / NORMALISATION_FILE
    )


def read_normalisation(run_dir: str | os.PathLike) -> dict:
    """The run's ``normalisation.json``."""
    return json.loads((Path(run_dir) / NORMALISATION_FILE).read_text())


# ------------------------------------------------------------------------------ preemption
class Preemption:
    """Turns a signal (default SIGUSR2, as submitit sends before a time limit; and always
    SIGTERM, what Slurm, Kubernetes and torchrun send before a kill) into a flag.

    The loop polls ``requested`` at step boundaries, saves and exits with ``EXIT_PREEMPTED``.
    Handlers are installed on ``__enter__`` and the previous ones restored on ``__exit__``.
    """

    SIGNALS = ("SIGUSR2", "SIGUSR1", "SIGTERM")

    def __init__(self, signame: str = "SIGUSR2") -> None:
        if signame not in self.SIGNALS:
            raise RunError(f"preempt.signal must be one of {self.SIGNALS}, got {signame!r}")
        import signal

        self.signame = signame
        self.signum = getattr(signal, signame)
        self.signums = sorted({self.signum, signal.SIGTERM})
        self.requested = False
        self.received: int | None = None
        self._old: dict = {}

    def _handler(self, signum, frame) -> None:  # noqa: ARG002 - signal handler signature
        self.requested = True
        self.received = self.received or signum

    @property
    def received_name(self) -> str | None:
        import signal

        return signal.Signals(self.received).name if self.received else None

    def __enter__(self) -> Preemption:
        import signal
        import threading

        from experiments import early_signals

        if threading.current_thread() is threading.main_thread():
            pending = early_signals.take()  # received while the script was still starting
            self._old = {s: signal.signal(s, self._handler) for s in self.signums}
            for s in pending:
                if s in self.signums:
                    self._handler(s, None)
                else:  # not a preemption signal of this run: its default action, as before
                    os.kill(os.getpid(), s)
        return self

    def __exit__(self, *exc) -> None:
        import signal

        old, self._old = self._old, {}
        for s, h in old.items():
            signal.signal(s, h)
        # Under submitit the previous handler requeues the job: hand the signal on once our
        # checkpoint is safely written.
        h = old.get(self.received)
        if self.requested and callable(h):
            h(self.received, None)


# ------------------------------------------------------------------------------ exit status
EXIT_DIR_ENV = "FIELDSCOPE_EXIT_DIR"  # set by ``python -m experiments.distributed`` (torchrun)


def report_exit(code: int) -> None:
    """Leave this rank's exit code where the torchrun wrapper reads it (torchrun itself turns
    any failed worker into exit 1, which would hide a 75)."""
    d = os.environ.get(EXIT_DIR_ENV)
    if d and Path(d).is_dir():
        (Path(d) / f"rank{os.environ.get('RANK', '0')}").write_text(str(int(code)))


def run_main(fn: Callable[[], Mapping], *, bad_input: tuple[type[BaseException], ...] = ()) -> None:
    """Call a script's ``train`` and exit with the documented status: 0 done, 2 bad input
    (``RunError``, ``ConfigError``, ``DataError`` and ``bad_input``: raised on purpose with a
    message that says what to fix; one line, no traceback), 3 ``StopTraining``, 75 preempted
    (the summary's ``exit_code``). Anything else, a bare ``ValueError`` from inside training
    included, is a bug: it propagates with its traceback (exit 1)."""
    from experiments.data.errors import DataError
    from experiments.schema import ConfigError

    try:
        code = int(fn().get("exit_code", 0))
    except StopTraining as e:
        log.error("%s", e)
        code = EXIT_STOPPED
    except (RunError, ConfigError, DataError, *bad_input) as e:
        log.error("%s", e)
        code = EXIT_BAD_INPUT
    except BaseException:
        report_exit(1)
        raise
    report_exit(code)
    sys.exit(code)


def check_joined(kind: str) -> None:
    """Refuse (``RunError``) a script started as one of several ranks (torchrun, Slurm tasks)
    that has not joined a process group: the autoencoder is single-process, and N copies would
    race for one run directory."""
    import torch.distributed as dist

    slurm = os.environ.get("SLURM_NTASKS") if "SLURM_PROCID" in os.environ else None  # srun task
    world = int(os.environ.get("WORLD_SIZE") or slurm or 1)
    if world > 1 and not (dist.is_available() and dist.is_initialized()):
        raise RunError(
            f"the {kind} script runs in one process, but it was started as one of {world} "
            "ranks (torchrun --nproc_per_node or Slurm tasks_per_node > 1); start it once"
        )


def open_run(
    cfg,
    out_dir: str | os.PathLike,
    kind: str,
    *,
    mutable: tuple[str, ...],
    overrides: Iterable[str] | None = None,
    is_main: bool = True,
):
    """The run skeleton's start, shared by both scripts: check the run directory, take the run
    lock, remove stale ``*.tmp``, make the saved config the base if the run has checkpoints, and
    write ``config.yaml``. Returns ``(cfg, run_dir, lock)``; release the lock when the run ends.
    """
    from omegaconf import OmegaConf

    check_joined(kind)
    run_dir = Path(cfg.resume) if cfg.resume else Path(out_dir)
    # Only rank 0 takes the lock: another rank would find it held by its own job's rank 0.
    check_run_target(run_dir, kind, resume=bool(cfg.resume), check_lock=is_main)
    lock = None
    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        lock = RunLock(run_dir).acquire()
        clean_stale_tmp(run_dir)
    if list_checkpoints(run_dir / "checkpoints"):
        cfg = resume_config(cfg, run_dir, mutable=mutable, overrides=overrides)
    if is_main:
        atomic_write_bytes(OmegaConf.to_yaml(cfg).encode(), run_dir / "config.yaml")
        log.info("run directory: %s", run_dir.resolve())
    return cfg, run_dir, lock


CONSOLE_EXTRA = ("gan/gap",)  # besides the losses, on the console line of a log step


def console_line(step: int, values: Mapping[str, float], rate: float) -> str:
    """A short console line for a log step: the losses (and ``CONSOLE_EXTRA``), 4 digits each;
    every other scalar is in TensorBoard."""
    shown = [
        f"{k}={float(v):.4g}"
        for k, v in values.items()
        if k.startswith("loss/") or k in CONSOLE_EXTRA
    ]
    return f"step {step} {' '.join(shown)} ({rate:.2f} steps/s)"


def tensorboard_layout(writer, cfg, models, *, gan: bool, metrics, start: int) -> None:
    """Custom Scalars layout and HParams records (config + the metrics' tags) of a new run;
    a resumed run has them from its first start."""
    from diagnostics.layout import flat_hparams, scalar_layout

    if start:
        return
    writer.custom_scalars(scalar_layout(list(models), gan=gan))
    hp = flat_hparams(cfg)
    hp["run_name"] = str(writer.log_dir.name)
    writer.hparams(hp, list(metrics))


# ------------------------------------------------------------------------------ the loop's end
class StopTraining(RuntimeError):
    """A guard (non-finite values) or a health check with policy ``stop`` ended the run (exit 3)."""


class Outcome:
    """How a run ends (``status``, ``exit_code``, last ``step``), kept by :meth:`guard`.

    ``with outcome.guard(run_dir, is_main):`` around the loop: a ``StopTraining`` ends it
    ``stopped`` (3), any other exception ``failed`` (1); both re-raise after ``summary.json``
    says so. ``preempted()`` marks a saved stop on a signal (75).
    """

    def __init__(self, start: int) -> None:
        self.start, self.step = int(start), int(start)
        self.status, self.exit_code = "completed", 0
        self.t0 = time.perf_counter()

    def preempted(self) -> None:
        self.status, self.exit_code = "preempted", EXIT_PREEMPTED

    def steps_per_s(self) -> float:
        return (self.step - self.start) / max(time.perf_counter() - self.t0, 1e-9)

    @property
    def done(self) -> bool:
        """True once the loop must not run another step (preempted before or during it)."""
        return self.status == "preempted"

    def steps(self, n_steps: int):
        """``start + 1 .. n_steps``, recording the current step; nothing if already preempted."""
        for step in range(self.start + 1, n_steps + 1):
            if self.done:
                return
            self.step = step
            yield step

    @contextlib.contextmanager
    def guard(self, run_dir: str | os.PathLike, is_main: bool = True):
        try:
            yield self
        except StopTraining:
            self.status, self.exit_code = "stopped", EXIT_STOPPED
            raise
        except BaseException:
            self.status, self.exit_code = "failed", 1
            raise
        finally:
            if is_main and self.status in ("stopped", "failed"):
                write_summary(
                    run_dir, {"status": self.status, "exit_code": self.exit_code, "step": self.step}
                )

    def summary(self, run_dir, preempt: Preemption, **more) -> dict:
        """The end-of-run ``summary.json`` content (the same keys for both scripts)."""
        return {
            "status": self.status,
            "exit_code": self.exit_code,
            "step": self.step,
            "run_dir": str(run_dir),
            "steps_per_s": self.steps_per_s(),
            "preempt": {"signal": preempt.received_name, "step": self.step}
            if self.status == "preempted"
            else None,
            **more,
        }


# ------------------------------------------------------------------------------ the skeleton
def start_run(cfg, out_dir, kind: str, *, mutable: tuple[str, ...], overrides, is_main=True):
    """The start both scripts share: seed and thread checks, the run directory (lock, resume
    config, ``config.yaml``) and a ``running`` summary. Returns ``(cfg, run_dir, lock)``."""
    check_seed(cfg.seed)
    set_threads(cfg.threads)
    cfg, run_dir, lock = open_run(
        cfg, out_dir, kind, mutable=mutable, overrides=overrides, is_main=is_main
    )
    if is_main:
        write_summary(run_dir, {"status": "running", "pid": os.getpid()})
    return cfg, run_dir, lock


def resume_state(run_dir, device, required: tuple[str, ...]) -> tuple[int, dict]:
    """``(step, state)`` of the run's newest valid checkpoint, or ``(0, {})`` for a new run."""
    found = load_latest_checkpoint(run_dir, map_location=device, required=required)
    if found is None:
        return 0, {}
    ckpt, state = found
    log.info("resuming from %s at step %d", ckpt, int(state["step"]))
    return int(state["step"]), state


def end_run(run: Outcome, *, monitor, writer, pbar=None, lock=None, diag=None) -> str:
    """The end both scripts share (also after an exception): the health verdict, the run's
    status text, the cost report, the writer closed and the run lock released."""
    if pbar is not None:
        pbar.close()
    try:
        verdict = monitor.finish(run.step)
        writer.text(tags.RUN_STATUS, f"{run.status} at step {run.step}", run.step)
        writer.hparams_end("success" if run.status == "completed" else "failure")
        if diag is not None:
            log.info("diagnostics: %s", diag.summary())
        log.info("diagnostics cost:\n%s", writer.cost_report())
        writer.close()
    finally:
        if lock is not None:
            lock.release()
    return verdict


def log_preempted(preempt: Preemption, step: int, run_dir, code: int) -> None:
    log.warning(
        "%s received: saved step %d in %s; exiting with code %d (rerun to resume)",
        preempt.received_name,
        step,
        run_dir,
        code,
    )


def stop_if_nonfinite(guard, run_dir: str | os.PathLike, monitor) -> None:
    """At a write, before anything is saved: read the device-side non-finite guard (one host
    copy, :class:`diagnostics.health.StepGuard`) and stop with the last good checkpoint."""
    bad = guard.verdict()
    if bad is not None:
        msg = bad[1] + f" Last good checkpoint: {latest_checkpoint(run_dir)}"
        monitor.report_nonfinite(bad[0], msg)
        raise StopTraining(msg)
