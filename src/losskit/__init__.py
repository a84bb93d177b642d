"""losskit: loss functions defined once, with closed-form gradients and Hessians, on NumPy,
PyTorch and JAX arrays.

Every declared loss is a public name here, derived from ``losskit.registry`` (one place)."""

from . import losses as _losses  # noqa: F401  (declares and registers every loss)
from ._loss import REGISTRY, Loss
from .fused import (
    LinearCrossEntropyExtras,
    LinearCrossEntropyGrads,
    linear_cross_entropy,
    linear_cross_entropy_with_extras,
)

__version__ = "0.1.0"

registry = REGISTRY
globals().update(REGISTRY)

__all__ = [
    "Loss",
    "registry",
    *REGISTRY,
    "linear_cross_entropy",
    "linear_cross_entropy_with_extras",
    "LinearCrossEntropyExtras",
    "LinearCrossEntropyGrads",
]
