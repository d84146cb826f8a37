"""Custom Scalars layout and HParams records, read back through TensorBoard's own readers and
its HParams plugin backend (the code behind the HParams tab); run names from overrides."""

from __future__ import annotations

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from diagnostics import Writer
from diagnostics.layout import GAN_METRICS, flat_hparams, scalar_layout
from experiments.common import run_label


def events(path):
    ea = EventAccumulator(str(path), size_guidance={"scalars": 0, "tensors": 0})
    ea.Reload()
    return ea


def test_custom_scalars_layout_puts_losses_balance_and_skill_first(tmp_path):
    from tensorboard.plugins.custom_scalar import layout_pb2

    with Writer(tmp_path) as w:
        w.custom_scalars(scalar_layout(["G", "D"], gan=True))
    ea = events(tmp_path)
    (ev,) = ea.Tensors("custom_scalars__config__")
    layout = layout_pb2.Layout()
    layout.ParseFromString(ev.tensor_proto.string_val[0])
    titles = [c.title for c in layout.category]
    assert titles[:3] == ["1 losses", "2 GAN balance", "3 skill vs trilinear"]
    # activation statistics grouped per model, NaN/Inf counts last
    assert titles.index("5 activations G") < titles.index("5 activations D")
    assert titles[-1].startswith("7 NaN and Inf")
    charts = {ch.title: list(ch.multiline.tag) for c in layout.category for ch in c.chart}
    assert charts["G dead fraction per layer"] == [r"act/G/.*/dead$"]
    assert r"gan/gap$" in charts["critic scores real vs fake (gap = real - fake)"]


def test_hparams_tab_compares_two_runs_by_config_and_final_metrics(tmp_path):
    from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
    from tensorboard.context import RequestContext
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.hparams import api_pb2, backend_context, list_session_groups

    cfg = {"train": {"lr_g": 1e-3, "steps": 4}, "model": {"g": {"chan": [8, 16]}}, "hydra": {}}
    for name, lr, final in (("a", 1e-3, 0.5), ("b", 3e-4, 0.25)):
        with Writer(tmp_path / name) as w:
            cfg["train"]["lr_g"] = lr
            w.hparams(flat_hparams(cfg), GAN_METRICS)
            for step, v in enumerate([2.0, 1.0, final]):
                w.scalar("loss/G", v, step)
            w.hparams_end("success")
    # the records in each run's own event file (no extra sub-run as add_hparams makes)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]
    assert all(p.is_file() for p in (tmp_path / "a").iterdir())

    mux = plugin_event_multiplexer.EventMultiplexer()
    mux.AddRunsFromDirectory(str(tmp_path))
    mux.Reload()
    ctx = base_plugin.TBContext(
        logdir=str(tmp_path),
        multiplexer=mux,
        data_provider=data_provider.MultiplexerDataProvider(mux, str(tmp_path)),
    )
    bctx = backend_context.Context(ctx)
    statuses = [api_pb2.STATUS_UNKNOWN, api_pb2.STATUS_SUCCESS, api_pb2.STATUS_FAILURE]
    request = api_pb2.ListSessionGroupsRequest(
        start_index=0, slice_size=10, allowed_statuses=statuses
    )
    resp = list_session_groups.Handler(RequestContext(), bctx, "", request).run()
    got = {}
    for g in resp.session_groups:
        hp = {
            k: v.number_value if v.HasField("number_value") else v.string_value
            for k, v in g.hparams.items()
        }
        metrics = {m.name.tag: m.value for m in g.metric_values}
        (sess,) = g.sessions
        got[sess.name] = (hp, metrics, sess.status)
    assert set(got) == {"a", "b"}
    assert got["a"][0]["train.lr_g"] == pytest.approx(1e-3)
    assert got["b"][0]["train.lr_g"] == pytest.approx(3e-4)
    assert got["a"][0]["model.g.chan"] == "[8, 16]" and "hydra" not in got["a"][0]
    # the metric is the run's last value of the tag
    assert got["a"][1]["loss/G"] == pytest.approx(0.5)
    assert got["b"][1]["loss/G"] == pytest.approx(0.25)
    assert got["a"][2] == api_pb2.STATUS_SUCCESS


@pytest.mark.parametrize(
    "overrides, want",
    [
        ("", "T"),
        ("+exp=small,train.lr_g=3e-4", "exp=small_train.lr_g=3e-4_T"),
        ("data.dir=/data/x y", "data.dir=-data-x-y_T"),
        ("a=[1,2]", "a=-1_2_T"),
        ("x=..", "x=_T"),
    ],
)
def test_run_label_names_runs_by_their_overrides(overrides, want):
    from experiments.common import safe_run_name

    got = run_label(overrides, "T")
    assert got == want
    assert safe_run_name(got) == got  # always a name the run-name check accepts


def test_long_override_lists_are_cut_with_a_hash():
    a = run_label(",".join(f"k{i}=v{i}" for i in range(60)), "T")
    b = run_label(",".join(f"k{i}=v{i}" for i in range(61)), "T")
    assert len(a) <= 120 + 1 + 8 + 2 and a != b


def test_console_line_keeps_losses_and_the_gap_only():
    from experiments.common import console_line

    vals = {"loss/D": -3.6281, "loss/G": 11.75, "gan/gap": 4.775, "gan/score_real": -2.6}
    vals |= {f"gan/other{k}": 1.0 for k in range(20)}
    line = console_line(40, vals, 0.72)
    assert line == "step 40 loss/D=-3.628 loss/G=11.75 gan/gap=4.775 (0.72 steps/s)"
