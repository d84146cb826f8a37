"""Shared check for tests that compare two runs' diagnostics records (snapshot arrays, history)."""

from __future__ import annotations

import numpy as np


def recorded_run(diag, opt, loss_fn, steps: int):
    """Train ``steps`` steps (``loss_fn(step)`` gives the loss) inside ``diag``; the snapshot
    arrays after every even step and at the end, and ``diag``."""
    arrays = []
    with diag:
        for step in range(steps):
            opt.zero_grad()
            loss_fn(step).backward()
            opt.step()
            diag.step(step)
            if step % 2 == 0:
                arrays.append(diag.snapshot_arrays())
    arrays.append(diag.snapshot_arrays())
    return arrays, diag


def assert_same_records(
    a, b, *, rtol: float = 1e-5, atol: float = 1e-7, bin_moves: float = 0.0
) -> None:
    """``a``, ``b``: (list of ``snapshot_arrays()`` dicts, Diagnostics). Histogram counts equal
    (and are not all zero); other arrays and every history scalar within tolerance.

    ``bin_moves`` > 0 allows values to sit in a neighbouring bin, for runs whose values differ in
    rounding (a compiled model's kernels): per layer the totals must still be equal and the
    moves, counted as bins x values (the 1-D earth mover's distance), at most that share of the
    values."""
    (sa, da), (sb, db) = a, b
    assert len(sa) == len(sb)
    for x, y in zip(sa, sb, strict=True):
        assert set(x) == set(y)
        for k in x:
            if k.startswith("act_hist/"):
                assert x[k].sum() > 0, k
                if bin_moves:
                    assert y[k].sum() == x[k].sum(), k
                    moves = np.abs(np.cumsum(y[k]) - np.cumsum(x[k])).sum()
                    assert moves <= bin_moves * x[k].sum(), (k, moves, x[k], y[k])
                else:
                    np.testing.assert_array_equal(y[k], x[k], err_msg=k)
            else:
                np.testing.assert_allclose(y[k], x[k], rtol=1e-5, err_msg=k)
    assert set(da.history) == set(db.history)
    for tag, vals in da.history.items():
        got = db.history[tag]
        assert [s for s, _ in got] == [s for s, _ in vals], tag
        np.testing.assert_allclose(
            [v for _, v in got], [v for _, v in vals], rtol=rtol, atol=atol, err_msg=tag
        )
