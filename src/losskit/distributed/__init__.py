"""Scale-out: vocabulary-parallel cross-entropy and exact global means.

On ``torch.distributed`` (NCCL on GPUs, gloo on CPU; the torch functions are imported on first
use, so ``import losskit.distributed`` needs no framework):

* :func:`vocab_parallel_cross_entropy` — each rank holds a block of the classes of the
  logits; equal to ``lk.cross_entropy`` on the whole logits, exchanging only per-token
  statistics.
* :func:`vocab_parallel_linear_cross_entropy` — the fused linear + cross-entropy with the
  output layer split over the classes.
* :func:`global_count` — the denominator of ``reduction="mean"`` over every micro-batch and
  rank of an optimizer step, to pass as ``normalizer=``.
* :func:`vocab_layout` — where this rank's block of classes lies.

On JAX, inside ``shard_map``: :mod:`losskit.distributed.jax` (the same three functions, with
``axis_name``). See ``docs/distributed.md``.
"""

from __future__ import annotations

import importlib

from ._count import local_count

__all__ = [
    "vocab_parallel_cross_entropy",
    "vocab_parallel_linear_cross_entropy",
    "global_count",
    "vocab_layout",
    "jax",
]

_TORCH = ("vocab_parallel_cross_entropy", "vocab_parallel_linear_cross_entropy", "vocab_layout")


def __getattr__(name):
    if name in _TORCH:
        return getattr(importlib.import_module("._torch", __name__), name)
    if name == "jax":
        module = importlib.import_module(".jax", __name__)
        globals()["jax"] = module
        return module
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def global_count(targets, *, ignore_index=None, weight=None, mask=None, class_weight=None, axis=None, group=None, validate=True):
    r"""The denominator that ``reduction="mean"`` uses, for all the targets of one optimizer
    step on all ranks of ``group``: Σ over valid samples of weight · class_weight[y] (the number
    of valid samples without weights), summed over the micro-batches and the ranks.

    Pass it as ``normalizer=`` to every micro-batch's loss: the sum of those losses over the
    micro-batches and ranks is exactly the mean over the whole global batch, however the valid
    tokens are spread over them (``docs/distributed.md`` gives the DDP / FSDP recipe).

    Args:
        targets: one array, or a list of the micro-batches' arrays: class ids
            (``ignore_index`` and ``class_weight`` apply) or float targets (every element a
            sample; with ``axis``, probability targets whose class axis is ``axis``).
        ignore_index, weight, mask, class_weight: as the loss will use them; ``weight`` and
            ``mask`` one array per micro-batch (a list when ``targets`` is a list);
            ``class_weight`` the whole vocabulary's, shape (V,).
        axis: the class axis of probability targets (None: every element is a sample).
        group: torch tensors only: the process group whose ranks hold *different* samples (the
            data-parallel group). Default: the default group when torch.distributed is
            initialised, else this process only. Ranks that hold the same tokens
            (tensor-parallel peers) must not be in it, or those tokens count several times.
            For JAX use :func:`losskit.distributed.jax.global_count` with ``axis_name``.
        validate: check class ids against ``class_weight`` and the option values.

    Returns:
        A 0-d float64 array of the targets' library and device (JAX without x64: float32),
        the same on every rank of the group.

    Example:
        >>> import numpy as np, losskit as lk
        >>> micro = [np.array([3, -100, 1]), np.array([-100, -100, 0, 2])]   # one optimizer step
        >>> float(lk.distributed.global_count(micro, ignore_index=-100))
        4.0
    """
    first = targets[0] if isinstance(targets, (list, tuple)) and targets else targets
    _, total = local_count(targets, ignore_index=ignore_index, weight=weight, mask=mask, class_weight=class_weight, axis=axis,
                           validate=validate)
    if type(first).__module__.split(".")[0] == "torch":
        from ._torch import sum_over_group

        return sum_over_group(total, group)
    if group is not None:
        raise TypeError(
            f"global_count: `group` sums over a torch.distributed process group and needs torch tensors; got "
            f"{type(first).__module__}.{type(first).__name__} targets (for JAX use losskit.distributed.jax.global_count)."
        )
    return total
