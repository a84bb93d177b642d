"""losskit.distributed on real torch.distributed process groups (gloo on CPU).

Each launch starts 2 or 4 worker processes (this file run as a script), which join one gloo
group through a FileStore in a temporary directory and run many option sets in that one group:
every rank checks its value and its slice of the gradients against single-process
``lk.cross_entropy`` / ``lk.linear_cross_entropy`` on the whole inputs (every rank regenerates
them from one seed: the concatenation of the blocks) to 1e-6 in float64, and writes a report.

Nothing can hang: every collective runs under the group's timeout (``init_process_group(
timeout=...)``), the launcher kills all workers when one fails or when the launch exceeds its
deadline, and a failing rank fails the test with its own traceback.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
import traceback
import zlib
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
COLLECTIVE_TIMEOUT_S = 30  # every collective of the workers
LAUNCH_TIMEOUT_S = 150  # a whole launch (imports included), after which every worker is killed
RTOL, ATOL = 1e-6, 1e-9
IGNORE = -100


# --- the launcher (runs in pytest) ---------------------------------------------------------------


class LaunchError(AssertionError):
    pass


def launch(world: int, suites: list, tmp: Path, timeout: float = LAUNCH_TIMEOUT_S) -> list:
    """Run ``suites`` on ``world`` gloo processes; the reports of every rank, or LaunchError with
    the traceback of the first rank that failed (the others are killed, never left waiting)."""
    tmp.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    procs, errs = [], []
    for rank in range(world):
        err = open(tmp / f"rank{rank}.log", "w+")
        errs.append(err)
        cmd = [sys.executable, str(Path(__file__).resolve()), ",".join(suites), str(rank), str(world), str(tmp / "store"), str(tmp)]
        procs.append(subprocess.Popen(cmd, stdout=err, stderr=subprocess.STDOUT, env=env, cwd=str(ROOT)))
    deadline = time.monotonic() + timeout
    try:
        while True:
            codes = [p.poll() for p in procs]
            failed = [r for r, c in enumerate(codes) if c not in (None, 0)]
            if failed:
                raise LaunchError(f"rank {failed[0]} of {world} failed (exit {codes[failed[0]]}):\n{_log(tmp, failed[0])}")
            if all(c == 0 for c in codes):
                break
            if time.monotonic() > deadline:
                logs = "\n".join(f"--- rank {r}:\n{_log(tmp, r)}" for r in range(world))
                raise LaunchError(f"launch of {world} ranks ran past {timeout} s and was killed:\n{logs}")
            time.sleep(0.02)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        for e in errs:
            e.close()
    return [json.loads((tmp / f"report{r}.json").read_text()) for r in range(world)]


def _log(tmp: Path, rank: int) -> str:
    text = (tmp / f"rank{rank}.log").read_text()
    return text[-6000:]


# --- the workers --------------------------------------------------------------------------------


class Checks:
    """Comparisons of one suite on one rank: failures are recorded (not raised), so that every
    rank keeps calling the same collectives in the same order."""

    def __init__(self):
        self.count = 0
        self.failures = []

    def close(self, what, got, want, rtol=RTOL, atol=ATOL, nan=False):
        self.count += 1
        got = _np(got)
        want = _np(want)
        if got.shape != want.shape:
            self.failures.append(f"{what}: shape {got.shape} != {want.shape}")
        elif not np.allclose(got, want, rtol=rtol, atol=atol, equal_nan=nan):
            err = np.nanmax(np.abs(got - want)) if got.size else 0.0
            self.failures.append(f"{what}: max abs error {err:.3g} (got {got.ravel()[:4]}, want {want.ravel()[:4]})")

    def true(self, what, cond):
        self.count += 1
        if not cond:
            self.failures.append(what)

    def raises(self, what, exc, match, fn):
        self.count += 1
        try:
            fn()
        except exc as e:
            if match not in str(e):
                self.failures.append(f"{what}: message {str(e)!r} lacks {match!r}")
            return
        except Exception as e:  # noqa: BLE001
            self.failures.append(f"{what}: raised {type(e).__name__}: {e}")
            return
        self.failures.append(f"{what}: did not raise {exc.__name__}")


def _np(a):
    if hasattr(a, "detach"):
        a = a.detach()
        if a.dtype in (_torch().bfloat16, _torch().float16):
            a = a.float()
        return a.numpy()
    return np.asarray(a)


def _torch():
    import torch

    return torch


def _blocks(sizes, order, rank):
    """(start, size) of ``rank``'s block: ``sizes`` are the blocks in vocabulary order and
    ``order[rank]`` the block a rank holds."""
    b = order[rank]
    return sum(sizes[:b]), sizes[b]


LAYOUTS = {
    # name: (sizes per world, order per world or None (rank order), explicit vocab_start)
    "even": ({2: [6, 6], 4: [3, 3, 3, 3]}, None, False),
    "uneven": ({2: [8, 3], 4: [5, 1, 3, 6]}, None, False),
    "permuted": ({2: [4, 7], 4: [2, 6, 1, 4]}, {2: [1, 0], 4: [2, 0, 3, 1]}, True),
}


def _layout(name, rank, world):
    sizes, order, explicit = LAYOUTS[name]
    sizes = sizes[world]
    order = list(range(world)) if order is None else order[world]
    start, size = _blocks(sizes, order, rank)
    return start, size, sum(sizes), explicit


# option sets: those of cross_entropy's declaration and of the fused loss's tests
CE_OPTIONS = {
    "plain": {},
    "smooth": {"label_smoothing": 0.1},
    "class_weight": {"class_weight": "cw"},
    "ignore": {"ignore_index": IGNORE},
    "ignore_in_range": {"ignore_index": 2},
    "cw_smooth_ignore": {"class_weight": "cw", "label_smoothing": 0.25, "ignore_index": -1},
    "probs": {"_probs": True},
    "probs_smooth_cw": {"_probs": True, "label_smoothing": 0.2, "class_weight": "cw"},
    "probs_mask": {"_probs": True, "mask": "mask"},
    "megatron": {"label_smoothing": 0.1, "smoothing_formula": "megatron", "ignore_index": IGNORE},
    "zloss_softcap": {"z_loss": 1e-3, "softcap": 3.0, "ignore_index": IGNORE},
    "zloss_softcap_cw": {"z_loss": 1e-2, "softcap": 2.0, "class_weight": "cw"},
    "weight_mask": {"weight": "w", "mask": "mask", "ignore_index": IGNORE},
    "normalizer": {"normalizer": 7.5, "ignore_index": IGNORE},
}
FUSED_ONLY = ("softcap",)


def _seed(*names) -> int:
    """A seed from names, the same in every process (``hash`` of a str is salted per process)."""
    return zlib.crc32("/".join(names).encode())


def _data(seed, n, v, opts, h=None):
    """Whole-vocabulary inputs, the same on every rank."""
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
    d["u"] = rng.standard_normal(n)  # cotangent of reduction="none"
    return d


def _bind(opts, d, start, size, torch):
    """(options of the vocab-parallel call, options of the single-process reference)."""
    mine, ref = {}, {}
    for k, val in opts.items():
        if k == "_probs":
            continue
        if val == "cw":
            mine[k] = torch.tensor(d["cw"][start:start + size])
            ref[k] = torch.tensor(d["cw"])
        elif val in ("w", "mask"):
            mine[k] = ref[k] = torch.tensor(d[val])
        else:
            mine[k] = ref[k] = val
    return mine, ref


def _reference_logits(z, target, opts, reduction, torch, lk):
    """Single-process loss on the whole logits: lk.cross_entropy, or for the options it does not
    have lk.linear_cross_entropy(z, I) (logits z·I = z exactly for finite z)."""
    if any(k in opts for k in FUSED_ONLY):
        o = dict(opts)
        if "weight" in o:
            o["sample_weight"] = o.pop("weight")
        eye = torch.eye(z.shape[-1], dtype=z.dtype)
        return lk.linear_cross_entropy(z, eye, target, reduction=reduction, **o)
    return lk.cross_entropy(z, target, reduction=reduction, **opts)


def _backward(loss, leaves, reduction, u, torch):
    if reduction == "none":
        return torch.autograd.grad(loss, leaves, u.reshape(loss.shape))
    return torch.autograd.grad(loss, leaves)


def suite_ce(checks, rank, world):
    """vocab_parallel_cross_entropy: every option set x reduction x layout."""
    import torch

    import losskit as lk
    from losskit.distributed import vocab_parallel_cross_entropy as vpce

    n = 13
    # 4 ranks on 2 cores are slow to run: the even split is covered by 2 ranks
    for lname in LAYOUTS if world == 2 else ("uneven", "permuted"):
        start, size, v, explicit = _layout(lname, rank, world)
        for oname, opts in CE_OPTIONS.items():
            d = _data(_seed(oname, lname), n, v, opts)
            mine, ref = _bind(opts, d, start, size, torch)
            probs = opts.get("_probs", False)
            for reduction in ("mean", "sum", "none"):
                if "normalizer" in opts and reduction != "mean":
                    continue
                what = f"ce/{lname}/{oname}/{reduction}"
                z = torch.tensor(d["z"])
                y = torch.tensor(d["t"]) if probs else torch.tensor(d["y"])
                zr = z.clone().requires_grad_(True)
                want = _reference_logits(zr, y, ref, reduction, torch, lk)
                (gwant,) = _backward(want, [zr], reduction, torch.tensor(d["u"]), torch)
                zs = z[:, start:start + size].clone().requires_grad_(True)
                ys = y[:, start:start + size] if probs else y
                extra = {"vocab_start": start, "num_classes": v} if explicit else {}
                got = vpce(zs, ys, reduction=reduction, **extra, **mine)
                (ggot,) = _backward(got, [zs], reduction, torch.tensor(d["u"]), torch)
                checks.close(what + "/value", got, want)
                checks.close(what + "/grad", ggot, gwant[:, start:start + size])

    # the class axis elsewhere, leading axes, class weights and smoothing
    start, size, v, _ = _layout("uneven", rank, world)
    d = _data(7, 12, v, {})
    z = torch.tensor(d["z"]).reshape(3, 4, v).permute(0, 2, 1)  # (3, V, 4): class axis 1
    y = torch.tensor(d["y"]).reshape(3, 4)
    cw = torch.tensor(d["cw"])
    zr = z.clone().requires_grad_(True)
    want = lk.cross_entropy(zr, y, axis=1, class_weight=cw, label_smoothing=0.1)
    (gwant,) = torch.autograd.grad(want, zr)
    zs = z[:, start:start + size].clone().requires_grad_(True)
    got = vpce(zs, y, axis=1, class_weight=cw[start:start + size], label_smoothing=0.1)
    (ggot,) = torch.autograd.grad(got, zs)
    checks.close("ce/axis1/value", got, want)
    checks.close("ce/axis1/grad", ggot, gwant[:, start:start + size])


def suite_ce_edges(checks, rank, world):
    """All-ignored batches, ranks that hold no target, −inf and ±1e4 logits, tiny losses, NaN,
    half precision, empty batches, and errors raised alike on every rank."""
    import torch

    import losskit as lk
    from losskit.distributed import vocab_parallel_cross_entropy as vpce

    start, size, v, _ = _layout("uneven", rank, world)
    sl = slice(start, start + size)

    def compare(what, z, y, reduction="mean", nan=False, **opts):
        zr = z.clone().requires_grad_(True)
        want = lk.cross_entropy(zr, y, reduction=reduction, **opts)
        (gwant,) = torch.autograd.grad(want.sum(), zr)
        zs = z[:, sl].clone().requires_grad_(True)
        o = {k: (val[sl] if k == "class_weight" else val) for k, val in opts.items()}
        got = vpce(zs, y[:, sl] if y.is_floating_point() else y, reduction=reduction, **o)
        (ggot,) = torch.autograd.grad(got.sum(), zs)
        checks.close(what + "/value", got, want, nan=nan)
        checks.close(what + "/grad", ggot, gwant[:, sl], nan=nan)
        return got, ggot

    rng = np.random.default_rng(3)
    z = torch.tensor(rng.standard_normal((6, v)))
    # every token ignored: 0 and zero gradients, never NaN
    y_all = torch.full((6,), IGNORE)
    for reduction in ("mean", "sum", "none"):
        got, g = compare(f"edges/all_ignored/{reduction}", z, y_all, reduction, ignore_index=IGNORE)
        checks.true(f"edges/all_ignored/{reduction}: zero", float(got.abs().sum()) == 0.0 and float(g.abs().sum()) == 0.0)
    # every target in the first block: the other ranks own no target
    y0 = torch.tensor(rng.integers(0, _layout("uneven", 0, world)[1], 6))
    compare("edges/targets_on_rank0", z, y0, class_weight=torch.tensor(rng.random(v) + 0.5), label_smoothing=0.1)
    # −inf logits: a whole block of a row, impossible non-target classes, all but the target
    zi = z.clone()
    last = _layout("uneven", world - 1, world)
    zi[0, last[0]:last[0] + last[1]] = -math.inf
    zi[1, 1::2] = -math.inf
    zi[2, :] = -math.inf
    yi = torch.tensor(rng.integers(0, v, 6))
    yi[0] = 0
    yi[1] = 0
    zi[2, 3] = 1.0
    yi[2] = 3
    for opts in ({}, {"label_smoothing": 0.1}, {"label_smoothing": 0.2, "class_weight": torch.tensor(rng.random(v) + 0.5)}):
        got, g = compare(f"edges/-inf/{sorted(opts)}", zi, yi, "none", **opts)
        checks.true(f"edges/-inf/{sorted(opts)}: finite", bool(torch.isfinite(got).all() and torch.isfinite(g).all()))
    # probabilities with zero mass on the impossible classes
    t = torch.tensor(rng.random((6, v)))
    t = torch.where(torch.isinf(zi), torch.zeros_like(t), t)
    t = t / t.sum(1, keepdim=True)
    compare("edges/-inf/probs", zi, t, "none")
    # huge logits
    zh = torch.tensor(rng.choice([-1e4, 0.0, 1e4], size=(6, v)))
    compare("edges/1e4", zh, yi, "none", label_smoothing=0.1)
    # a tiny loss (confident right prediction): the split LSE keeps its relative precision
    zt = torch.zeros((3, v), dtype=torch.float64)
    yt = torch.tensor([0, v - 1, v // 2])
    zt[torch.arange(3), yt] = 40.0
    got, _ = compare("edges/tiny_loss", zt, yt, "none")
    # (torch's lk.cross_entropy uses the fused log_softmax here, exact only to about 1e-16 absolute;
    # the NumPy path and the closed form are exact to a few ulps)
    checks.close("edges/tiny_loss/numpy", got, lk.cross_entropy(zt.numpy(), yt.numpy(), reduction="none"), rtol=1e-12, atol=0)
    checks.close("edges/tiny_loss/closed_form", got, np.full(3, (v - 1) * math.exp(-40.0)), rtol=1e-12, atol=0)
    # NaN in one block of one row reaches that row on every rank, and only that row
    zn = z.clone()
    zn[3, last[0]] = math.nan
    got, g = compare("edges/nan", zn, yi, "none", nan=True)
    checks.true("edges/nan: row 3 NaN, others finite",
                bool(torch.isnan(got[3]) and torch.isfinite(got[torch.arange(6) != 3]).all() and torch.isnan(g[3]).all()))
    # half precision: float32 math, gradient in the input dtype
    for dt in (torch.bfloat16, torch.float16):
        zl = z.to(dt)
        want = lk.cross_entropy(zl.float().requires_grad_(True), yi, label_smoothing=0.1)
        zs = zl[:, sl].clone().requires_grad_(True)
        got = vpce(zs, yi, label_smoothing=0.1)
        (g,) = torch.autograd.grad(got, zs)
        checks.true(f"edges/{dt}: float32 value, gradient in {dt}", got.dtype == torch.float32 and g.dtype == dt)
        checks.close(f"edges/{dt}/value", got, want, rtol=1e-5)
    # an empty batch
    got = vpce(torch.zeros((0, size), dtype=torch.float64, requires_grad=True), torch.zeros(0, dtype=torch.int64))
    checks.true("edges/empty: 0", float(got) == 0.0)
    # errors that depend on the group: raised alike on every rank (no rank left waiting)
    zs = z[:, sl]
    checks.raises("errors/id_out_of_range", ValueError, f"out of range for {v} classes", lambda: vpce(zs, torch.full((6,), v)))
    checks.raises("errors/vocab_start_some_ranks", ValueError, "on every rank of the group or on none",
                  lambda: vpce(zs, yi, vocab_start=start if rank == 0 else None))
    checks.raises("errors/overlap", ValueError, "tile", lambda: vpce(zs, yi, vocab_start=0))
    checks.raises("errors/num_classes", ValueError, "num_classes=", lambda: vpce(zs, yi, num_classes=v + 1))
    bad = torch.tensor(rng.random((6, v)))
    checks.raises("errors/probability_rows", ValueError, "sums to", lambda: vpce(zs, bad[:, sl]))
    checks.raises("errors/normalizer_0", ValueError, "normalizer", lambda: vpce(zs, yi, normalizer=0.0))
    checks.raises("errors/megatron_bound", ValueError, "at most (V-1)/V",
                  lambda: vpce(zs, yi, label_smoothing=1.0, smoothing_formula="megatron"))
    # the group is still in step after the errors
    got = vpce(zs, yi)
    checks.close("errors/after", got, lk.cross_entropy(z, yi))


LINEAR_OPTIONS = {
    "plain": {},
    "ignore": {"ignore_index": IGNORE},
    "class_weight": {"class_weight": "cw", "ignore_index": IGNORE},
    "smooth": {"label_smoothing": 0.1},
    "smooth_cw_ignore": {"label_smoothing": 0.2, "class_weight": "cw", "ignore_index": IGNORE},
    "megatron": {"label_smoothing": 0.1, "smoothing_formula": "megatron", "ignore_index": IGNORE},
    "zloss_softcap": {"z_loss": 1e-3, "softcap": 3.0, "ignore_index": IGNORE},
    "zloss_softcap_cw": {"z_loss": 1e-2, "softcap": 2.0, "class_weight": "cw"},
    "sample_weight_mask": {"sample_weight": "w", "mask": "mask", "ignore_index": IGNORE},
    "normalizer": {"normalizer": 25.0, "ignore_index": IGNORE},
    "probs_smooth": {"_probs": True, "label_smoothing": 0.1},
}


def suite_linear(checks, rank, world):
    """vocab_parallel_linear_cross_entropy: value, full dx, this rank's dW and db slices."""
    import torch

    import losskit as lk
    from losskit.distributed import vocab_parallel_linear_cross_entropy as vplce

    n, h = 19, 6
    for lname in ("uneven", "permuted") if world == 2 else ("permuted",):
        start, size, v, explicit = _layout(lname, rank, world)
        sl = slice(start, start + size)
        for oname, opts in LINEAR_OPTIONS.items():
            d = _data(_seed(oname, lname, "linear"), n, v, opts, h=h)
            probs = opts.get("_probs", False)
            mine, ref = {}, {}
            for k, val in opts.items():
                if k == "_probs":
                    continue
                if val == "cw":
                    mine[k], ref[k] = torch.tensor(d["cw"][sl]), torch.tensor(d["cw"])
                elif val in ("w", "mask"):
                    mine[k] = ref[k] = torch.tensor(d[val])
                else:
                    mine[k] = ref[k] = val
            y = torch.tensor(d["t"]) if probs else torch.tensor(d["y"])
            for reduction in ("mean", "sum", "none"):
                if "normalizer" in opts and reduction != "mean":
                    continue
                for chunk in (4, None):
                    for bias in (True, False):
                        if not bias and chunk is None:
                            continue
                        what = f"linear/{lname}/{oname}/{reduction}/chunk={chunk}/bias={bias}"
                        x = torch.tensor(d["x"]).requires_grad_(True)
                        W = torch.tensor(d["W"]).requires_grad_(True)
                        b = torch.tensor(d["b"]).requires_grad_(True) if bias else None
                        want = lk.linear_cross_entropy(x, W, y, bias=b, reduction=reduction, **ref)
                        leaves = [x, W] + ([b] if bias else [])
                        gwant = _backward(want, leaves, reduction, torch.tensor(d["u"]), torch)
                        xs = torch.tensor(d["x"]).requires_grad_(True)
                        Ws = torch.tensor(d["W"][sl]).requires_grad_(True)
                        bs = torch.tensor(d["b"][sl]).requires_grad_(True) if bias else None
                        extra = {"vocab_start": start, "num_classes": v} if explicit else {}
                        got = vplce(xs, Ws, y[:, sl] if probs else y, bias_shard=bs, reduction=reduction, chunk_size=chunk,
                                    **extra, **mine)
                        ggot = _backward(got, [xs, Ws] + ([bs] if bias else []), reduction, torch.tensor(d["u"]), torch)
                        checks.close(what + "/value", got, want)
                        checks.close(what + "/dx", ggot[0], gwant[0])
                        checks.close(what + "/dW", ggot[1], gwant[1][sl])
                        if bias:
                            checks.close(what + "/db", ggot[2], gwant[2][sl])

    start, size, v, _ = _layout("uneven", rank, world)
    sl = slice(start, start + size)
    d = _data(11, 12, v, {"ignore_index": IGNORE}, h=h)
    # leading axes (2, 6, H) and ignored tokens whose hidden state is NaN: dW stays finite
    x = torch.tensor(d["x"]).reshape(2, 6, h)
    y = torch.tensor(d["y"]).reshape(2, 6)
    x[y == IGNORE] = math.nan
    xr, Wr = x.clone().requires_grad_(True), torch.tensor(d["W"]).requires_grad_(True)
    want = lk.linear_cross_entropy(xr, Wr, y, ignore_index=IGNORE)
    gwant = torch.autograd.grad(want, [xr, Wr])
    xs, Ws = x.clone().requires_grad_(True), torch.tensor(d["W"][sl]).requires_grad_(True)
    got = vplce(xs, Ws, y, ignore_index=IGNORE, chunk_size=5)
    ggot = torch.autograd.grad(got, [xs, Ws])
    checks.close("linear/nan_padding/value", got, want)
    checks.close("linear/nan_padding/dx", ggot[0], gwant[0])
    checks.close("linear/nan_padding/dW", ggot[1], gwant[1][sl])
    checks.true("linear/nan_padding: dW finite, ignored dx rows 0",
                bool(torch.isfinite(ggot[1]).all() and float(ggot[0][y == IGNORE].abs().sum()) == 0.0))
    # every token ignored
    xs, Ws = torch.tensor(d["x"]).requires_grad_(True), torch.tensor(d["W"][sl]).requires_grad_(True)
    got = vplce(xs, Ws, torch.full((12,), IGNORE), ignore_index=IGNORE)
    gx, gW = torch.autograd.grad(got, [xs, Ws])
    checks.true("linear/all_ignored: 0 and zero gradients", float(got) == 0.0 and float(gx.abs().sum() + gW.abs().sum()) == 0.0)
    # bfloat16 inputs: float32 loss, gradients in bfloat16, against the single-process bfloat16 call
    xb = torch.tensor(d["x"]).to(torch.bfloat16)
    Wb = torch.tensor(d["W"]).to(torch.bfloat16)
    yb = torch.tensor(d["y"])
    xr, Wr = xb.clone().requires_grad_(True), Wb.clone().requires_grad_(True)
    want = lk.linear_cross_entropy(xr, Wr, yb, ignore_index=IGNORE)
    gwant = torch.autograd.grad(want, [xr, Wr])
    xs, Ws = xb.clone().requires_grad_(True), Wb[sl].clone().requires_grad_(True)
    got = vplce(xs, Ws, yb, ignore_index=IGNORE)
    ggot = torch.autograd.grad(got, [xs, Ws])
    checks.true("linear/bf16 dtypes", got.dtype == torch.float32 and ggot[0].dtype == torch.bfloat16 and ggot[1].dtype == torch.bfloat16)
    checks.close("linear/bf16/value", got, want, rtol=1e-5)
    checks.close("linear/bf16/dx", ggot[0], gwant[0], rtol=2e-2, atol=2e-3)
    checks.close("linear/bf16/dW", ggot[1], gwant[1][sl], rtol=2e-2, atol=2e-3)


def suite_count(checks, rank, world):
    """global_count against the counts of the concatenated batches of every rank, and the
    accumulation recipe with DDP: 3 micro-batches of different valid-token counts per rank give
    the parameter gradients of one process on the whole batch."""
    import torch
    import torch.distributed as dist

    import losskit as lk

    v, h0, h = 9, 5, 4
    cw = torch.tensor(np.random.default_rng(0).random(v) + 0.5)

    def batches(r):
        rng = np.random.default_rng(100 + r)
        out = []
        for k, (n, frac) in enumerate([(5 + r, 0.1), (7, 0.6), (4 + 2 * r, 0.95 if r == 0 else 0.3)]):
            y = rng.integers(0, v, n)
            y = np.where(rng.random(n) < frac, IGNORE, y)
            if r == 1 and k == 2:
                y[:] = IGNORE  # a micro-batch with no valid token on one rank
            out.append((torch.tensor(rng.standard_normal((n, h0))), torch.tensor(y), torch.tensor(rng.random(n) + 0.5)))
        return out

    mine = batches(rank)
    everything = [mb for r in range(world) for mb in batches(r)]
    y_all = torch.cat([y for _, y, _ in everything])
    w_all = torch.cat([w for _, _, w in everything])
    valid = y_all != IGNORE
    ys = [y for _, y, _ in mine]
    ws = [w for _, _, w in mine]
    got = lk.distributed.global_count(ys, ignore_index=IGNORE)
    checks.true("count: 0-d float64", got.shape == () and got.dtype == torch.float64)
    checks.close("count/plain", got, valid.sum().double())
    checks.close("count/weight", lk.distributed.global_count(ys, ignore_index=IGNORE, weight=ws), (w_all * valid).sum())
    cwy = torch.where(valid, cw[y_all.clamp(min=0)], torch.zeros(()))
    checks.close("count/weight_class_weight", lk.distributed.global_count(ys, ignore_index=IGNORE, weight=ws, class_weight=cw),
                 (w_all * cwy).sum())
    masks = [y % 2 == 0 for y in ys]
    m_all = torch.cat([y % 2 == 0 for _, y, _ in everything])
    checks.close("count/mask", lk.distributed.global_count(ys, ignore_index=IGNORE, mask=masks), (valid & m_all).sum().double())
    # the count is the denominator lk.cross_entropy's "mean" uses on the concatenated batch
    z_all = torch.tensor(np.random.default_rng(5).standard_normal((len(y_all), v)))
    mean = lk.cross_entropy(z_all, y_all, ignore_index=IGNORE, class_weight=cw, weight=w_all)
    total = lk.cross_entropy(z_all, y_all, ignore_index=IGNORE, class_weight=cw, weight=w_all, reduction="sum")
    checks.close("count/is_the_mean_denominator", total / mean,
                 lk.distributed.global_count(ys, ignore_index=IGNORE, weight=ws, class_weight=cw))
    checks.raises("count/numpy_with_group", TypeError, "torch tensors",
                  lambda: lk.distributed.global_count(np.zeros(3, int), group=dist.group.WORLD))

    # --- the recipe: DDP, no_sync for the first micro-batches, normalizer = global count ------
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.body = torch.nn.Linear(h0, h).double()
            self.head = torch.nn.Linear(h, v, bias=False).double()

        def forward(self, x, y, normalizer=None):
            hid = torch.tanh(self.body(x))
            return lk.linear_cross_entropy(hid, self.head.weight, y, ignore_index=IGNORE, normalizer=normalizer)

    single = Net()
    single(torch.cat([x for x, _, _ in everything]), y_all).backward()
    want = {k: p.grad for k, p in single.named_parameters()}

    for recipe in ("global_count", "mean_of_means"):
        ddp = torch.nn.parallel.DistributedDataParallel(Net())
        count = lk.distributed.global_count(ys, ignore_index=IGNORE)
        for k, (x, y, _) in enumerate(mine):
            if recipe == "global_count":
                # each micro-batch's sum over the global count; DDP averages over ranks: x world
                step = lambda: (ddp(x, y, normalizer=count) * world).backward()  # noqa: E731
            else:
                # the pitfall: each micro-batch's own mean, averaged over micro-batches and ranks
                step = lambda: (ddp(x, y) / len(mine)).backward()  # noqa: E731
            if k < len(mine) - 1:
                with ddp.no_sync():
                    step()
            else:
                step()
        grads = {k: p.grad for k, p in ddp.module.named_parameters()}
        if recipe == "global_count":
            for k in want:
                checks.close(f"recipe/ddp/{k}", grads[k], want[k])
        else:
            err = max(float((grads[k] - want[k]).abs().max()) for k in want)
            checks.true(f"recipe/mean_of_means differs from the global mean (max error {err:.3g})", err > 1e-3)


def suite_groups(checks, rank, world):
    """4 ranks as 2 (data parallel) x 2 (vocab parallel) with new_group: each pair of tensor-
    parallel peers shares its tokens and splits the head; global_count over the data-parallel
    group; the losses over the data-parallel ranks add up to the global mean, dx matches the
    reference rows of the rank's tokens and dW summed over the data-parallel group matches."""
    import torch
    import torch.distributed as dist

    import losskit as lk
    from losskit.distributed import vocab_parallel_linear_cross_entropy as vplce

    assert world == 4
    tp_groups = [dist.new_group([0, 1]), dist.new_group([2, 3])]
    dp_groups = [dist.new_group([0, 2]), dist.new_group([1, 3])]
    dp, tp = rank // 2, rank % 2
    tp_group, dp_group = tp_groups[dp], dp_groups[tp]
    v, h = 11, 5
    sizes = [7, 4]
    start, size = sum(sizes[:tp]), sizes[tp]
    rng = np.random.default_rng(9)
    W = torch.tensor(rng.standard_normal((v, h)))
    data = []
    for r in range(2):
        n = 6 + 3 * r
        y = rng.integers(0, v, n)
        y = np.where(rng.random(n) < 0.3 + 0.3 * r, IGNORE, y)
        data.append((torch.tensor(rng.standard_normal((n, h))), torch.tensor(y)))
    x_all = torch.cat([x for x, _ in data]).requires_grad_(True)
    y_all = torch.cat([y for _, y in data])
    Wr = W.clone().requires_grad_(True)
    want = lk.linear_cross_entropy(x_all, Wr, y_all, ignore_index=IGNORE, label_smoothing=0.1)
    gx_want, gW_want = torch.autograd.grad(want, [x_all, Wr])
    x, y = data[dp]
    count = lk.distributed.global_count(y, ignore_index=IGNORE, group=dp_group)
    checks.close("groups/count", count, (y_all != IGNORE).sum().double())
    xs, Ws = x.clone().requires_grad_(True), W[start:start + size].clone().requires_grad_(True)
    loss = vplce(xs, Ws, y, group=tp_group, ignore_index=IGNORE, label_smoothing=0.1, normalizer=count)
    gx, gW = torch.autograd.grad(loss, [xs, Ws])
    total = loss.detach().clone()
    dist.all_reduce(total, group=dp_group)
    dist.all_reduce(gW, group=dp_group)
    rows = slice(0, 6) if dp == 0 else slice(6, 15)
    checks.close("groups/loss_sums_to_the_global_mean", total, want)
    checks.close("groups/dx", gx, gx_want[rows])
    checks.close("groups/dW", gW, gW_want[start:start + size])


def suite_fail(checks, rank, world):
    """For the launcher's own test: rank 1 fails while rank 0 waits in a collective."""
    import torch
    import torch.distributed as dist

    if rank == 1:
        raise ValueError("boom from rank 1")
    dist.all_reduce(torch.ones(1))


SUITES = {
    "ce": suite_ce,
    "ce_edges": suite_ce_edges,
    "linear": suite_linear,
    "count": suite_count,
    "groups": suite_groups,
    "fail": suite_fail,
}


def _worker(suites, rank, world, store, out):
    from datetime import timedelta

    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", store=dist.FileStore(store, world), rank=rank, world_size=world,
                            timeout=timedelta(seconds=COLLECTIVE_TIMEOUT_S))
    report = {}
    for name in suites:
        checks = Checks()
        t0 = time.perf_counter()
        SUITES[name](checks, rank, world)
        report[name] = {"checks": checks.count, "failures": checks.failures[:30], "seconds": time.perf_counter() - t0}
    dist.barrier()
    Path(out, f"report{rank}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    try:
        _worker(sys.argv[1].split(","), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5])
    except BaseException:
        traceback.print_exc()
        sys.stdout.flush()
        os._exit(1)
    # Leave without destroy_process_group or C++ static destructors: gloo's teardown sometimes
    # aborts ("terminate called without an active exception") after all work is done and reported.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


# --- the tests ----------------------------------------------------------------------------------

torch = pytest.importorskip("torch")
if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():  # pragma: no cover
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)

SUITES_2 = ["ce", "ce_edges", "linear", "count"]
SUITES_4 = ["ce", "ce_edges", "linear", "groups"]


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    """One launch per world size, shared by the tests below (each launch costs the imports of
    every rank; all option sets run inside it)."""
    cache = {}

    def get(world):
        if world not in cache:
            suites = SUITES_2 if world == 2 else SUITES_4
            try:
                cache[world] = launch(world, suites, tmp_path_factory.mktemp(f"world{world}"))
            except LaunchError as e:
                cache[world] = e
        if isinstance(cache[world], LaunchError):
            raise cache[world]
        return cache[world]

    return get


@pytest.mark.parametrize("world, suite", [(2, s) for s in SUITES_2] + [(4, s) for s in SUITES_4])
def test_suite_on_real_gloo_group(reports, world, suite):
    per_rank = reports(world)
    counts = [r[suite]["checks"] for r in per_rank]
    assert len(set(counts)) == 1 and counts[0] > 0, f"ranks ran different numbers of checks: {counts}"
    failures = [f"rank {r}: {f}" for r, rep in enumerate(per_rank) for f in rep[suite]["failures"]]
    assert not failures, f"{len(failures)} failed checks of {counts[0]} per rank:\n" + "\n".join(failures[:40])


def test_a_failing_rank_fails_the_launch_with_its_error(tmp_path):
    t0 = time.monotonic()
    with pytest.raises(LaunchError, match="boom from rank 1"):
        launch(2, ["fail"], tmp_path, timeout=60)
    # rank 0 was waiting in an all_reduce: it is killed, not waited for until the gloo timeout
    assert time.monotonic() - t0 < COLLECTIVE_TIMEOUT_S
