"""The fused-loss benchmark scripts run (tiny sizes; their figures are in
docs/linear_cross_entropy.md, measured at full size)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytest.importorskip("torch")

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")


def test_gpt_step_quick_runs_and_fused_matches_unfused():
    sys.path.insert(0, BENCH)
    try:
        import gpt_step
    finally:
        sys.path.remove(BENCH)
    res = gpt_step.main(["--quick"])
    assert set(res) == {"unfused", "fused", "unfused_amp", "fused_amp"}
    for v in ("", "_amp"):
        fused, unfused = res["fused" + v]["losses"], res["unfused" + v]["losses"]
        # the same model and data: the fused head trains the same way (float32 to 1e-5,
        # autocast within the bfloat16 tolerance)
        tol = 1e-5 if not v else 2e-2
        assert all(abs(f - u) <= tol * abs(u) for f, u in zip(fused, unfused)), (v, fused, unfused)


def test_linear_cross_entropy_benchmark_runs_tiny():
    pytest.importorskip("jax")
    cmd = [sys.executable, os.path.join(BENCH, "linear_cross_entropy.py"), "--n", "64", "--h", "16", "--v", "128", "--reps", "1",
           "--dtypes", "float32", "--methods", "losskit,jax_losskit"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "error" not in out.stdout, out.stdout
    assert "losskit" in out.stdout and "jax_losskit" in out.stdout
