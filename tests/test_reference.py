"""Values equal the peer's (torch.nn.functional) to 1e-6 relative in float64, for every
shared option and reduction, on every backend."""

from __future__ import annotations

import numpy as np
import pytest

import losskit as lk
from cases import CASES, case_ids, losskit_options, option_id

torch = pytest.importorskip("torch")

REDUCTIONS = ("mean", "sum", "none")


def test_every_loss_has_a_case():
    assert set(lk.registry) <= set(CASES), f"add a test case for {sorted(set(lk.registry) - set(CASES))}"


def _torch_ref(name, pred, target, reduction, o):
    ref = CASES[name].torch_ref
    t_pred = torch.as_tensor(pred)
    t_target = torch.as_tensor(target)
    return ref(t_pred, t_target, reduction, **o).numpy()


def _backend_args(backend, o):
    return {k: (backend.asarray(v) if isinstance(v, np.ndarray) else v) for k, v in losskit_options(o).items()}


@pytest.mark.parametrize("param", case_ids(), ids=option_id)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_value_matches_torch(param, reduction, backend, rng):
    name, i = param
    o = CASES[name].option_sets[i]
    pred, target = CASES[name].make(rng, o)
    expected = _torch_ref(name, pred, target, reduction, o)
    got = lk.registry[name](backend.asarray(pred), backend.asarray(target), reduction=reduction, **_backend_args(backend, o))
    assert backend.is_native(got), type(got)
    got = backend.to_numpy(got)
    assert got.shape == expected.shape
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("param", case_ids(), ids=option_id)
def test_weighted_mean_is_the_documented_rule(param, rng):
    """mean = Σ w·ℓ / Σ w·d over valid samples, with ℓ and d from torch (d = class_weight[y])."""
    name, i = param
    case = CASES[name]
    o = case.option_sets[i]
    pred, target = case.make(rng, o)
    per = _torch_ref(name, pred, target, "none", o)
    w = rng.uniform(0.1, 2.0, per.shape)
    mask = rng.random(per.shape) < 0.8
    mask.flat[0] = True
    d = np.ones(per.shape)
    valid = mask.copy()
    if name == "cross_entropy" and not o.get("_probs"):
        if o.get("class_weight") is not None:
            d = o["class_weight"][np.where(target == o.get("ignore_index", -100), 0, target)]
        if o.get("ignore_index") is not None:
            valid &= target != o["ignore_index"]
    expected = np.sum(np.where(valid, w * per, 0)) / np.sum(np.where(valid, w * d, 0))
    got = lk.registry[name](pred, target, weight=w, mask=mask, **losskit_options(o))
    np.testing.assert_allclose(got, expected, rtol=1e-10)
    got_norm = lk.registry[name](pred, target, weight=w, mask=mask, normalizer=7.0, **losskit_options(o))
    np.testing.assert_allclose(got_norm, np.sum(np.where(valid, w * per, 0)) / 7.0, rtol=1e-10)


def test_cross_entropy_class_axis_1_matches_torch_on_3d(rng):
    z = rng.standard_normal((4, 6, 3))
    y = rng.integers(0, 6, (4, 3))
    cw = rng.uniform(0.5, 2, 6)
    for ls in (0.0, 0.3):
        expected = torch.nn.functional.cross_entropy(torch.tensor(z), torch.tensor(y), weight=torch.tensor(cw), label_smoothing=ls)
        got = lk.cross_entropy(z, y, axis=1, class_weight=cw, label_smoothing=ls)
        np.testing.assert_allclose(got, expected.item(), rtol=1e-10)
        g = lk.cross_entropy.grad(z, y, axis=1, class_weight=cw, label_smoothing=ls)
        tz = torch.tensor(z, requires_grad=True)
        torch.nn.functional.cross_entropy(tz, torch.tensor(y), weight=torch.tensor(cw), label_smoothing=ls).backward()
        np.testing.assert_allclose(g, tz.grad.numpy(), rtol=1e-9, atol=1e-14)


def test_kl_matches_torch_batchmean_2d(rng):
    z = rng.standard_normal((5, 4))
    t = rng.dirichlet(np.ones(4), 5)
    expected = torch.nn.functional.kl_div(torch.log_softmax(torch.tensor(z), -1), torch.tensor(t), reduction="batchmean")
    np.testing.assert_allclose(lk.kl_divergence(z, t), expected.item(), rtol=1e-10)


def test_kl_zero_probability_target_is_zero_contribution():
    z = np.array([[0.0, 1.0, -np.inf]])
    t = np.array([[0.5, 0.5, 0.0]])
    v, g = lk.kl_divergence.value_and_grad(z, t)
    p = np.exp(z[0, :2] - np.logaddexp(z[0, 0], z[0, 1]))
    expected = np.sum(t[0, :2] * (np.log(t[0, :2]) - np.log(p)))
    np.testing.assert_allclose(v, expected, rtol=1e-12)
    assert np.all(np.isfinite(g)) and g[0, 2] == 0


def test_values_match_torch_on_edge_inputs():
    """The edge grid in float64, compared per sample wherever the peer's value is finite."""
    from test_edges import EDGE_INPUTS

    for name, (pred, target, opts) in EDGE_INPUTS.items():
        ref_opts = dict(opts)
        if name == "binary_cross_entropy_from_probs":
            keep = (pred > 1e-12) & (pred < 1 - 1e-12)  # losskit clips at eps, torch at log >= -100
            pred, target = pred[keep], target[keep]
        expected = CASES[name].torch_ref(torch.as_tensor(pred), torch.as_tensor(target), "none", **ref_opts).numpy()
        got = lk.registry[name](pred, target, reduction="none", **opts)
        finite = np.isfinite(expected)
        assert finite.any(), name
        np.testing.assert_allclose(got[finite], expected[finite], rtol=1e-6, atol=1e-300, err_msg=name)
