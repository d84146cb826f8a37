"""A PyTorch Lightning callback: the diagnostics on a ``Trainer`` without touching the loop.

::

    from diagnostics.lightning import DiagnosticsCallback
    trainer = lightning.Trainer(callbacks=[DiagnosticsCallback(cfg={"every": 50})])

Hooks are attached at ``on_fit_start`` and removed at ``on_fit_end``, or at ``on_exception``
(then without the final write). Records are labelled with the optimizer step they belong to
(``trainer.global_step`` before the step, the step Lightning's own ``self.log`` uses), gradients
included under automatic optimisation, where Lightning calls ``optimizer.step(closure)``.

The records go to the Trainer's TensorBoard logger (its ``SummaryWriter`` is reused) unless a
``writer`` is given; with another logger or none, to ``<trainer.log_dir>/diagnostics``. Lightning
is an optional dependency (``pip install fieldscope[lightning]``); the rest of the library
imports without it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

try:
    from lightning.pytorch import Callback
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "diagnostics.lightning needs PyTorch Lightning: pip install lightning "
        "(or the fieldscope[lightning] extra)"
    ) from e

from .core import Diagnostics


class DiagnosticsCallback(Callback):
    """Activation, weight and gradient statistics of a LightningModule, as :class:`Diagnostics`.

    Args:
        cfg: the diagnostics configuration (see :mod:`diagnostics.core`).
        models: attribute names of the LightningModule to watch as separate models (e.g.
            ``["generator", "discriminator"]``) or a mapping tag name -> attribute name; None
            watches the whole module under the name ``model``.
        writer: anything :class:`Diagnostics` accepts; None = the Trainer's logger (see above).
    """

    def __init__(
        self,
        cfg: Mapping | None = None,
        *,
        models: Sequence[str] | Mapping[str, str] | None = None,
        writer=None,
    ) -> None:
        super().__init__()
        if models is not None and (isinstance(models, str) or not len(models)):
            raise TypeError(
                f"models: expected a non-empty list of attribute names or a mapping name -> "
                f"attribute, got {models!r}"
            )
        self.cfg = cfg
        self.models = models
        self.writer = writer
        self.diag: Diagnostics | None = None
        self._last: int | None = None

    def _models(self, pl_module) -> dict:
        if self.models is None:
            return {"model": pl_module}
        names = self.models if isinstance(self.models, Mapping) else {n: n for n in self.models}
        out = {}
        for tag, attr in names.items():
            if not hasattr(pl_module, attr):
                raise AttributeError(
                    f"DiagnosticsCallback: {type(pl_module).__name__} has no attribute {attr!r}"
                )
            out[tag] = getattr(pl_module, attr)
        return out

    def _writer(self, trainer):
        if self.writer is not None:
            return self.writer if trainer.is_global_zero else None
        if not trainer.is_global_zero:
            return None
        from torch.utils.tensorboard import SummaryWriter

        logger = trainer.logger
        exp = getattr(logger, "experiment", None) if logger is not None else None
        if isinstance(exp, SummaryWriter):
            return exp
        return os.path.join(trainer.log_dir or trainer.default_root_dir, "diagnostics")

    def on_fit_start(self, trainer, pl_module) -> None:
        """Build the diagnostics for this fit and attach the hooks."""
        models = self._models(pl_module)
        opts = list(trainer.optimizers)
        optimizers = None if not opts else opts[0] if len(opts) == 1 else opts
        self.diag = Diagnostics(models, optimizers, self._writer(trainer), self.cfg)
        self._last = None
        self.diag.attach()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        """After an optimizer step: ``Diagnostics.step`` with that step's number."""
        if self.diag is None:
            return
        # global_step counts optimizer steps; the one just taken is global_step - 1. With
        # gradient accumulation a batch without an optimizer step leaves it unchanged.
        step = trainer.global_step - 1
        if step < 0 or step == self._last:
            return
        self._last = step
        self.diag.step(step)

    def on_fit_end(self, trainer, pl_module) -> None:
        """Write the steps since the last write and remove the hooks."""
        if self.diag is not None:
            self.diag.detach()

    def on_exception(self, trainer, pl_module, exception) -> None:
        """Remove the hooks without a final write (other ranks may not be here)."""
        if self.diag is not None:
            self.diag.detach(final_write=False)
