"""attach()/detach() and the Lightning callback: a real Trainer on CPU, events read back."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from diagnostics.core import Diagnostics
from tests.gan_helpers import events


def no_hooks(model: nn.Module, *opts) -> bool:
    return all(not m._forward_hooks for m in model.modules()) and all(
        not o._optimizer_step_pre_hooks for o in opts
    )


def test_attach_detach_outside_with_block(tmp_path):
    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU())
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    diag = Diagnostics(model, opt, tmp_path, {"every": 2, "record_every": 1})
    assert diag.attach() is diag and diag.attach() is diag  # idempotent: one hook each
    assert [len(m._forward_hooks) for m in model] == [1, 1] and len(
        opt._optimizer_step_pre_hooks
    ) == 1
    for step in range(3):
        opt.zero_grad()
        model(torch.ones(4, 2)).sum().backward()
        opt.step()
        diag.step(step)
    diag.detach()  # nothing pending (step 2 was a write, holding steps 1 and 2)
    assert no_hooks(model, opt)
    diag.detach()  # twice: nothing
    assert [s for s, _ in diag.history["act/model/0/mean"]] == [0, 2]
    model(torch.ones(4, 2))
    diag.step(3)  # detached: no hook, nothing recorded at step 3 ...
    assert diag.act.bufs[0].sum() == 0
    diag.attach()  # ... and re-attaching records again
    model(torch.ones(4, 2))
    diag.step(4)
    diag.detach()
    assert [s for s, _ in diag.history["act/model/0/mean"]] == [0, 2, 4]
    assert no_hooks(model, opt)


def test_detach_after_exception_removes_hooks(tmp_path):
    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU())
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    diag = Diagnostics(model, opt, tmp_path, {"every": 5, "record_every": 1}).attach()
    with pytest.raises(RuntimeError, match="boom"):
        try:
            for step in range(3):
                model(torch.ones(4, 2)).sum().backward()
                opt.step()
                if step == 1:
                    raise RuntimeError("boom")
                diag.step(step)
        finally:
            diag.detach(final_write=False)
    assert no_hooks(model, opt)
    assert [s for s, _ in diag.history["act/model/0/mean"]] == [0]  # no write after the raise


def test_library_imports_without_lightning():
    # lightning made unimportable: every other module imports, diagnostics.lightning says why
    code = (
        "import sys, pkgutil, importlib; sys.modules['lightning'] = None; import diagnostics\n"
        "for m in pkgutil.iter_modules(diagnostics.__path__):\n"
        "    if m.name != 'lightning': importlib.import_module('diagnostics.' + m.name)\n"
        "try:\n    import diagnostics.lightning\nexcept ImportError as e:\n    print(e)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "pip install lightning" in r.stdout


# ------------------------------------------------------------------------------------ Lightning
L = pytest.importorskip("lightning")


class Scaled(L.LightningModule):
    """Linear(1, 1) without bias, weight 1, lr 0: the loss at step s is (s + 1) * w * x with x = 1,
    so the gradient recorded at step s is exactly s + 1 (a label off by one step shows)."""

    def __init__(self, raise_at: int | None = None) -> None:
        super().__init__()
        self.layer = nn.Linear(1, 1, bias=False)
        self.act = nn.Tanh()
        with torch.no_grad():
            self.layer.weight.fill_(1.0)
        self.raise_at = raise_at

    def training_step(self, batch, batch_idx):
        (c,) = batch  # (1, 1): the step's scale, s + 1
        if self.raise_at is not None and self.global_step == self.raise_at:
            raise RuntimeError("boom")
        out = self.act(self.layer(torch.ones(1, 1)))
        loss = (c * self.layer(torch.ones(1, 1))).sum() + 0.0 * out.sum()
        self.log("loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def make_trainer(tmp_path, cb, steps=6):
    from lightning.pytorch.loggers import TensorBoardLogger

    return L.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=steps,
        logger=TensorBoardLogger(str(tmp_path), name="", version=""),
        callbacks=[cb],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        log_every_n_steps=1,
    )


def loader(n=6):
    c = torch.arange(1, n + 1, dtype=torch.float32).view(n, 1, 1)  # batch s holds s + 1
    return DataLoader(TensorDataset(c), batch_size=None, shuffle=False)


def test_lightning_callback_gradients_on_their_step(tmp_path):
    from diagnostics.lightning import DiagnosticsCallback

    cb = DiagnosticsCallback(cfg={"every": 1, "record_every": 1})
    model = Scaled()
    make_trainer(tmp_path, cb).fit(model, loader())
    ea = events(tmp_path)  # the logger's own event file: one SummaryWriter, reused
    grads = [(e.step, e.value) for e in ea.Scalars("grad/model/layer.weight/norm")]
    assert grads == [(s, float(s + 1)) for s in range(6)]
    losses = [(e.step, e.value) for e in ea.Scalars("loss")]  # Lightning's label: the same step
    assert [s for s, _ in losses] == [s for s, _ in grads]
    assert all(v == float(s + 1) for s, v in losses)
    assert [e.step for e in ea.Scalars("act/model/act/mean")] == list(range(6))
    assert ea.Histograms("act/model/layer/hist") and ea.Images("act/model/act/colorful")
    assert no_hooks(model, *cb.diag.params.optimizers.values())
    assert model.layer.weight.item() == 1.0


def test_lightning_callback_every_and_exception(tmp_path):
    from diagnostics.lightning import DiagnosticsCallback

    cb = DiagnosticsCallback(cfg={"every": 2, "record_every": 1}, models=["layer"])
    make_trainer(tmp_path / "a", cb, steps=5).fit(Scaled(), loader())
    ea = events(tmp_path / "a")
    # writes at 0, 2, 4; the write at 2 holds steps 1, 2 (RMS of 2 and 3), at 4 steps 3, 4
    got = [(e.step, round(e.value, 6)) for e in ea.Scalars("grad/layer/weight/norm")]
    assert got == [(0, 1.0), (2, round((6.5) ** 0.5, 6)), (4, round((20.5) ** 0.5, 6))]

    cb = DiagnosticsCallback(cfg={"every": 2, "record_every": 1})
    model = Scaled(raise_at=3)
    with pytest.raises(RuntimeError, match="boom"):
        make_trainer(tmp_path / "b", cb).fit(model, loader())
    assert no_hooks(model, *cb.diag.params.optimizers.values())
    ea = events(tmp_path / "b")
    assert [e.step for e in ea.Scalars("grad/model/layer.weight/norm")] == [0, 2]
