"""The GAN experiment end to end: configs, events, checkpoints, resume and bad input."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ConfigKeyError

from experiments import common
from experiments.data import mantle
from experiments.train_gan import train
from tests.gan_helpers import GAN_CONF, ROOT, events, gan_cfg, poison_critic_at

EXPS = sorted(p.stem for p in (GAN_CONF / "exp").glob("*.yaml"))


def acc_text(run_dir, tag: str) -> str:
    """The last text summary ``tag`` of the run, read through TensorBoard's reader."""
    from tensorboard.util import tensor_util

    ev = events(run_dir).Tensors(f"{tag}/text_summary")[-1]
    return tensor_util.make_ndarray(ev.tensor_proto).item().decode()


@pytest.mark.parametrize("exp", EXPS)
def test_every_exp_config_runs_two_steps(exp, cache_dir, tmp_path):
    # One pretraining step, one adversarial step: overlays with MSE pretraining reach the critic too.
    cfg = gan_cfg(
        cache_dir,
        "train.steps=2",
        "train.pretrain_steps=1",
        "diagnostics.every=1",
        "log.slices_every=2",
        exp=exp,
    )
    out = train(cfg, tmp_path)
    assert out["status"] == "completed" and out["step"] == 2
    tags = events(tmp_path).Tags()
    for tag in (
        "loss/D",
        "loss/G",
        "loss/gp",
        "gan/gap",  # the Wasserstein estimate: mean score on real minus on generated
        "gan/score_real",
        "gan/score_fake",
        "gan/real_positive",
        "gan/grad_norm/G",
        "gan/grad_norm/D",
        "gan/diversity",
        "spectrum/temperature/ratio_high",
        "spectrum2d/temperature/ratio_high",
        "values/temperature/w1",
        "health/nonfinite",
    ):
        assert tag in tags["scalars"], tag
    assert {"slices/G/probe0", "spectrum/3d", "spectrum2d/2d", "values/figure"} <= set(
        tags["images"]
    )
    # live weight maps of every conv layer of both networks, none of biases
    weight_tags = {t for t in tags["images"] if t.startswith("weights_img/")}
    assert {"weights_img/G/proj", "weights_img/D/score"} <= weight_tags, weight_tags
    assert any(t.startswith("weights_img/G/") and "conv" in t for t in weight_tags)
    assert not any("bias" in t for t in weight_tags)
    cost = acc_text(tmp_path, "diagnostics/cost")
    assert "weights_img" in cost and "slices" in cost


def test_events_scalars_and_slice_images(cache_dir, tmp_path):
    cfg = gan_cfg(
        cache_dir, "train.steps=4", "diagnostics.every=2", "log.slices_every=2", "log.n_probe=2"
    )
    train(cfg, tmp_path)
    acc = events(tmp_path)
    assert [e.step for e in acc.Scalars("loss/D")] == [2, 4]
    imgs = acc.Images("slices/G/probe1")
    assert [e.step for e in imgs] == [2, 4]
    # 4 columns (variables) of 224 px cells (8 px crop x 28) with 3 px gaps; 4 rows
    # (input, generated, truth, difference) each with a 42 px title strip and a 34 px colour bar
    assert (imgs[0].width, imgs[0].height) == (4 * (224 + 3) + 3, 4 * (224 + 42 + 34 + 3) + 3)


def test_probe_panels_are_fixed_samples(cache_dir, tmp_path):
    """The truth row of a probe panel is identical at every write (fixed, seeded probe samples)."""
    cfg = gan_cfg(cache_dir, "train.steps=4", "log.slices_every=2", "snapshot.every=2")
    train(cfg, tmp_path)
    from diagnostics.snapshots import list_snapshots, load_snapshot

    assert [s for s, _ in list_snapshots(tmp_path)] == [0, 2, 4]  # step 0: the untrained model
    snaps = [load_snapshot(p) for _, p in list_snapshots(tmp_path)]
    assert all((s["probe/truth"] == snaps[0]["probe/truth"]).all() for s in snaps)
    assert not (snaps[0]["weights/G/proj.weight"] == snaps[2]["weights/G/proj.weight"]).all()


def test_checkpoint_resume_continues(cache_dir, tmp_path):
    cfg = gan_cfg(
        cache_dir,
        "train.steps=4",
        "checkpoint.every=2",
        "diagnostics.every=1",
        "checkpoint.n_keep=5",
    )
    train(cfg, tmp_path)
    ckpts = common.list_checkpoints(tmp_path / "checkpoints")
    assert [s for s, _ in ckpts] == [2, 4]
    state = torch.load(ckpts[-1][1], weights_only=True)
    assert {"G", "D", "opt_G", "opt_D", "step", "rng", "data", "complete"} <= set(state)
    assert not list((tmp_path / "checkpoints").glob("*.tmp"))

    cfg2 = gan_cfg(
        cache_dir,
        "train.steps=6",
        "checkpoint.every=2",
        "diagnostics.every=1",
        f"resume={tmp_path}",
    )
    out = train(cfg2, tmp_path / "ignored")
    assert out["step"] == 6
    assert [s for s, _ in common.list_checkpoints(tmp_path / "checkpoints")][-1] == 6
    steps = [e.step for e in events(tmp_path).Scalars("loss/D")]
    assert steps == sorted(set(steps)) == list(range(1, 7))  # one point per step after resume


def test_resume_is_exact(cache_dir, tmp_path):
    """4 steps straight equal 2 steps, stop, resume 2 more (CPU, deterministic)."""
    torch.use_deterministic_algorithms(True)
    try:
        a, b = tmp_path / "a", tmp_path / "b"
        train(gan_cfg(cache_dir, "train.steps=4", "checkpoint.every=2"), a)
        train(gan_cfg(cache_dir, "train.steps=2", "checkpoint.every=2"), b)
        train(gan_cfg(cache_dir, "train.steps=4", "checkpoint.every=2", f"resume={b}"), b)
    finally:
        torch.use_deterministic_algorithms(False)
    sa = torch.load(common.latest_checkpoint(a), weights_only=True)
    sb = torch.load(common.latest_checkpoint(b), weights_only=True)
    for net in ("G", "D"):
        for k, v in sa[net].items():
            assert torch.equal(v, sb[net][k]), f"{net}.{k} differs after resume"


def test_atomic_save_keeps_previous_on_failure(tmp_path):
    path = tmp_path / "ckpt_00000001.pt"
    common.atomic_torch_save({"x": torch.ones(2)}, path)

    class Boom:
        def __reduce__(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        common.atomic_torch_save({"x": Boom()}, path)
    assert torch.equal(torch.load(path, weights_only=True)["x"], torch.ones(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no partial file


def test_poisoned_checkpoint_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.getcwd, ())

    path = tmp_path / "ckpt_00000001.pt"
    torch.save({"obj": Evil()}, path)
    with pytest.raises(RuntimeError, match="not a loadable checkpoint"):
        common.load_checkpoint(path)


def test_missing_data_dir_fails_before_training(cache_dir, tmp_path):
    cfg = gan_cfg(cache_dir, f"data.dir={tmp_path / 'nope'}")
    with pytest.raises(mantle.DataError, match="nope"):
        train(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_bad_file_listed_before_training(cache_dir, tmp_path):
    src = mantle.ensure_builtin(cache_dir, **mantle.TINY)
    data = tmp_path / "data"
    data.mkdir()
    files = sorted(src.glob("spherical*.nc"))
    for f in files:
        (data / f.name).write_bytes(f.read_bytes())
    (data / files[1].name).write_bytes(files[1].read_bytes()[:200])  # truncated
    (data / files[2].name).write_bytes(b"not a netcdf file")
    cfg = gan_cfg(cache_dir, f"data.dir={data}")
    with pytest.raises(mantle.DataError) as e:
        train(cfg, tmp_path / "run")
    assert files[1].name in str(e.value) and files[2].name in str(e.value)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_config_errors_fail_at_start(cache_dir, tmp_path):
    with initialize_config_dir(config_dir=str(GAN_CONF), version_base="1.3"):
        with pytest.raises((ConfigCompositionException, ConfigKeyError), match="no_such_key"):
            compose(config_name="train_gan", overrides=["train.no_such_key=1"])
    cfg = gan_cfg(cache_dir, "train.steps=many", "train.lr_d=fast", "diagnostics.every=0")
    with pytest.raises(ValueError) as e:
        train(cfg, tmp_path)
    msg = str(e.value)
    assert "train.steps='many' (expected an integer)" in msg
    assert "train.lr_d='fast' (expected a number)" in msg
    assert "diagnostics.every=0 (expected >= 1)" in msg
    assert not any(tmp_path.iterdir())  # nothing written before the error


def test_bad_crop_is_a_clear_error(cache_dir, tmp_path):
    with pytest.raises(ValueError, match="divisible by data.factor"):
        train(gan_cfg(cache_dir, "data.crop=[7,8,8]"), tmp_path)


def test_cli_help_and_unknown_key():
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    script = str(ROOT / "experiments" / "train_gan.py")
    out = subprocess.run(
        [sys.executable, script, "--help"], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 0 and "train_gan" in out.stdout
    bad = subprocess.run(
        [sys.executable, script, "+exp=small", "train.bogus=1"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert bad.returncode != 0 and "bogus" in bad.stderr


def test_nan_values_in_a_file_are_bad_input(cache_dir, tmp_path):
    import xarray as xr

    src = mantle.ensure_builtin(cache_dir, **mantle.TINY)
    data = tmp_path / "data"
    data.mkdir()
    for f in sorted(src.glob("spherical*.nc")):
        ds = xr.load_dataset(f)
        if f.name == "spherical002.nc":
            ds["vx"][0, 0, 0] = float("nan")
        ds.to_netcdf(data / f.name)
    with pytest.raises(mantle.DataError, match="spherical002.nc"):
        train(gan_cfg(cache_dir, f"data.dir={data}"), tmp_path / "run")


def test_nan_in_critic_loss_stops_without_applying_the_step(cache_dir, tmp_path, monkeypatch):
    """A NaN injected into the critic's loss at step k: no update, parameters equal to those after
    step k-1 (its checkpoint), the run stops with a message naming the step and the tensor."""
    import experiments.train_gan as tg

    k, n_critic = 3, 2  # TINY uses train.n_critic=2
    built = poison_critic_at(monkeypatch, k, n_critic)
    cfg = gan_cfg(cache_dir, "train.steps=6", "checkpoint.every=1", "checkpoint.n_keep=10")
    with pytest.raises(tg.StopTraining, match=rf"step {k}.*loss/D") as e:
        train(cfg, tmp_path)
    assert "not applied" in str(e.value)
    last = common.latest_checkpoint(tmp_path)
    assert last.name == f"ckpt_{k - 1:08d}.pt"
    state = torch.load(last, weights_only=True)
    for net in ("G", "D"):
        for name, v in built[net].state_dict().items():
            assert torch.equal(v, state[net][name]), f"{net}.{name} changed by the poisoned step"
    import json

    health = json.loads((tmp_path / "health.json").read_text())
    assert health["alerts"][0]["check"] == "nonfinite" and health["alerts"][0]["first_step"] == k
