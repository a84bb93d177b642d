"""Loss families. Each module holds per-sample math and its declaration only."""

from .classification import binary_cross_entropy, binary_cross_entropy_from_probs, cross_entropy
from .divergence import kl_divergence
from .regression import huber, mae, mse

__all__ = [
    "mse",
    "mae",
    "huber",
    "binary_cross_entropy",
    "binary_cross_entropy_from_probs",
    "cross_entropy",
    "kl_divergence",
]
