"""``losskit demo``: small models trained with plain NumPy and losskit's closed-form gradients.

>>> from losskit.demo import run_demo
>>> results = run_demo("losskit-demo", seed=0, quick=True)   # doctest: +SKIP

Needs only NumPy to train; the report needs matplotlib (``pip install "losskit[demo]"``).
"""

from ._run import DemoResults, run_demo

__all__ = ["run_demo", "DemoResults"]
