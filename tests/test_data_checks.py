"""Plausibility checks per file/variable/layer, drop_r, lazy crops and prefetching workers."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import torch

from experiments import distributed
from experiments.data import mantle, plausibility, synthetic
from experiments.data.errors import DataError
from experiments.train_gan import Batches, BatchStream, load_data, train
from tests.gan_helpers import ROOT, gan_cfg

SHAPE = (8, 12, 16)  # (lat, r, lon)
VARS = list(mantle.VARIABLES)


def bad_set(tmp_path, n=3, **kw):
    """The contest's defects at the outermost radii: r[10] all 0.0, r[11] garbage 1e20..1e30."""
    d = tmp_path / "data"
    synthetic.write_set(d, n, shape=SHAPE, zero_r=[10], garbage_r=[11], **kw)
    return d


def problems(d, steps, **kw):
    paths = [d / mantle.file_name(s) for s in steps]
    return plausibility.find_problems(plausibility.scan(paths, VARS), VARS, **kw)


def test_clean_synthetic_and_builtin_like_walls_pass(tmp_path):
    d = tmp_path / "ok"
    # isothermal walls and vz = 0 at both walls (the built-in data's boundary conditions)
    synthetic.write_set(
        d, 2, shape=SHAPE, constant={"temperature": {0: 3800.0, 11: 300.0}, "vz": {0: 0.0, 11: 0.0}}
    )
    assert problems(d, [1, 2]) == []


def test_zero_and_garbage_layers_are_named_with_the_drop_r_that_drops_them(tmp_path):
    d = bad_set(tmp_path)
    ps = problems(d, [1, 2, 3])
    got = {(os.path.basename(p.path), p.variable, p.layer, p.kind) for p in ps}
    want = {(mantle.file_name(s), v, 10, "constant") for s in (1, 2, 3) for v in VARS}
    want |= {(mantle.file_name(s), v, 11, "bounds") for s in (1, 2, 3) for v in VARS}
    assert got == want
    t0 = next(p for p in ps if p.variable == "temperature" and p.layer == 10)
    assert "constant 0, outside the physical bounds [1, 10000]" in t0.detail
    msg = plausibility.report(ps, 3, d, [])
    assert "in 3 of 3 file(s)" in msg
    assert "spherical001.nc..spherical003.nc (3 files)" in msg
    assert "data.drop_r=[10, 11]" in msg
    assert problems(d, [1, 2, 3], drop_r=[10, 11]) == []


def test_outlier_against_neighbouring_layers_without_declared_bounds(tmp_path):
    d = tmp_path / "d"
    # a variable without physical bounds: values 1000x its neighbours' span at r[5] only
    d.mkdir()
    synthetic.write_file(d / "x.nc", shape=SHAPE, variables=["rho"])
    import xarray as xr

    ds = xr.load_dataset(d / "x.nc")
    ds["rho"][3, 5, 7] = 1e-6  # neighbours are ~1e-9 noise
    ds.to_netcdf(d / mantle.file_name(1))
    st = plausibility.scan([d / mantle.file_name(1)], ["rho"])
    ps = plausibility.find_problems(st, ["rho"])
    assert [(p.variable, p.layer, p.kind) for p in ps] == [("rho", 5, "outlier")]
    assert "neighbouring layers r[2..8]" in ps[0].detail
    # declared bounds override: rho must lie in [0, 1] -> every layer of noise < 0 is out of bounds
    ps = plausibility.find_problems(st, ["rho"], bounds={"rho": (0.0, 1.0)})
    assert {p.kind for p in ps} == {"bounds"} and len(ps) == SHAPE[1]


def test_nan_constant_interior_and_hand_values(tmp_path):
    d = tmp_path / "d"
    synthetic.write_set(d, 1, shape=SHAPE, nan={"vx": [4]}, constant={"vy": {6: 2e-9}})
    ps = problems(d, [1])
    assert [(p.variable, p.layer, p.kind) for p in ps] == [
        ("vx", 4, "non-finite"),
        ("vy", 6, "constant"),
    ]
    assert ps[0].detail == "1 NaN/Inf values"
    assert ps[1].detail == "constant 2e-09, an interior layer"
    st = plausibility.file_stats(d / mantle.file_name(1), ["vx"])
    assert st.n_bad[0].tolist() == [0, 0, 0, 0, 1] + [0] * 7


def test_scaling_statistics_equal_scaler_fit_on_loaded_fields(tmp_path):
    d = bad_set(tmp_path, n=2)
    st = plausibility.scan([d / mantle.file_name(s) for s in (1, 2)], VARS)
    vmin, vmax = plausibility.scaling(st, [10, 11])
    ref = mantle.Scaler.fit(mantle.load_fields(d, [1, 2], VARS, [10, 11]), VARS)
    assert vmin == ref.vmin and vmax == ref.vmax


def gan_data_cfg(tmp_path, d, *ov):
    return gan_cfg(
        tmp_path,
        f"data.dir={d}",
        "data.train_steps=[1,2]",
        "data.val_steps=[3]",
        *ov,
    )


def test_load_data_strict_warn_off(tmp_path, caplog):
    d = bad_set(tmp_path)
    with pytest.raises(DataError) as e:
        load_data(gan_data_cfg(tmp_path, d), tmp_path / "run", write=False)
    msg = str(e.value)
    assert "spherical003.nc" in msg  # the validation file is checked too
    assert "data.drop_r=[10, 11]" in msg and "temperature r[10] (r=6108.64 km)" in msg
    # only the garbage layer dropped: the all-zero layer still stops the run (0 K temperature)
    with pytest.raises(
        DataError, match=r"(?s)temperature r\[10\].*constant 0.*data\.drop_r=\[10, 11\]"
    ):
        load_data(gan_data_cfg(tmp_path, d, "data.drop_r=[11]"), tmp_path / "run", write=False)
    *_, scaler, coords, _ = load_data(
        gan_data_cfg(tmp_path, d, "data.drop_r=[-1,-2]"), tmp_path / "run", write=False
    )
    assert len(coords["r"]) == 10 and scaler.vmin[0] > 250  # no 0 K, no 1e30
    with caplog.at_level("WARNING"):
        *_, scaler, _, _ = load_data(
            gan_data_cfg(tmp_path, d, "data.check=warn"), tmp_path, write=False
        )
    assert "data.check=warn" in caplog.text and abs(scaler.vmax[0]) > 1e19
    load_data(gan_data_cfg(tmp_path, d, "data.check=off"), tmp_path, write=False)
    with pytest.raises(DataError, match="data.check must be one of"):
        load_data(gan_data_cfg(tmp_path, d, "data.check=loose"), tmp_path, write=False)


def test_nan_in_a_validation_file_stops_in_every_mode(tmp_path):
    d = tmp_path / "d"
    synthetic.write_set(d, 2, shape=SHAPE)
    synthetic.write_file(d / mantle.file_name(3), shape=SHAPE, seed=3, nan={"vz": [7]})
    for mode in ("strict", "warn", "off"):
        with pytest.raises(DataError, match=r"(?s)vz r\[7\].*non-finite.*spherical003\.nc"):
            load_data(gan_data_cfg(tmp_path, d, f"data.check={mode}"), tmp_path, write=False)


def test_drop_r_out_of_range(tmp_path):
    d = tmp_path / "d"
    synthetic.write_set(d, 3, shape=SHAPE)
    with pytest.raises(
        DataError, match=r"data\.drop_r=\[0, 1, 200\]: index\(es\) \[200\] outside the 12"
    ):
        load_data(gan_data_cfg(tmp_path, d, "data.drop_r=[0,1,200]"), tmp_path, write=False)
    assert plausibility.check_drop_r([-1, 0, 11], 12, "f") == [0, 11]
    with pytest.raises(DataError, match="drops all 2"):
        plausibility.check_drop_r([0, 1], 2, "f")


def run_script(*args):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=env, timeout=300
    )
    out.stderr = out.stdout + out.stderr  # Hydra's log goes to stdout
    return out


def test_cli_exit_2_with_every_bad_layer_and_for_drop_r(tmp_path):
    d = bad_set(tmp_path)
    script = str(ROOT / "experiments" / "train_gan.py")
    common = ["+exp=small", f"data.dir={d}", f"out_root={tmp_path}/out"]
    out = run_script(script, *common)
    assert out.returncode == 2, out.stderr[-2000:]
    assert "data.drop_r=[10, 11]" in out.stderr and "vz r[11]" in out.stderr
    out = run_script(script, *common, "data.drop_r=[0,1,200]")
    assert out.returncode == 2 and "outside the 12 radial layers" in out.stderr
    assert not list((tmp_path / "out").rglob("ckpt_*.pt"))


def test_autoencoder_cli_exit_2_names_a_text_file(tmp_path):
    text = tmp_path / "fields.nc"
    text.write_text("not netcdf\n")
    out = run_script(
        str(ROOT / "experiments" / "train_autoencoder.py"),
        f"data.paths=[{text}]",
        "data.variable=z",
        f"out_root={tmp_path}/out",
    )
    assert out.returncode == 2 and re.search(r"fields\.nc: unreadable", out.stderr)


def test_lazy_crops_equal_in_memory_crops_bit_for_bit(tmp_path):
    d = tmp_path / "d"
    synthetic.write_set(d, 3, shape=SHAPE)
    drop = [0, 5, 11]  # an interior gap: lazy reads span it
    fields = mantle.load_fields(d, [1, 2, 3], VARS, drop)
    scaler = mantle.Scaler.fit(fields, VARS)
    eager = mantle.CropDataset(scaler.transform(fields), (4, 4, 8), 2, seed=3)
    paths = [d / mantle.file_name(s) for s in (1, 2, 3)]
    lazy = mantle.LazyCropDataset(
        paths, VARS, 12, drop, scaler, (4, 4, 8), 2, n_lat=8, n_lon=16, seed=3, max_open=2
    )
    assert lazy.shape == eager.shape
    for i in range(40):  # lon windows wrap past 360 in some
        for a, b in zip(eager[i], lazy[i], strict=True):
            assert torch.equal(a, b)
    assert len(lazy._open) <= 2
    ea, eb, ew = eager.probe_samples(3)
    la, lb, lw = lazy.probe_samples(3)
    assert ew == lw and torch.equal(ea, la) and torch.equal(eb, lb)


def test_workers_deliver_the_stream_order_and_keep_its_state(tmp_path):
    d = tmp_path / "d"
    synthetic.write_set(d, 2, shape=SHAPE)
    fields = mantle.load_fields(d, [1, 2], VARS)
    scaler = mantle.Scaler.fit(fields, VARS)
    ds = mantle.LazyCropDataset(
        [d / mantle.file_name(s) for s in (1, 2)], VARS, 12, [], scaler, (4, 4, 8), 2,
        n_lat=8, n_lon=16, length=12,
    )  # fmt: skip
    info = distributed.DistInfo()
    ref_stream, stream = BatchStream(12, 4, info, 0), BatchStream(12, 4, info, 0)
    ref, par = Batches(ds, ref_stream, 0), Batches(ds, stream, 2, prefetch=2)
    for _ in range(7):  # past an epoch boundary (3 batches per epoch)
        a, b = ref.next(), par.next()
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        assert stream.state() == ref_stream.state()  # consumed, not prefetched, position


def test_lazy_resume_with_workers_is_exact(tmp_path):
    d = tmp_path / "d"
    synthetic.write_set(d, 3, shape=SHAPE)
    ov = ["data.lazy=true", "data.n_workers=1", "checkpoint.every=2", "diagnostics.every=1"]
    torch.use_deterministic_algorithms(True)
    try:
        a, b = tmp_path / "a", tmp_path / "b"
        train(gan_data_cfg(tmp_path, d, *ov, "train.steps=4"), a)
        train(gan_data_cfg(tmp_path, d, *ov, "train.steps=2"), b)
        train(gan_data_cfg(tmp_path, d, *ov, "train.steps=4", f"resume={b}"), b)
        c = tmp_path / "c"  # in memory, no workers: the same training
        train(
            gan_data_cfg(tmp_path, d, "data.lazy=false", "checkpoint.every=2", "train.steps=4"), c
        )
    finally:
        torch.use_deterministic_algorithms(False)
    from experiments import common

    sa, sb, sc = (torch.load(common.latest_checkpoint(x), weights_only=True) for x in (a, b, c))
    for net in ("G", "D"):
        for k, v in sa[net].items():
            assert torch.equal(v, sb[net][k]), f"{net}.{k} differs after resume"
            assert torch.equal(v, sc[net][k]), f"{net}.{k} differs from the in-memory run"
