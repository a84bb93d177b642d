"""losskit: loss functions defined once, with closed-form gradients and Hessians, on NumPy,
PyTorch and JAX arrays."""

from ._loss import REGISTRY, Loss
from .losses import (
    binary_cross_entropy,
    binary_cross_entropy_from_probs,
    cross_entropy,
    huber,
    kl_divergence,
    mae,
    mse,
)
from .fused import (
    LinearCrossEntropyExtras,
    LinearCrossEntropyGrads,
    linear_cross_entropy,
    linear_cross_entropy_with_extras,
)

__version__ = "0.1.0"

registry = REGISTRY

__all__ = [
    "Loss",
    "registry",
    "mse",
    "mae",
    "huber",
    "binary_cross_entropy",
    "binary_cross_entropy_from_probs",
    "cross_entropy",
    "kl_divergence",
    "linear_cross_entropy",
    "linear_cross_entropy_with_extras",
    "LinearCrossEntropyExtras",
    "LinearCrossEntropyGrads",
]
