"""Writing run files atomically: a reader (a notebook, a video job, a resumed run) sees the old
file or the new one, never half of one, also after a crash or a power cut.

The one home of the pattern: write ``<name>.tmp`` (or let a library write it), fsync it,
rename it over the target, fsync the directory.
"""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(d: str | os.PathLike) -> None:
    """Make a rename in ``d`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def tmp_path(path: str | os.PathLike) -> Path:
    """The temporary name a file is written under before :func:`commit` (``<name>.tmp``)."""
    path = Path(path)
    return path.with_name(path.name + ".tmp")


def commit(tmp: str | os.PathLike, path: str | os.PathLike) -> Path:
    """fsync the finished ``tmp``, rename it to ``path``, fsync the directory."""
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(Path(path).parent)
    return Path(path)


def atomic_write_bytes(data: bytes, path: str | os.PathLike) -> Path:
    """Write ``path.tmp``, fsync, rename, fsync the directory: ``path`` is old or new, never half."""
    path = Path(path)
    tmp = tmp_path(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        commit(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # no partial file left behind, the previous one untouched
        raise
    return path


def atomic_write_text(text: str, path: str | os.PathLike) -> Path:
    """:func:`atomic_write_bytes` of UTF-8 text."""
    return atomic_write_bytes(text.encode("utf-8"), path)
