"""Brohan's instrumented autoencoder: flattened field -> Dense(n_hidden) -> Dense(field)."""

from __future__ import annotations

import torch
from torch import nn

ACTIVATIONS = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "sigmoid": nn.Sigmoid,
    "identity": nn.Identity,
}
OPTIMIZERS = {
    "adadelta": torch.optim.Adadelta,
    "adam": torch.optim.Adam,
    "sgd": torch.optim.SGD,
    "rmsprop": torch.optim.RMSprop,
}


def _activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose from {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


class DenseAutoencoder(nn.Module):
    """One hidden layer whose neurons read as lat:lon patterns (``encoder.weight`` rows, ``decoder.weight`` columns)."""

    def __init__(
        self,
        n_field: int,
        n_hidden: int = 32,
        activation: str = "tanh",
        out_activation: str = "tanh",
    ) -> None:
        super().__init__()
        self.n_field = int(n_field)
        self.encoder = nn.Linear(self.n_field, int(n_hidden))
        self.act = _activation(activation)
        self.decoder = nn.Linear(int(n_hidden), self.n_field)
        self.out_act = _activation(out_activation)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Hidden activations, (B, n_hidden)."""
        return self.act(self.encoder(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, n_field) -> (B, n_field)
        if x.ndim != 2 or x.shape[1] != self.n_field:
            raise ValueError(f"DenseAutoencoder expects (B, {self.n_field}), got {tuple(x.shape)}")
        return self.out_act(self.decoder(self.encode(x)))


def make_optimizer(name: str, params, **kwargs) -> torch.optim.Optimizer:
    """An optimizer by name (adadelta, adam, sgd, rmsprop) with keyword arguments from the config."""
    key = name.lower()
    if key not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose from {sorted(OPTIMIZERS)}")
    return OPTIMIZERS[key](params, **{k: v for k, v in kwargs.items() if v is not None})


def masked_mse(out: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Mean squared error over valid grid points only; ``weight`` (n_field,) is 1 valid, 0 missing."""
    # (B, F), (B, F), (F,)
    if out.shape != target.shape or weight.shape != out.shape[-1:]:
        raise ValueError(
            f"masked_mse shapes {tuple(out.shape)} {tuple(target.shape)} {tuple(weight.shape)}"
        )
    return ((out - target) ** 2 * weight).sum() / (weight.sum() * out.shape[0])
