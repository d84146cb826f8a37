"""Execute the interpretation notebook of a run against it: ``make notebooks RUN=...``.

``python notebooks/execute.py RUN [RUN ...]`` picks ``notebooks/<kind>.ipynb`` by the run's kind
(``snapshots/meta.json``), runs it top to bottom in a Jupyter kernel of this interpreter, in
``notebooks/`` as Jupyter would, and writes the executed copy with its figures to
``RUN/notebooks/<kind>.ipynb`` (open it with any notebook viewer; no server needed). Exit status 2
when a run cannot be read, 1 when a cell fails (the error names the cell).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the diagnostics library of this checkout


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    p = argparse.ArgumentParser(
        prog="python notebooks/execute.py", description=__doc__.split("\n")[0]
    )
    p.add_argument(
        "runs", nargs="+", metavar="RUN", help="run directory (relative paths from here)"
    )
    p.add_argument("--timeout", type=int, default=600, help="seconds per cell (default 600)")
    args = p.parse_args(argv)

    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    from diagnostics.snapshots import read_meta, resolve_run_dir

    for raw in args.runs:
        try:
            run = resolve_run_dir(raw)
            kind = read_meta(run).get("kind")
        except (OSError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        src = HERE / f"{kind}.ipynb"
        if not src.is_file():
            print(f"error: {run}: no notebook for runs of kind {kind!r} ({src})", file=sys.stderr)
            return 2
        nb = nbformat.read(src, as_version=4)
        os.environ["RUN"] = str(run)
        # the kernel imports the diagnostics of this checkout, whatever else is installed
        os.environ["PYTHONPATH"] = os.pathsep.join(
            [str(HERE.parent), *filter(None, [os.environ.get("PYTHONPATH")])]
        )
        os.environ.setdefault("MPLBACKEND", "Agg")
        client = NotebookClient(
            nb,
            kernel_name="python3",
            timeout=args.timeout,
            resources={"metadata": {"path": str(HERE)}},
        )
        out = run / "notebooks" / src.name
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            client.execute()
        except CellExecutionError as e:
            nbformat.write(nb, out)
            print(
                f"error: {src.name} failed on {run} (partial output in {out}):\n{e}",
                file=sys.stderr,
            )
            return 1
        nbformat.write(nb, out)
        print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
