"""The README's notebook and video commands, run as written from a copy of the checkout (the
files git tracks, as a fresh clone has them) with relative run paths."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]


def fresh_clone(dst: Path) -> Path:
    """The tracked files of this checkout (working-tree versions) copied to ``dst``, with the
    environment's ``.venv`` linked in (a fresh clone after ``make install``)."""
    files = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    for f in filter(None, files):
        src = ROOT / f.decode()
        if src.is_file():
            (dst / f.decode()).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / f.decode())
    (dst / ".venv").symlink_to(Path(sys.prefix))  # the venv running this suite
    return dst


def make(clone: Path, *args: str) -> subprocess.CompletedProcess:
    # -o: the venv is installed already (make would otherwise reinstall it: pyproject.toml is
    # newer in the copy); everything else is the README's command line
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("PYTHONPATH", None)
    env.pop("RUN", None)
    return subprocess.run(
        ["make", "-o", ".venv/.installed", *args],
        cwd=clone,
        capture_output=True,
        text=True,
        env=env,
        timeout=1200,
    )


@pytest.mark.slow
def test_readme_notebook_and_video_commands_from_a_fresh_clone(tmp_path, cache_dir, monkeypatch):
    from nbclient import NotebookClient

    from experiments import train_gan
    from tests.gan_helpers import gan_cfg
    from tests.test_notebooks import GAN_OVERRIDES

    clone = fresh_clone(tmp_path / "clone")
    run = clone / "outputs" / "gan" / "r1"
    train_gan.train(gan_cfg(cache_dir, *GAN_OVERRIDES), run)

    # make notebooks RUN=outputs/gan/<run>: the executed copy with its figures in the run
    out = make(clone, "notebooks", "RUN=outputs/gan/r1")
    assert out.returncode == 0, out.stderr[-3000:]
    nb = nbformat.read(run / "notebooks" / "gan.ipynb", as_version=4)
    pngs = sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))
    assert pngs >= 10
    assert "Warning" not in out.stderr, out.stderr[-3000:]

    # RUN=outputs/gan/<run> jupyter lab notebooks/gan.ipynb: jupyter runs the kernel in
    # notebooks/ with the environment of the shell in the clone (RUN relative, PWD the clone)
    monkeypatch.setenv("RUN", "outputs/gan/r1")
    monkeypatch.setenv("PWD", str(clone))
    monkeypatch.setenv("PYTHONPATH", str(clone))  # what `pip install -e .` gives in a clone
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(clone / "notebooks" / "gan.ipynb", as_version=4)
    NotebookClient(
        nb,
        kernel_name="python3",
        timeout=600,
        resources={"metadata": {"path": str(clone / "notebooks")}},
    ).execute()
    first = "".join(o.get("text", "") for o in nb.cells[1].outputs)
    assert f"run {run}" in first

    # make video RUN=outputs/gan/<run> (JOBS=2 by default): videos of >= 5 s, no warning spam
    out = make(clone, "video", "RUN=outputs/gan/r1")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Warning" not in out.stderr, out.stderr[-3000:]
    import imageio_ffmpeg

    videos = sorted((run / "videos").glob("*.mp4"))
    assert {"slices_p0.mp4", "act_colordim.mp4", "weights_small.mp4"} <= {v.name for v in videos}
    for v in videos:
        n, secs = imageio_ffmpeg.count_frames_and_secs(str(v))
        assert secs >= 5.0 - 0.1 and n >= 60, (v.name, n, secs)


def test_relative_run_found_from_the_notebooks_directory(tmp_path, monkeypatch):
    from diagnostics.snapshots import resolve_run_dir

    run = tmp_path / "outputs" / "gan" / "r"
    run.mkdir(parents=True)
    (tmp_path / "notebooks").mkdir()
    monkeypatch.chdir(tmp_path / "notebooks")
    monkeypatch.setenv("PWD", "/nonexistent")  # found through the parents of the kernel's cwd
    assert resolve_run_dir("outputs/gan/r") == run.resolve()
    monkeypatch.setenv("RUN", "outputs/gan/r")
    assert resolve_run_dir() == run.resolve()
    with pytest.raises(FileNotFoundError, match="RUN='outputs/gan/missing' is not a directory"):
        resolve_run_dir("outputs/gan/missing")
    monkeypatch.delenv("RUN")
    with pytest.raises(FileNotFoundError, match="RUN is not set"):
        resolve_run_dir()
