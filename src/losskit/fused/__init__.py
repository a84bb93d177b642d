"""Fused losses that never build the full logits matrix."""

from .linear_cross_entropy import (
    LinearCrossEntropyExtras,
    LinearCrossEntropyGrads,
    default_chunk_size,
    linear_cross_entropy,
    linear_cross_entropy_with_extras,
)

__all__ = [
    "linear_cross_entropy",
    "linear_cross_entropy_with_extras",
    "LinearCrossEntropyExtras",
    "LinearCrossEntropyGrads",
    "default_chunk_size",
]
