"""Every notebook runs top to bottom in a real Jupyter kernel on a run this suite makes."""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
import pytest
from hydra import compose, initialize_config_dir
from nbclient import NotebookClient

from diagnostics.embeddings import list_embeddings
from diagnostics.snapshots import list_snapshots, load_snapshot

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"

# A few steps of each experiment; every period is short enough that the run has several
# snapshots, events and embedding files (start, every, end). The GAN uses the tiny sizes and
# built-in data of tests/gan_helpers.py.
AE_OVERRIDES = [
    "+exp=small",
    "train.n_epochs=2",
    "train.steps_per_epoch=10",
    "frames.every=10",
    "checkpoint.every=20",
    "diagnostics.every=5",
    "diagnostics.record_every=1",
]
GAN_OVERRIDES = [
    "train.steps=4",
    "log.slices_every=2",
    "snapshot.every=2",
    "checkpoint.every=4",
    "diagnostics.every=2",
    "diagnostics.record_every=1",
]
EMBED_MODEL = {"autoencoder": "AE", "gan": "D"}


def make_run(kind: str, tmp_path: Path) -> Path:
    """Train ``kind`` for a few steps through its own ``train(cfg, out_dir)``; the run directory."""
    out_dir = tmp_path / kind
    if kind == "gan":
        from experiments import train_gan
        from tests.gan_helpers import gan_cfg

        train_gan.train(gan_cfg(tmp_path / "cache", *GAN_OVERRIDES), out_dir)
        return out_dir
    from experiments import train_autoencoder

    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf" / "autoencoder")):
        cfg = compose(config_name="train_autoencoder", overrides=AE_OVERRIDES)
    train_autoencoder.train(cfg, out_dir)
    return out_dir


def execute(path: Path, run_dir: Path, monkeypatch) -> nbformat.NotebookNode:
    """Run the notebook with RUN set; a cell that raises fails the test (CellExecutionError)."""
    nb = nbformat.read(path, as_version=4)
    # the kernel must be this environment's interpreter, not some other python3 on the machine
    nb.cells.append(nbformat.v4.new_code_cell("import sys; print(sys.executable)"))
    monkeypatch.setenv("RUN", str(run_dir))
    monkeypatch.setenv("MPLBACKEND", "Agg")  # the notebooks switch to inline themselves
    client = NotebookClient(
        nb, kernel_name="python3", timeout=300, resources={"metadata": {"path": str(ROOT)}}
    )
    client.execute()
    printed = "".join(o.get("text", "") for o in nb.cells[-1].outputs)
    assert printed.strip() == sys.executable
    return nb


def images(cell) -> int:
    return sum("image/png" in o.get("data", {}) for o in cell.get("outputs", []))


def cell_with(nb, text: str):
    (cell,) = [c for c in nb.cells if c.cell_type == "code" and text in c.source]
    return cell


def test_notebook_outputs_are_not_committed():
    paths = sorted(NOTEBOOKS.glob("*.ipynb"))
    assert {p.stem for p in paths} >= {"autoencoder", "gan"}
    for p in paths:
        nb = nbformat.read(p, as_version=4)
        nbformat.validate(nb)
        for c in nb.cells:
            if c.cell_type == "code":
                assert c.outputs == [] and c.execution_count is None, f"{p.name} has outputs"


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["autoencoder", "gan"])
def test_notebook_runs_on_a_fresh_run(kind, tmp_path, monkeypatch):
    run_dir = make_run(kind, tmp_path)
    model = EMBED_MODEL[kind]
    steps = [s for s, _ in list_embeddings(run_dir, model)]
    assert len(steps) >= 2, (
        f"{run_dir}: expected embeddings of {model} at start and end, got {steps}"
    )
    nb = execute(NOTEBOOKS / f"{kind}.ipynb", run_dir, monkeypatch)
    # the dendrogram cell drew the first and the newest embeddings; the scatter cell at least one
    assert images(cell_with(nb, "emb.dendrogram(d, t")) == 2
    assert images(cell_with(nb, "emb.scatter_annotated(da, thumbs")) >= 1
    panels = cell_with(nb, 'plot_scalars([t for t in scalar_tags if t.startswith("loss/")]')
    if kind == "gan":  # losses, balance, gradient norms, spectra, health: no panel left empty
        assert images(panels) == 5, [o.get("text") for o in panels.outputs]
    else:
        assert images(panels) >= 1
    if kind == "autoencoder":
        assert images(cell_with(nb, "render_summary_frame(ctx, snap)")) == 1
        assert images(cell_with(nb, "Reconstructions of the fixed")) == 2
        # encoder and decoder weights, drawn by the live renderer (not the biases)
        assert images(cell_with(nb, "snapshot_images(load_snapshot(snaps[0][1])")) == 2
    else:
        # one panel per probe sample at the first and at the newest snapshot
        n_probe = len(load_snapshot(list_snapshots(run_dir)[-1][1])["probe/fake"])
        assert images(cell_with(nb, "slice_panel(")) == 2 * n_probe
        assert images(cell_with(nb, "weight_imgs = snapshot_images(")) == 5  # 3 of G, 2 of D
        # skill against trilinear: written at the end of every run, one figure of three panels
        assert images(cell_with(nb, "skill_tags = [t for t in scalar_tags")) == 1
