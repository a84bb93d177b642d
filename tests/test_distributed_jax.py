"""losskit.distributed.jax inside ``jax.shard_map`` on 4 simulated CPU devices.

XLA_FLAGS=--xla_force_host_platform_device_count=4 must be set before JAX is imported, and
the pytest process has imported it already (conftest), so the cases run in one subprocess:
this file run as a script, which writes a report of every comparison (value and gradients of
each option set against single-device ``lk.cross_entropy`` / ``lk.linear_cross_entropy`` in
float64, to 1e-6). The subprocess runs under a deadline and its traceback fails the test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import traceback
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
DEVICES = 4
TIMEOUT_S = 240
RTOL, ATOL = 1e-6, 1e-9
IGNORE = -100

CE_OPTIONS = {
    "plain": {},
    "smooth": {"label_smoothing": 0.1},
    "class_weight": {"class_weight": "cw"},
    "ignore": {"ignore_index": IGNORE},
    "ignore_in_range": {"ignore_index": 2},
    "cw_smooth_ignore": {"class_weight": "cw", "label_smoothing": 0.25, "ignore_index": -1},
    "probs": {"_probs": True},
    "probs_smooth_cw": {"_probs": True, "label_smoothing": 0.2, "class_weight": "cw"},
    "megatron": {"label_smoothing": 0.1, "smoothing_formula": "megatron", "ignore_index": IGNORE},
    "zloss_softcap_cw": {"z_loss": 1e-2, "softcap": 2.0, "class_weight": "cw"},
    "weight_mask": {"weight": "w", "mask": "mask", "ignore_index": IGNORE},
    "normalizer": {"normalizer": 7.5, "ignore_index": IGNORE},
}
LINEAR_OPTIONS = {
    "plain": {},
    "class_weight": {"class_weight": "cw", "ignore_index": IGNORE},
    "smooth_cw_ignore": {"label_smoothing": 0.2, "class_weight": "cw", "ignore_index": IGNORE},
    "megatron": {"label_smoothing": 0.1, "smoothing_formula": "megatron", "ignore_index": IGNORE},
    "zloss_softcap": {"z_loss": 1e-3, "softcap": 3.0, "ignore_index": IGNORE},
    "sample_weight_mask": {"sample_weight": "w", "mask": "mask", "ignore_index": IGNORE},
    "normalizer": {"normalizer": 25.0, "ignore_index": IGNORE},
    "probs_smooth": {"_probs": True, "label_smoothing": 0.1},
}
FUSED_ONLY = ("softcap",)
REDUCTIONS = ("mean", "sum", "none")


# --- the cases (run in the subprocess) ---------------------------------------------------------


class Report:
    def __init__(self):
        self.groups = {}

    def close(self, group, what, got, want, rtol=RTOL, atol=ATOL, nan=False):
        rec = self.groups.setdefault(group, {"checks": 0, "failures": []})
        rec["checks"] += 1
        got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
        if got.shape != want.shape:
            rec["failures"].append(f"{what}: shape {got.shape} != {want.shape}")
        elif not np.allclose(got, want, rtol=rtol, atol=atol, equal_nan=nan):
            rec["failures"].append(f"{what}: max abs error {np.nanmax(np.abs(got - want)):.3g}")

    def true(self, group, what, cond):
        rec = self.groups.setdefault(group, {"checks": 0, "failures": []})
        rec["checks"] += 1
        if not cond:
            rec["failures"].append(what)


def _data(seed, n, v, opts, h=None):
    rng = np.random.default_rng(seed)
    d = {"z": rng.standard_normal((n, v)) * 2}
    if h is not None:
        d["x"] = rng.standard_normal((n, h))
        d["W"] = rng.standard_normal((v, h)) * 0.5
        d["b"] = rng.standard_normal(v) * 0.5
    y = rng.integers(0, v, n)
    ii = opts.get("ignore_index")
    if ii is not None:
        y = np.where(rng.random(n) < 0.3, ii, y)
        y[0] = 0 if ii != 0 else 1
    d["y"] = y
    t = rng.random((n, v)) ** 3
    d["t"] = t / t.sum(1, keepdims=True)
    d["cw"] = rng.random(v) + 0.5
    d["w"] = rng.random(n) + 0.5
    d["mask"] = rng.random(n) > 0.25
    d["u"] = rng.standard_normal(n)
    return d


def run_cases(report: Report):
    import jax
    import jax.numpy as jnp
    from jax.sharding import Mesh
    from jax.sharding import PartitionSpec as P

    import losskit as lk
    from losskit.distributed import jax as ljx

    assert jax.device_count() == DEVICES, jax.devices()
    mesh = Mesh(np.array(jax.devices()), ("tp",))
    vr = 3
    v = vr * DEVICES

    def scalarize(loss, reduction, u):
        return jnp.sum(loss * u) if reduction == "none" else loss

    def split_opts(opts, d):
        """(array options sharded over the classes, replicated array options, static options)."""
        sharded, repl, static = {}, {}, {}
        for k, val in opts.items():
            if k == "_probs":
                continue
            if val == "cw":
                sharded[k] = jnp.asarray(d["cw"])
            elif val in ("w", "mask"):
                repl[k] = jnp.asarray(d[val])
            else:
                static[k] = val
        return sharded, repl, static

    # --- vocab_parallel_cross_entropy: all reductions of one option set in one jit ------------
    for i, (name, opts) in enumerate(CE_OPTIONS.items()):
        d = _data(i, 13, v, opts)
        probs = opts.get("_probs", False)
        sharded, repl, static = split_opts(opts, d)
        y = jnp.asarray(d["t"] if probs else d["y"])
        u = jnp.asarray(d["u"])
        reds = [r for r in REDUCTIONS if "normalizer" not in opts or r == "mean"]

        def ours(z, y, sharded, repl, reduction):
            def body(z, y, sharded, repl):
                return ljx.vocab_parallel_cross_entropy(z, y, axis_name="tp", reduction=reduction, **sharded, **repl, **static)

            in_specs = (P(None, "tp"), P(None, "tp") if probs else P(), {k: P("tp") for k in sharded}, {k: P() for k in repl})
            return jax.shard_map(body, mesh=mesh, in_specs=in_specs, out_specs=P())(z, y, sharded, repl)

        def reference(z, y, sharded, repl, u, r):
            ref_opts = {**sharded, **repl, **static}
            if any(k in static for k in FUSED_ONLY):
                if "weight" in ref_opts:
                    ref_opts["sample_weight"] = ref_opts.pop("weight")
                return scalarize(lk.linear_cross_entropy(z, jnp.eye(v), y, reduction=r, **ref_opts), r, u)
            return scalarize(lk.cross_entropy(z, y, reduction=r, **ref_opts), r, u)

        @jax.jit
        def all_reductions(z, y, sharded, repl, u):
            # ours and the single-device reference, every reduction: one compilation
            return [
                (jax.value_and_grad(lambda z, r=r: scalarize(ours(z, y, sharded, repl, r), r, u))(z),
                 jax.value_and_grad(lambda z, r=r: reference(z, y, sharded, repl, u, r))(z))
                for r in reds
            ]

        results = all_reductions(jnp.asarray(d["z"]), y, sharded, repl, u)
        for reduction, ((val, grad), (want, gwant)) in zip(reds, results):
            report.close("ce", f"ce/{name}/{reduction}/value", val, want)
            report.close("ce", f"ce/{name}/{reduction}/grad", grad, gwant)

    # permuted blocks: device i holds block order[i], vocab_start looked up with axis_index
    d = _data(50, 9, v, {"ignore_index": IGNORE})
    order = np.array([2, 0, 3, 1])
    starts = jnp.asarray(order * vr)
    z = jnp.asarray(d["z"])
    z_perm = jnp.concatenate([z[:, b * vr:(b + 1) * vr] for b in order], axis=1)
    y = jnp.asarray(d["y"])

    def body(zb, y, cwb):
        start = starts[jax.lax.axis_index("tp")]
        return ljx.vocab_parallel_cross_entropy(zb, y, axis_name="tp", vocab_start=start, num_classes=v, ignore_index=IGNORE,
                                               class_weight=cwb, label_smoothing=0.1)

    cw = jnp.asarray(d["cw"])
    cw_perm = jnp.concatenate([cw[b * vr:(b + 1) * vr] for b in order])
    sm = jax.shard_map(body, mesh=mesh, in_specs=(P(None, "tp"), P(), P("tp")), out_specs=P())
    val, grad = jax.jit(jax.value_and_grad(sm))(z_perm, y, cw_perm)
    want, gwant = jax.jit(jax.value_and_grad(lambda z: lk.cross_entropy(z, y, ignore_index=IGNORE, class_weight=cw, label_smoothing=0.1)))(z)
    gwant_perm = jnp.concatenate([gwant[:, b * vr:(b + 1) * vr] for b in order], axis=1)
    report.close("ce", "ce/permuted/value", val, want)
    report.close("ce", "ce/permuted/grad", grad, gwant_perm)

    # edges: every token ignored, −inf blocks, NaN, without axis_name, bfloat16
    zi = np.asarray(d["z"]).copy()
    zi[0, vr:2 * vr] = -np.inf
    zi[1, 1::2] = -np.inf
    zi[2, :] = -np.inf
    zi[2, 4] = 1.0
    yi = np.asarray(d["y"]).copy()
    yi[:3] = [0, 0, 4]
    zi[3, 7] = np.nan

    def edge(zz, yy, **o):
        f = jax.shard_map(lambda a, b: ljx.vocab_parallel_cross_entropy(a, b, axis_name="tp", reduction="none", **o), mesh=mesh,
                          in_specs=(P(None, "tp"), P()), out_specs=P())
        def both(a, b):
            val, vjp = jax.vjp(lambda a: f(a, b), a)
            return val, vjp(jnp.ones_like(val))[0]

        def ref(a, b):
            val, vjp = jax.vjp(lambda a: lk.cross_entropy(a, b, reduction="none", **o), a)
            return val, vjp(jnp.ones_like(val))[0]

        val, g = jax.jit(both)(jnp.asarray(zz), jnp.asarray(yy))
        want, gwant = jax.jit(ref)(jnp.asarray(zz), jnp.asarray(yy))
        return val, g, want, gwant

    val, g, want, gwant = edge(zi, yi, ignore_index=IGNORE, label_smoothing=0.1)
    report.close("edges", "edges/-inf,nan/value", val, want, nan=True)
    report.close("edges", "edges/-inf,nan/grad", g, gwant, nan=True)
    report.true("edges", "edges/-inf rows finite, NaN row NaN", bool(np.isfinite(np.asarray(val)[:3]).all() and np.isnan(np.asarray(val)[3])))
    val, g, want, gwant = edge(zi[:3], np.full(3, IGNORE), ignore_index=IGNORE)
    report.true("edges", "edges/all_ignored: zeros", float(np.abs(np.asarray(val)).sum() + np.abs(np.asarray(g)).sum()) == 0.0)
    val, grad = jax.jit(jax.value_and_grad(lambda a: ljx.vocab_parallel_cross_entropy(a, y, axis_name=None, ignore_index=IGNORE)))(z)
    want, gwant = jax.jit(jax.value_and_grad(lambda a: lk.cross_entropy(a, y, ignore_index=IGNORE)))(z)
    report.close("edges", "edges/axis_name=None/value", val, want)
    report.close("edges", "edges/axis_name=None/grad", grad, gwant)
    zb = z.astype(jnp.bfloat16)
    f = jax.shard_map(lambda a: ljx.vocab_parallel_cross_entropy(a, y, axis_name="tp", ignore_index=IGNORE), mesh=mesh,
                      in_specs=(P(None, "tp"),), out_specs=P())
    val, grad = jax.jit(jax.value_and_grad(f))(zb)
    report.true("edges", "edges/bf16: float32 value, bfloat16 gradient", val.dtype == jnp.float32 and grad.dtype == jnp.bfloat16)
    report.close("edges", "edges/bf16/value", val, lk.cross_entropy(np.asarray(zb.astype(jnp.float32)), np.asarray(y), ignore_index=IGNORE),
                 rtol=1e-5)

    # --- vocab_parallel_linear_cross_entropy --------------------------------------------------
    h = 5
    for i, (name, opts) in enumerate(LINEAR_OPTIONS.items()):
        d = _data(100 + i, 19, v, opts, h=h)
        probs = opts.get("_probs", False)
        sharded, repl, static = split_opts(opts, d)
        y = jnp.asarray(d["t"] if probs else d["y"])
        u = jnp.asarray(d["u"])
        reds = [r for r in REDUCTIONS if "normalizer" not in opts or r == "mean"]

        def ours_linear(x, W, b, y, sharded, repl, reduction):
            def body(x, W, b, y, sharded, repl):
                return ljx.vocab_parallel_linear_cross_entropy(x, W, y, axis_name="tp", bias_shard=b, reduction=reduction,
                                                               chunk_size=4, **sharded, **repl, **static)

            in_specs = (P(), P("tp", None), P("tp"), P(None, "tp") if probs else P(), {k: P("tp") for k in sharded},
                        {k: P() for k in repl})
            return jax.shard_map(body, mesh=mesh, in_specs=in_specs, out_specs=P())(x, W, b, y, sharded, repl)

        @jax.jit
        def all_reductions(x, W, b, y, sharded, repl, u):
            o = {**sharded, **repl, **static}
            return [
                (jax.value_and_grad(lambda x, W, b, r=r: scalarize(ours_linear(x, W, b, y, sharded, repl, r), r, u), argnums=(0, 1, 2))(x, W, b),
                 jax.value_and_grad(lambda x, W, b, r=r: scalarize(lk.linear_cross_entropy(x, W, y, bias=b, reduction=r, **o), r, u),
                                    argnums=(0, 1, 2))(x, W, b))
                for r in reds
            ]

        args = (jnp.asarray(d["x"]), jnp.asarray(d["W"]), jnp.asarray(d["b"]))
        results = all_reductions(*args, y, sharded, repl, u)
        for reduction, ((val, grads), (want, gwant)) in zip(reds, results):
            report.close("linear", f"linear/{name}/{reduction}/value", val, want)
            for k, got_g, want_g in zip(("dx", "dW", "db"), grads, gwant):
                report.close("linear", f"linear/{name}/{reduction}/{k}", got_g, want_g)

    # x varying over the axis, and shard_map(check_vma=False): the same gradients
    d = _data(200, 11, v, {"ignore_index": IGNORE}, h=h)
    args = (jnp.asarray(d["x"]), jnp.asarray(d["W"]), jnp.asarray(d["b"]))
    y = jnp.asarray(d["y"])
    want, gwant = jax.jit(jax.value_and_grad(lambda x, W, b: lk.linear_cross_entropy(x, W, y, bias=b, ignore_index=IGNORE),
                                             argnums=(0, 1, 2)))(*args)
    for mode in ("pcast_varying_x", "check_vma=False", "logits_check_vma=False"):
        if mode == "logits_check_vma=False":
            f = jax.shard_map(lambda z: ljx.vocab_parallel_cross_entropy(z, y, axis_name="tp", ignore_index=IGNORE), mesh=mesh,
                              in_specs=(P(None, "tp"),), out_specs=P(), check_vma=False)
            z = jnp.asarray(d["x"] @ d["W"].T + d["b"])
            val, g = jax.jit(jax.value_and_grad(f))(z)
            wz, gz = jax.jit(jax.value_and_grad(lambda z: lk.cross_entropy(z, y, ignore_index=IGNORE)))(z)
            report.close("linear", f"modes/{mode}/value", val, wz)
            report.close("linear", f"modes/{mode}/grad", g, gz)
            continue

        def body(x, W, b, mode=mode):
            if mode == "pcast_varying_x":
                x = jax.lax.pcast(x, ("tp",), to="varying")
            return ljx.vocab_parallel_linear_cross_entropy(x, W, y, axis_name="tp", bias_shard=b, ignore_index=IGNORE, chunk_size=4)

        f = jax.shard_map(body, mesh=mesh, in_specs=(P(), P("tp", None), P("tp")), out_specs=P(), check_vma=mode != "check_vma=False")
        val, grads = jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2)))(*args)
        report.close("linear", f"modes/{mode}/value", val, want)
        for k, got_g, want_g in zip(("dx", "dW", "db"), grads, gwant):
            report.close("linear", f"modes/{mode}/{k}", got_g, want_g)

    # --- the accumulation recipe on a 2 (data) x 2 (vocabulary) mesh ----------------------------
    mesh2 = Mesh(np.array(jax.devices()).reshape(2, 2), ("dp", "tp"))
    v2 = 10
    rng = np.random.default_rng(7)
    n_mb, rows = 3, 8  # per data-parallel device: 3 micro-batches of 8 rows (padding marked -100)
    x = rng.standard_normal((2, n_mb, rows, h))
    y = rng.integers(0, v2, (2, n_mb, rows))
    keep = [[2, 8, 5], [7, 1, 0]]  # valid tokens per micro-batch: different counts, one empty
    for i in range(2):
        for k in range(n_mb):
            y[i, k, keep[i][k]:] = IGNORE
    W = rng.standard_normal((v2, h)) * 0.5
    w_body = rng.standard_normal((h, h)) * 0.5

    def step(recipe):
        def body(x, y, W, w_body):
            x, y = x[0], y[0]  # this data-parallel device's micro-batches
            count = ljx.global_count([y[k] for k in range(n_mb)], axis_name="dp", ignore_index=IGNORE)
            total = 0.0
            for k in range(n_mb):
                hid = jnp.tanh(x[k] @ w_body)
                if recipe == "global_count":
                    total = total + ljx.vocab_parallel_linear_cross_entropy(hid, W, y[k], axis_name="tp", ignore_index=IGNORE,
                                                                           normalizer=count)
                else:  # the pitfall: the mean of per-micro-batch means
                    total = total + ljx.vocab_parallel_linear_cross_entropy(hid, W, y[k], axis_name="tp", ignore_index=IGNORE) / (2 * n_mb)
            return jax.lax.psum(total, "dp"), count

        f = jax.shard_map(body, mesh=mesh2, in_specs=(P("dp"), P("dp"), P("tp", None), P()), out_specs=(P(), P()))
        return jax.jit(jax.value_and_grad(lambda W, wb: f(jnp.asarray(x), jnp.asarray(y), W, wb), argnums=(0, 1), has_aux=True))(
            jnp.asarray(W), jnp.asarray(w_body))

    xs = jnp.asarray(x.reshape(-1, h))
    ys = jnp.asarray(y.reshape(-1))
    want, gwant = jax.jit(jax.value_and_grad(lambda W, wb: lk.linear_cross_entropy(jnp.tanh(xs @ wb), W, ys, ignore_index=IGNORE),
                                             argnums=(0, 1)))(jnp.asarray(W), jnp.asarray(w_body))
    (val, count), grads = step("global_count")
    report.close("recipe", "recipe/count", count, float(np.sum(y != IGNORE)))
    report.close("recipe", "recipe/value", val, want)
    report.close("recipe", "recipe/dW", grads[0], gwant[0])
    report.close("recipe", "recipe/d_body", grads[1], gwant[1])
    (val, _), grads = step("mean_of_means")
    report.true("recipe", "recipe/mean_of_means differs", abs(float(val) - float(want)) > 1e-3)


def _main(out):
    import jax

    jax.config.update("jax_enable_x64", True)
    report = Report()
    run_cases(report)
    Path(out).write_text(json.dumps(report.groups))


if __name__ == "__main__":
    try:
        _main(sys.argv[1])
    except BaseException:
        traceback.print_exc()
        sys.exit(1)
    sys.exit(0)


# --- the tests -------------------------------------------------------------------------------------

pytest.importorskip("jax")
GROUPS = ("ce", "edges", "linear", "recipe")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("jax_distributed") / "report.json"
    # these are correctness tests of small graphs: XLA's cheapest optimisation level halves the
    # compile time that dominates them
    flags = f"--xla_force_host_platform_device_count={DEVICES} --xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
    env = dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS="cpu",
               PYTHONPATH=f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    try:
        proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), str(out)], env=env, cwd=str(ROOT),
                              capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"the JAX cases ran past {TIMEOUT_S} s:\n{(e.stderr or '')[-4000:]}")
    if proc.returncode != 0:
        pytest.fail(f"the JAX cases failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-6000:]}")
    return json.loads(out.read_text())


@pytest.mark.parametrize("group", GROUPS)
def test_shard_map_on_simulated_devices(report, group):
    rec = report[group]
    assert rec["checks"] > 0
    assert not rec["failures"], f"{len(rec['failures'])} of {rec['checks']} checks failed:\n" + "\n".join(rec["failures"][:40])
