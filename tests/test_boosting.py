"""losskit.boosting: the adapters' arrays, errors and starting scores, and the custom objectives
trained side by side with XGBoost's, LightGBM's and CatBoost's built-in ones (same data,
parameters and seeds): raw margins after 20 rounds agree to 1e-6 (1e-5 for XGBoost, which
works in float32).

Losses that other issues add (poisson_nll, tweedie_deviance, ...) are in the tables already:
their cases run once the loss is registered and skip until then.
"""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest

import losskit as lk
from losskit import boosting

ROUNDS = 20
N = 400


def _has(name):
    return name in lk.registry


def _need(name):
    if not _has(name):
        pytest.skip(f"{name} is not registered yet")


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(N, 5))
    logit = X[:, 0] + 0.5 * X[:, 1]
    f32 = lambda a: a.astype(np.float32).astype(np.float64)  # noqa: E731  (labels travel as float32)
    return {
        "X": X,
        "binary": (logit + rng.logistic(size=N) > 0.3).astype(float),
        "real": f32(2 * X[:, 0] + np.sin(X[:, 1]) + 0.5 * rng.normal(size=N)),
        "classes": np.argmax(X[:, :3] + rng.normal(size=(N, 3)), axis=1).astype(float),
        "counts": rng.poisson(np.exp(0.4 * X[:, 0] + 0.2 * X[:, 1])).astype(float),
        "positive": f32(rng.gamma(2.0, np.exp(0.3 * X[:, 0]) / 2.0) * (rng.random(N) < 0.8)),
        "weight": f32(rng.uniform(0.5, 2.0, N)),
    }


# --- the arrays each library receives -------------------------------------------------------


class FakeDMatrix:
    """What the XGBoost objective reads from a DMatrix (the type's module decides the path)."""

    __module__ = "xgboost.core"

    def __init__(self, label, weight=None):
        self._label, self._weight = np.asarray(label, np.float32), weight

    def get_label(self):
        return self._label

    def get_weight(self):
        return np.empty(0, np.float32) if self._weight is None else np.asarray(self._weight, np.float32)

    def num_row(self):
        return self._label.shape[0]


class FakeDataset(FakeDMatrix):
    __module__ = "lightgbm.basic"

    def get_weight(self):
        return self._weight


@pytest.mark.parametrize("name,options", [("huber", {"delta": 0.7}), ("binary_cross_entropy", {"pos_weight": 3.0}), ("mse", {})])
def test_derivatives_are_the_losss_own(name, options, data):
    y = data["binary"] if name == "binary_cross_entropy" else data["real"]
    w = data["weight"]
    p = np.random.default_rng(1).normal(size=N)
    loss = lk.registry[name]
    g, h = loss.grad_hess(p, y, weight=w, reduction="none", **options)
    if loss.hessian_kind != "exact":
        h = w  # the default policy for a piecewise Hessian: the sample weight
    gx, hx = boosting.xgboost(loss, **options).objective(p, FakeDMatrix(y, w))
    np.testing.assert_allclose(gx, g, rtol=1e-12)
    np.testing.assert_allclose(hx, h, rtol=1e-12)
    gs, hs = boosting.xgboost(name, **options).objective(y, p, sample_weight=w)  # scikit-learn order
    np.testing.assert_array_equal(gs, loss.grad_hess(p, y, weight=w, reduction="none", **options)[0])
    gl, hl = boosting.lightgbm(loss, **options).objective(p, FakeDataset(y, w))
    np.testing.assert_allclose(gl, g, rtol=1e-12)
    np.testing.assert_allclose(hl, h, rtol=1e-12)
    gl2, _ = boosting.lightgbm(loss, **options).objective(y, p, w)
    np.testing.assert_array_equal(gl2, gs)
    ders = boosting.catboost(loss, **options).objective.calc_ders_range(p, y.astype(np.float32), w.astype(np.float32))
    assert ders.shape == (N, 2) and ders.dtype == np.float64
    np.testing.assert_allclose(ders[:, 0], -g, rtol=1e-12)  # CatBoost maximises: minus the gradient
    np.testing.assert_allclose(ders[:, 1], -h, rtol=1e-12)


def test_scale_multiplies_gradient_and_hessian(data):
    p, y = np.zeros(N), data["real"]
    g, h = boosting.xgboost("mse", scale=0.5).objective(y, p)
    np.testing.assert_array_equal(g, p - y)  # the libraries' ½r²: gradient r, Hessian 1
    np.testing.assert_array_equal(h, np.ones(N))


def test_array_options_and_weights_reach_every_class(data):
    rng = np.random.default_rng(2)
    z = rng.normal(size=(N, 3))
    ids = data["classes"]
    cw = np.array([0.5, 2.0, 1.0])
    w = data["weight"]
    g, h = lk.cross_entropy.grad_hess(z, ids.astype(int), weight=w, reduction="none", class_weight=cw, label_smoothing=0.1)
    adapter = boosting.xgboost(lk.cross_entropy, class_weight=cw, label_smoothing=0.1)
    gx, hx = adapter.objective(z.astype(np.float32).astype(np.float64), FakeDMatrix(ids, w))
    np.testing.assert_allclose(gx, g, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(hx, h, rtol=1e-5, atol=1e-7)
    # pos_weight one per output column of a multi-output BCE (XGBoost label matrix)
    pw = np.array([1.0, 4.0])
    y2 = (rng.random((N, 2)) < 0.3).astype(float)
    z2 = rng.normal(size=(N, 2))
    g2, h2 = boosting.xgboost("binary_cross_entropy", pos_weight=pw).objective(y2, z2, sample_weight=w)
    e2, f2 = lk.binary_cross_entropy.grad_hess(z2, y2, weight=np.repeat(w[:, None], 2, 1), reduction="none", pos_weight=pw)
    np.testing.assert_allclose(g2, e2, rtol=1e-12)
    np.testing.assert_allclose(h2, f2, rtol=1e-12)


def test_flat_multiclass_layouts_of_older_versions(data):
    """XGBoost 1.x: (n·K,) row-major; LightGBM < 4: (K·n,) class-major; answers in the same layout."""
    z = np.random.default_rng(3).normal(size=(N, 3))
    ids = data["classes"]
    g, h = boosting.xgboost("cross_entropy").objective(z, FakeDMatrix(ids))
    gf, hf = boosting.xgboost("cross_entropy").objective(z.reshape(-1), FakeDMatrix(ids))
    np.testing.assert_array_equal(gf, g.reshape(-1))
    np.testing.assert_array_equal(hf, h.reshape(-1))
    gl, hl = boosting.lightgbm("cross_entropy").objective(z.T.reshape(-1), FakeDataset(ids))
    np.testing.assert_array_equal(gl, g.T.reshape(-1))
    np.testing.assert_array_equal(hl, h.T.reshape(-1))
    name, value = boosting.xgboost("cross_entropy").metric(z.reshape(-1), FakeDMatrix(ids))
    assert name == "cross_entropy" and value == pytest.approx(float(lk.cross_entropy(z, ids.astype(int))), rel=1e-12)


def test_hessian_policies(data):
    p = np.linspace(-4, 4, N)
    y = np.zeros(N)
    w = data["weight"]
    exact = boosting.xgboost("huber", hessian="exact").objective(y, p, sample_weight=w)[1]
    np.testing.assert_array_equal(exact, np.where(np.abs(p) <= 1, w, 0.0))
    const = boosting.xgboost("huber").objective(y, p, sample_weight=w)[1]
    np.testing.assert_array_equal(const, w)  # default for a piecewise Hessian: LightGBM's Huber
    floor = boosting.xgboost("huber", hessian="floor", hessian_floor=0.1).objective(y, p, sample_weight=w)[1]
    np.testing.assert_array_equal(floor, np.maximum(exact, 0.1 * w))
    assert boosting.xgboost("mae").hessian == "constant"
    assert boosting.xgboost("mse").hessian == "exact"
    z = np.random.default_rng(4).normal(size=(N, 3))
    base = boosting.xgboost("cross_entropy").objective(data["classes"], z)[1]
    np.testing.assert_allclose(boosting.xgboost("cross_entropy", hessian="xgboost").objective(data["classes"], z)[1], np.maximum(2 * base, 1e-16))
    np.testing.assert_allclose(boosting.lightgbm("cross_entropy", hessian="lightgbm").objective(data["classes"], z, None)[1], 1.5 * base)


def test_negative_hessian_warns_once():
    """An 'exact' Hessian that goes negative warns (once per adapter) and names the fix."""
    loss = lk.registry["mse"]
    adapter = boosting.xgboost(loss, hessian="exact")
    adapter._core.loss = _NegativeHessian(loss)
    with pytest.warns(boosting.BoostingWarning, match="hessian='floor'"):
        adapter.objective(np.zeros(3), np.ones(3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        adapter.objective(np.zeros(3), np.ones(3))


class _NegativeHessian:
    def __init__(self, loss):
        self.loss, self.spec = loss, loss.spec

    def grad_hess(self, *a, **k):
        g, h = self.loss.grad_hess(*a, **k)
        return g, -h


def test_metric_is_the_weighted_mean(data):
    p = np.random.default_rng(5).normal(size=N)
    y, w = data["binary"], data["weight"]
    want = float(lk.binary_cross_entropy(p, y, weight=w))
    assert boosting.xgboost("binary_cross_entropy").metric(p, FakeDMatrix(y, w))[1] == pytest.approx(want, rel=1e-6)
    assert boosting.xgboost("binary_cross_entropy").metric(y, p, sample_weight=w) == pytest.approx(want, rel=1e-12)
    assert boosting.lightgbm("binary_cross_entropy").metric(p, FakeDataset(y, w)) == ("binary_cross_entropy", pytest.approx(want, rel=1e-6), False)
    m = boosting.catboost("binary_cross_entropy").metric
    assert m.is_max_optimal() is False
    parts = [m.evaluate([p[s]], y[s], w[s]) for s in (slice(0, 150), slice(150, N))]
    assert m.get_final_error(sum(e for e, _ in parts), sum(d for _, d in parts)) == pytest.approx(want, rel=1e-12)
    # class weights enter the denominator: blocks still combine into the loss's mean
    z, ids, cw = np.random.default_rng(6).normal(size=(N, 3)), data["classes"], np.array([0.2, 1.0, 3.0])
    want = float(lk.cross_entropy(z, ids.astype(int), weight=w, class_weight=cw))
    m = boosting.catboost("cross_entropy", class_weight=cw).metric
    parts = [m.evaluate(list(z[s].T), ids[s], w[s]) for s in (slice(0, 100), slice(100, N))]
    assert m.get_final_error(sum(e for e, _ in parts), sum(d for _, d in parts)) == pytest.approx(want, rel=1e-12)


def test_init_score(data):
    y, w = data["real"], data["weight"]
    assert boosting.xgboost("mse").init_score(y, w) == pytest.approx(np.average(y, weights=w))
    assert boosting.lightgbm("mae").init_score(y) == pytest.approx(float(lk.mae.baseline(y)))
    b = data["binary"]
    m = np.average(b, weights=w)
    assert boosting.catboost("binary_cross_entropy").init_score(b, w) == pytest.approx(np.log(m / (1 - m)))
    ids = data["classes"]
    freq = np.bincount(ids.astype(int), weights=w) / w.sum()
    s = boosting.xgboost("cross_entropy").init_score(ids, w)
    np.testing.assert_allclose(s, np.log(freq) - np.log(freq).mean())  # centred, as multi:softprob
    np.testing.assert_allclose(boosting.lightgbm("cross_entropy").init_score(ids, w), np.log(freq))
    rows = boosting.lightgbm("cross_entropy").init_score(ids, w, per_row=True)
    assert rows.shape == (N, 3) and np.all(rows == np.log(freq))
    assert boosting.catboost("mse").init_score(y, per_row=True).shape == (N,)
    Y = np.stack([y, 2 * y + 1], axis=1)
    np.testing.assert_allclose(boosting.xgboost("mse").init_score(Y), Y.mean(axis=0))  # one per output
    assert boosting.xgboost("cross_entropy").init_score(np.array([0, 1, 1]), num_class=2).shape == (2,)
    with pytest.raises(ValueError, match="class 2 never occurs"):
        boosting.xgboost("cross_entropy").init_score(np.array([0, 1, 1]), num_class=3)
    with pytest.raises(ValueError, match="not finite"):
        boosting.xgboost("binary_cross_entropy").init_score(np.zeros(5))


def test_clear_errors():
    with pytest.raises(ValueError, match="Did you mean 'huber'"):
        boosting.xgboost("hubber")
    with pytest.raises(TypeError, match="losskit loss"):
        boosting.lightgbm(len)
    with pytest.raises(ValueError, match="3 differentiable inputs"):
        boosting.xgboost(lk.triplet_margin)
    with pytest.raises(ValueError, match="set-level"):
        boosting.catboost("dice")
    with pytest.raises(ValueError, match="'binary_cross_entropy', the same loss on logits"):
        boosting.xgboost("binary_cross_entropy_from_probs")
    with pytest.raises(TypeError, match="unknown option `deltaa`; huber takes: delta"):
        boosting.xgboost("huber", deltaa=1.0)
    with pytest.raises(TypeError, match="sample_weight"):
        boosting.xgboost("huber", weight=np.ones(3))
    with pytest.raises(ValueError, match="delta"):
        boosting.lightgbm("huber", delta=-1.0)
    with pytest.raises(ValueError, match="`hessian` must be one of"):
        boosting.xgboost("mse", hessian="diag")
    with pytest.raises(ValueError, match="multiclass softmax"):
        boosting.xgboost("mse", hessian="xgboost")
    with pytest.raises(ValueError, match="positive finite"):
        boosting.xgboost("mse", scale=0.0)
    with pytest.raises(TypeError, match="scale"):
        boosting.xgboost("mse", scale="1")
    with pytest.raises(ValueError, match="`axis` must be -1"):
        boosting.xgboost("cross_entropy", axis=0)
    with pytest.raises(TypeError, match="multi_target"):
        boosting.catboost("mse", multi_target=1)
    # a class-axis loss with one score per row: the message says how to get K scores
    with pytest.raises(ValueError, match="num_class=K"):
        boosting.xgboost("cross_entropy").objective(np.array([0.0, 1.0]), np.zeros(2))
    # labels outside the loss's domain: the loss's own message, named
    with pytest.raises(ValueError, match="target"):
        boosting.lightgbm("binary_cross_entropy").objective(np.array([0.0, 5.0]), np.zeros(2), None)


def test_reprs():
    assert repr(boosting.xgboost("huber", delta=2.0)) == "losskit.boosting.xgboost('huber', delta=2.0, hessian='constant')"
    assert "scale=0.5" in repr(boosting.lightgbm("mse", scale=0.5).objective)
    assert "multi_target=True" in repr(boosting.catboost("mse", multi_target=True)) or not _importable("catboost")


def _importable(mod):
    try:
        __import__(mod)
        return True
    except ImportError:
        return False


def test_import_losskit_imports_no_booster():
    code = (
        "import sys, losskit as lk\n"
        "a = lk.boosting.xgboost('huber'); b = lk.boosting.lightgbm('mse'); c = lk.boosting.catboost('mae')\n"
        "print(sorted(m for m in ('xgboost', 'lightgbm', 'catboost', 'torch', 'jax') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def _elementwise_cases():
    for name, loss in sorted(lk.registry.items()):
        spec = loss.spec
        if spec.kind != "elementwise" or len(spec.inputs) != 1 or spec.target is None or spec.checks is None or loss.hessian_kind == "none":
            continue
        if spec.inputs[0] in ("probs", "prob", "probabilities", "p"):
            continue
        for i, o in enumerate(spec.checks.option_sets):
            # per-column array options (shape (K,)) belong to K scores per row, not to this 1-D path
            if not any(k.startswith("_") or np.ndim(v) > 0 for k, v in o.items()):
                yield pytest.param(name, o, id=f"{name}-{i}")


@pytest.mark.parametrize("name,options", list(_elementwise_cases()))
def test_catboost_block_path_equals_the_public_call(name, options):
    """CatBoost's many small blocks: after a block's first (checked) call the declared kernels
    run directly; every registered elementwise loss and option set gives the same arrays."""
    spec = lk.registry[name].spec
    rng = np.random.default_rng(8)
    p, y = spec.checks.sample(rng, (300,), options)
    y = y.astype(np.float32)  # CatBoost's labels are float32
    w = rng.uniform(0.5, 2.0, 300).astype(np.float32)
    for kw in ({}, {"hessian": "constant"}, {"hessian": "floor", "scale": 0.5}):
        if loss_needs_constant(name) and kw.get("hessian") not in (None, "constant"):
            continue
        obj = boosting.catboost(name, **kw, **options).objective
        first = obj.calc_ders_range(p, y, w)
        assert obj._core._checked_blocks, "the block was not recorded as checked"
        # the public call may run the Numba kernel (fused multiply-adds), the block path the
        # declared NumPy kernels: equal up to rounding
        np.testing.assert_allclose(obj.calc_ders_range(p, y, w), first, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(obj.calc_ders_range(p, y, None), boosting.catboost(name, **kw, **options).objective.calc_ders_range(p, y, None), rtol=1e-12, atol=1e-14)


def loss_needs_constant(name):
    return lk.registry[name].hessian_kind == "none"


def test_docs_page_examples_run():
    """docs/boosting.md's three-line examples (the plain ```python blocks) run as written."""
    import pathlib
    import re

    pytest.importorskip("xgboost"), pytest.importorskip("lightgbm"), pytest.importorskip("catboost")
    page = (pathlib.Path(__file__).parents[1] / "docs" / "boosting.md").read_text(encoding="utf-8")
    blocks = [b for b in re.findall(r"```python\n(.*?)```", page, re.S) if ">>>" not in b]
    assert blocks
    for block in blocks:
        exec(compile(block, "docs/boosting.md", "exec"), {})
