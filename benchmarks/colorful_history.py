"""Per-write cost of one layer's colorful-dimension history + image, 50,000 writes.

    OMP_NUM_THREADS=1 python benchmarks/colorful_history.py [--writes 50000]

Reports ms/write around writes 1k, 10k and 50k for the bounded ColumnHistory (what
ActivationStats uses) and, side by side in the same run, for the old way (stack every past write
and merge at every write), which is stopped after --old-max writes because it grows linearly.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from diagnostics.activations import ColumnHistory, colorful_image

ROWS = 42  # 40 bins + under/overflow


def bench(n_writes: int, marks: list[int], old: bool) -> dict[int, float]:
    rng = np.random.default_rng(0)
    col = rng.integers(0, 1000, ROWS).astype(np.float64)
    hist, cols, out = ColumnHistory(ROWS), [], {}
    window = 200
    t0 = 0.0
    for k in range(1, n_writes + 1):
        if any(m - window < k <= m for m in marks):
            if k == next(m for m in marks if m - window < k <= m) - window + 1:
                t0 = time.perf_counter()
        if old:
            cols.append(col.copy())
            colorful_image(np.stack(cols, 1))
        else:
            hist.add(col, k)
            colorful_image(hist.array())
        if k in marks:
            out[k] = (time.perf_counter() - t0) / window * 1e3
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--writes", type=int, default=50_000)
    ap.add_argument("--old-max", type=int, default=1_000)
    a = ap.parse_args()
    torch.set_num_threads(1)
    marks = [m for m in (1_000, 10_000, 50_000) if m <= a.writes]
    new = bench(a.writes, marks, old=False)
    old = bench(min(a.old_max, a.writes), [m for m in marks if m <= a.old_max], old=True)
    print(
        f"torch threads {torch.get_num_threads()}; ms/write = mean over the 200 writes up to each mark"
    )
    print(f"{'writes':>8} {'bounded ms':>11} {'old ms':>9}")
    for m in marks:
        o = f"{old[m]:9.2f}" if m in old else f"{'(skipped)':>9}"
        print(f"{m:>8} {new[m]:11.2f} {o}")


if __name__ == "__main__":
    main()
