"""Activation functions by the names used in Wav2Vec2 configs (`hidden_act`, `feat_extract_activation`)."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn


def _gelu_tanh() -> nn.Module:
    return nn.GELU(approximate="tanh")


_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "gelu": nn.GELU,
    "gelu_new": _gelu_tanh,
    "gelu_pytorch_tanh": _gelu_tanh,
    "gelu_fast": _gelu_tanh,
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "leaky_relu": nn.LeakyReLU,
    "selu": nn.SELU,
    "elu": nn.ELU,
    "silu": nn.SiLU,
    "swish": nn.SiLU,
    "mish": nn.Mish,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "linear": nn.Identity,
}


def get_activation(name: str) -> nn.Module:
    """A fresh activation module for `name`; raises a KeyError listing the known names otherwise."""
    try:
        return _ACTIVATIONS[name]()
    except KeyError:
        raise KeyError(f"unknown activation {name!r}; known: {sorted(_ACTIVATIONS)}") from None
