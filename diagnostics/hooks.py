"""Hook handling: unwrap wrapped models, select layers, hold hooks in a ``with`` block.

Hooks are registered on entry and removed in ``finally``, also when training raises (fastai miniai
``Hooks``); :func:`unwrap` reaches the user's module inside DistributedDataParallel, DataParallel
and ``torch.compile`` so hooks see the real layers.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterable, Iterator, Sequence

import torch
from torch import nn

# Layers whose outputs the activation statistics watch by default: weighted layers and activations.
# Matched with isinstance, so subclasses (and parametrised modules, whose class is a subclass) count.
DEFAULT_TYPES: tuple[type, ...] = (
    nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
    nn.RNNBase,  # RNN, LSTM, GRU: the first output (the sequence, or a PackedSequence's data)
    nn.MultiheadAttention,  # the attention output, not the weights
    nn.ReLU,
    nn.LeakyReLU,
    nn.PReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Tanh,
    nn.Sigmoid,
    nn.Softplus,
    nn.Hardtanh,
)


def unwrap(model: nn.Module) -> nn.Module:
    """The user's module inside DDP/DataParallel (``.module``) or ``torch.compile`` (``._orig_mod``)."""
    seen = 0
    while seen < 8:
        seen += 1
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            break
    return model


def is_compiled(model: nn.Module) -> bool:
    """True for ``torch.compile(model)`` and ``model.compile()`` (also inside DDP/DataParallel)."""
    seen = 0
    while seen < 8:
        seen += 1
        if getattr(model, "_compiled_call_impl", None) is not None or hasattr(model, "_orig_mod"):
            return True
        if not isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            return False
        model = model.module
    return False


def _type_matches(module: nn.Module, types: Sequence[str | type]) -> bool:
    for t in types:
        if isinstance(t, type):
            if isinstance(module, t):
                return True
        elif any(c.__name__ == t for c in type(module).__mro__):
            return True  # a class name also matches subclasses (e.g. parametrised modules)
    return False


def select_modules(
    model: nn.Module,
    *,
    types: Sequence[str | type] | None = DEFAULT_TYPES,
    names: str | None = None,
    exclude: str | None = None,
) -> list[tuple[str, nn.Module]]:
    """Named submodules chosen by type (class or class name) and/or name regex, in module order.

    Args:
        types: keep modules of these types; ``None`` or empty keeps every leaf module.
        names: keep only modules whose qualified name matches this regex (``re.search``).
        exclude: drop modules whose name matches this regex.
    """
    model = unwrap(model)
    name_re = re.compile(names) if names else None
    excl_re = re.compile(exclude) if exclude else None
    out = []
    for name, m in model.named_modules():
        if not name:
            continue  # the model itself: its output is the network's output, not a layer's
        if types:
            if not _type_matches(m, types):
                continue
        elif next(m.children(), None) is not None:
            continue
        if name_re is not None and not name_re.search(name):
            continue
        if excl_re is not None and excl_re.search(name):
            continue
        out.append((name, m))
    return out


def first_tensor(output) -> torch.Tensor | None:
    """The first floating tensor in a module's output (tensor, tuple/list, or dict), else None."""
    if isinstance(output, torch.Tensor):
        return output if output.is_floating_point() else None
    if isinstance(output, nn.utils.rnn.PackedSequence):
        return first_tensor(output.data)  # (sum of lengths, H): only real time steps
    if isinstance(output, dict):
        output = list(output.values())
    if isinstance(output, (list, tuple)):
        for o in output:
            t = first_tensor(o)
            if t is not None:
                return t
    return None


class Hooks:
    """Forward hooks on ``modules`` calling ``fn(index, module, output)``; a context manager.

    ``fn`` is called only while the module is in training mode.
    """

    def __init__(
        self, modules: Iterable[nn.Module], fn: Callable[[int, nn.Module, torch.Tensor], None]
    ) -> None:
        self.modules = list(modules)
        self.fn = fn
        self.handles: list = []
        self.fired = [False] * len(self.modules)

    def register(self) -> Hooks:
        """Register one forward hook per module (idempotent)."""
        if self.handles:
            return self
        try:
            for i, m in enumerate(self.modules):
                self.handles.append(m.register_forward_hook(self._make(i)))
        except BaseException:
            self.remove()
            raise
        return self

    def _make(self, i: int):
        fn = self.fn

        def hook(module: nn.Module, inputs, output) -> None:
            if not module.training:
                return
            t = first_tensor(output)
            if t is not None:
                self.fired[i] = True
                fn(i, module, t)

        # Under torch.compile the hook runs eagerly on the real output (a graph break at each
        # hooked layer): traced into the graph it gave other layers' sizes and values, or none.
        return torch.compiler.disable(hook)

    def remove(self) -> None:
        """Remove every hook (idempotent)."""
        for h in self.handles:
            h.remove()
        self.handles = []

    def __enter__(self) -> Hooks:
        return self.register()

    def __exit__(self, *exc) -> None:
        self.remove()


@contextlib.contextmanager
def probe_mode(*models: nn.Module, seed: int | None = None) -> Iterator[None]:
    """Eval mode under ``no_grad`` for a probe pass; each model's ``.training`` flag is restored
    afterwards, also on error (EarthGAN's bug: ``eval()`` never undone). With ``seed`` the pass
    draws from a forked, seeded RNG: the same noise at every probe, training randomness untouched.
    """
    flags = [m.training for m in models]
    devices = sorted(
        {p.device for m in models for p in m.parameters() if p.device.type == "cuda"}, key=str
    )
    with contextlib.ExitStack() as stack:
        if seed is not None:
            stack.enter_context(torch.random.fork_rng(devices=devices))
            torch.manual_seed(seed)
        stack.enter_context(torch.no_grad())
        for m in models:
            m.eval()
        try:
            yield
        finally:
            for m, f in zip(models, flags, strict=True):
                m.train(f)
