"""Projector start-up: how long TensorBoard's projector plugin takes to read a run's embeddings
config (what it does before its tab appears), for 100 exports of a (512, 64) embedding written
by ``SummaryWriter.add_embedding`` (every export listed) and by ``diagnostics.Writer.embedding``
(the newest 3 listed). Both measured side by side in one process; the ratio is the figure.

    .venv/bin/python benchmarks/projector.py
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from tensorboard.backend.event_processing import (  # noqa: E402
    data_provider,
    plugin_event_multiplexer,
)
from tensorboard.plugins import base_plugin  # noqa: E402
from tensorboard.plugins.projector import projector_plugin  # noqa: E402
from torch.utils.tensorboard import SummaryWriter  # noqa: E402

from diagnostics import Writer  # noqa: E402


def config_read_seconds(logdir: Path) -> tuple[float, int]:
    """Seconds of the plugin's config read (its is-active work) and the embeddings it lists."""
    mux = plugin_event_multiplexer.EventMultiplexer()
    mux.AddRunsFromDirectory(str(logdir))
    mux.Reload()
    ctx = base_plugin.TBContext(
        logdir=str(logdir),
        multiplexer=mux,
        data_provider=data_provider.MultiplexerDataProvider(mux, str(logdir)),
    )
    plugin = projector_plugin.ProjectorPlugin(ctx)
    t0 = time.perf_counter()
    plugin._update_configs()
    return time.perf_counter() - t0, sum(len(c.embeddings) for c in plugin._configs.values())


def main() -> None:
    """Print the two timings and their ratio."""
    torch.set_num_threads(1)
    x = np.random.default_rng(0).normal(size=(512, 64)).astype(np.float32)
    root = Path(tempfile.mkdtemp())
    old = SummaryWriter(str(root / "add_embedding"))
    for s in range(100):
        old.add_embedding(torch.from_numpy(x), global_step=s, tag="embed/D")
    old.add_scalar("a", 1.0, 0)
    old.close()
    with Writer(root / "writer") as w:
        for s in range(100):
            w.embedding(x, step=s, tag="embed/D")
        w.scalar("a", 1.0, 0)
    res = {k: config_read_seconds(root / k) for k in ("add_embedding", "writer")}
    for k, (sec, n) in res.items():
        print(f"{k:<14} {n:>4} embeddings listed  {sec:8.3f} s")
    print(f"ratio: {res['add_embedding'][0] / res['writer'][0]:.0f}x")


if __name__ == "__main__":
    main()
