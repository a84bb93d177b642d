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


def __getattr__(name):
    # ``lk.boosting`` and ``lk.distributed`` are imported on first use, so ``import losskit``
    # needs only NumPy.
    if name in ("boosting", "distributed"):
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'losskit' has no attribute {name!r}")

__all__ = [
    "Loss",
    "registry",
    *REGISTRY,
    "linear_cross_entropy",
    "linear_cross_entropy_with_extras",
    "LinearCrossEntropyExtras",
    "LinearCrossEntropyGrads",
]
