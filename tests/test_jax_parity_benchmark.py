"""benchmarks/jax_parity.py runs (tiny shapes): the timing loop, the optax equivalents and the
fusion count. No timing is asserted; the ratios are the benchmark's output, not a test."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("jax")
pytest.importorskip("optax")

ROOT = Path(__file__).resolve().parents[1]


def test_jax_parity_benchmark_runs_quick():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import jax_parity
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    rows = jax_parity.main(["--quick", "--hlo", "--shapes", "6x4"])
    assert {r["loss"] for r in rows} == set(jax_parity.LOSSES)
    assert all(r["losskit"] > 0 and r["optax"] > 0 and r["ratio"] > 0 for r in rows)
