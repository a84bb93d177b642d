"""Shared fixtures: the ``xp`` fixture runs a test on every installed array backend.

Select backends with LOSSKIT_TEST_BACKENDS=numpy,torch (default: all installed of numpy,
array_api_strict, torch, jax). JAX runs with float64 enabled.
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest

ALL_BACKENDS = ("numpy", "array_api_strict", "torch", "jax")


def _installed(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def selected_backends() -> list[str]:
    wanted = os.environ.get("LOSSKIT_TEST_BACKENDS")
    names = [b.strip() for b in wanted.split(",")] if wanted else list(ALL_BACKENDS)
    return [b for b in names if _installed(b)]


if _installed("jax"):
    import jax

    jax.config.update("jax_enable_x64", True)


class Backend:
    """A backend under test: converts NumPy data in and results out."""

    def __init__(self, name: str):
        self.name = name
        if name == "numpy":
            import array_api_compat.numpy as xp
        elif name == "array_api_strict":
            import array_api_strict as xp
        elif name == "torch":
            import array_api_compat.torch as xp
        elif name == "jax":
            import jax.numpy as xp
        self.xp = xp

    def __repr__(self) -> str:
        return self.name

    def asarray(self, a):
        if a is None:
            return None
        a = np.asarray(a)
        if self.name == "torch":
            import torch

            return torch.from_numpy(a.copy())
        if self.name == "jax":
            import jax.numpy as jnp

            return jnp.asarray(a)
        if self.name == "array_api_strict":
            import array_api_strict

            return array_api_strict.asarray(a)
        return a.copy()

    def to_numpy(self, x):
        if self.name == "torch":
            return x.detach().cpu().numpy()
        if self.name == "array_api_strict":
            import array_api_strict

            return np.asarray(array_api_strict.asarray(x, copy=True)._array)
        return np.asarray(x)

    def is_native(self, x) -> bool:
        """True when ``x`` is an array of this backend (NumPy in, NumPy out)."""
        if self.name == "numpy":
            return isinstance(x, (np.ndarray, np.generic))
        if self.name == "torch":
            import torch

            return isinstance(x, torch.Tensor)
        if self.name == "jax":
            import jax

            return isinstance(x, jax.Array)

        return type(x).__module__.startswith("array_api_strict")


@pytest.fixture(params=selected_backends())
def backend(request) -> Backend:
    return Backend(request.param)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
