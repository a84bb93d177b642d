"""The demo trains real models: its numbers come from the runs, it is deterministic, and the
claims it illustrates hold on its data."""

from __future__ import annotations

import base64
import json
import re

import numpy as np
import pytest

import losskit as lk
from losskit.demo import _experiments as ex
from losskit.demo._nn import MLP, expected_calibration_error

pytest.importorskip("matplotlib")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    from losskit.demo import run_demo

    out = tmp_path_factory.mktemp("demo")
    return run_demo(out, seed=0, quick=True)


def test_robust_losses_recover_the_slope_better_than_mse(quick_run):
    fits = quick_run.summary["regression"]["fits"]
    err = {name: fits[f"{name}/outliers"]["slope_error"] for name in ("mse", "mae", "huber")}
    assert err["huber"] < err["mse"]
    assert err["mae"] < err["mse"]
    true = quick_run.summary["regression"]["true_slope"]
    assert abs(fits["mse/outliers"]["slope"] - true) == pytest.approx(err["mse"])
    # on clean data all three agree with the truth
    for name in ("mse", "mae", "huber"):
        assert fits[f"{name}/clean"]["slope_error"] < 0.1


def test_mlp_regression_robust_losses_track_the_true_curve(quick_run):
    mlp = quick_run.summary["regression"]["mlp"]
    assert mlp["huber"]["rmse_to_truth"] < mlp["mse"]["rmse_to_truth"]
    assert mlp["mae"]["rmse_to_truth"] < mlp["mse"]["rmse_to_truth"]


def test_classifiers_learn(quick_run):
    s = quick_run.summary
    assert s["binary"]["test_accuracy"] > 0.85
    for run in s["multiclass"]["runs"].values():
        assert run["test_accuracy"] > 1 / 5 + 0.2  # well above chance for 5 classes
        assert 0.0 <= run["test_ece"] <= 1.0
    d = s["distillation"]
    assert d["teacher_test_accuracy"] > 0.7
    for st in d["students"].values():
        assert st["test_accuracy"] > 0.5
        assert st["kl_teacher_student"] >= 0.0


def test_quantile_band_covers_where_the_noise_is_low_and_high(quick_run):
    runs = list(quick_run.summary["tails"]["bands"]["runs"].values())
    q, m = runs
    for part in ("coverage_low_noise", "coverage_high_noise"):
        assert abs(q[part] - 0.8) < 0.05  # conditional coverage near nominal in both halves
    # the constant-width mse band over-covers where the noise is small and under-covers where large
    assert m["coverage_low_noise"] > 0.9 and m["coverage_high_noise"] < 0.75
    assert q["mean_width_high_noise"] > 2 * q["mean_width_low_noise"]


def test_poisson_nll_recovers_the_rate_of_counts(quick_run):
    runs = quick_run.summary["tails"]["counts"]["runs"]
    poisson, mse = runs["poisson_nll (log link)"], runs["mse (identity link)"]
    assert poisson["mean_relative_error_to_true_rate"] < 0.1 < mse["mean_relative_error_to_true_rate"]
    assert poisson["negative_rate_fraction"] == 0.0 < mse["negative_rate_fraction"]
    assert poisson["test_poisson_nll"] < mse["test_poisson_nll"]


def test_report_and_results_files(quick_run):
    html = quick_run.report.read_text(encoding="utf-8")
    images = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", html)
    assert len(images) >= 5
    for b64 in images:
        assert base64.b64decode(b64)[:8] == b"\x89PNG\r\n\x1a\n"
    # every finding (computed from the run) is on the page, and results.json matches
    saved = json.loads(quick_run.results.read_text(encoding="utf-8"))
    assert saved["findings"] == quick_run.summary["findings"]
    slope = saved["regression"]["fits"]["huber/outliers"]["slope"]
    assert f"{slope:.3f}" in html
    assert saved["seed"] == 0 and saved["quick"] is True


def test_deterministic_with_a_seed_and_sensitive_to_it(tmp_path):
    s = ex.Settings(n_regression=60, regression_steps=50, mlp_regression_steps=20)
    a = ex.regression(np.random.default_rng(5), s, ex.NullProgress())
    b = ex.regression(np.random.default_rng(5), s, ex.NullProgress())
    c = ex.regression(np.random.default_rng(6), s, ex.NullProgress())
    key = ("huber", "outliers")
    assert a["fits"][key]["slope"] == b["fits"][key]["slope"]
    assert a["fits"][key]["slope"] != c["fits"][key]["slope"]


@pytest.mark.parametrize("sizes", [[3, 2], [3, 5, 4, 2]])
def test_backward_matches_finite_differences(sizes):
    """The hand-written chain rule, fed by losskit's closed-form gradient, is the gradient of
    the loss with respect to the parameters."""
    rng = np.random.default_rng(0)
    model = MLP(sizes, rng)
    x = rng.normal(size=(7, sizes[0]))
    y = rng.integers(0, sizes[-1], 7)

    def value():
        return float(lk.cross_entropy(model.forward(x), y, label_smoothing=0.1))

    out, acts = model.forward(x, keep=True)
    grads = model.backward(acts, lk.cross_entropy.grad(out, y, label_smoothing=0.1))
    for p, g in zip(model.params, grads):
        idx = tuple(rng.integers(0, n) for n in p.shape)
        old = p[idx]
        p[idx] = old + 1e-6
        up = value()
        p[idx] = old - 1e-6
        down = value()
        p[idx] = old
        assert g[idx] == pytest.approx((up - down) / 2e-6, rel=1e-5, abs=1e-8)


def test_tempered_kl_gradient_is_the_chain_rule():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(4, 3))
    t = ex.softmax(rng.normal(size=(4, 3)))
    f = ex._Tempered(lk.kl_divergence, 2.0)
    v, g = f.value_and_grad(z, t)
    eps = 1e-6
    num = np.zeros_like(z)
    for i in np.ndindex(z.shape):
        dz = np.zeros_like(z)
        dz[i] = eps
        num[i] = (f.value_and_grad(z + dz, t)[0] - f.value_and_grad(z - dz, t)[0]) / (2 * eps)
    np.testing.assert_allclose(g, num, rtol=1e-6, atol=1e-9)
    assert v == pytest.approx(4.0 * float(lk.kl_divergence(z / 2.0, t)))


def test_expected_calibration_error():
    # perfectly calibrated by construction: confidence 0.75, 3 of 4 right
    probs = np.array([[0.75, 0.25]] * 4)
    labels = np.array([0, 0, 0, 1])
    ece, table = expected_calibration_error(probs, labels, bins=10)
    assert ece == pytest.approx(0.0)
    assert sum(n for *_, n in table) == 4
    # always-confident and always-wrong: ECE = confidence
    ece, _ = expected_calibration_error(np.array([[0.9, 0.1]] * 5), np.ones(5, int))
    assert ece == pytest.approx(0.9)


def test_unwritable_out_is_a_clear_error(tmp_path):
    from losskit.demo._run import DemoOutputError, check_writable

    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(DemoOutputError, match="not a folder"):
        check_writable(f)
    with pytest.raises(DemoOutputError, match="cannot write"):
        check_writable(f / "sub")


def test_import_losskit_does_not_import_demo_or_cli_libraries():
    import subprocess
    import sys

    code = "import sys, losskit; bad = [m for m in ('click', 'rich', 'matplotlib', 'losskit.demo', 'losskit.cli') if m in sys.modules]; print(bad)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_outlier_claim_holds_for_other_seeds(seed):
    """The headline is a property of the setup, not of one lucky seed."""
    rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(4)[0])
    r = ex.regression(rng, ex.Settings.quick(), ex.NullProgress())
    err = {n: r["fits"][(n, "outliers")]["slope_error"] for n in ("mse", "mae", "huber")}
    assert max(err["mae"], err["huber"]) < err["mse"]


def test_dice_finds_the_rare_class_that_cross_entropy_misses(quick_run):
    """Section 8: the rare class (about 1 % of the pixels) is found with cross_entropy + dice
    and mostly missed with cross_entropy alone; the common classes are not paid for it."""
    from losskit.demo._segmentation import CLASSES, RARE

    seg = quick_run.summary["segmentation"]
    assert seg["class_fractions"][RARE] < 0.02
    ce, both = seg["runs"]["cross_entropy"], seg["runs"]["cross_entropy + dice"]
    rare = CLASSES[RARE]
    _assert_rare_class_claim(ce[rare], both[rare])
    for name in CLASSES[:RARE]:
        assert both[name]["iou"] > ce[name]["iou"] - 0.02
    html = quick_run.report.read_text(encoding="utf-8")
    assert "8. Segmentation with a rare class" in html
    assert any(f.startswith("Segmentation with a rare class") for f in quick_run.summary["findings"])
    assert f"{both[rare]['recall']:.1%}" in html


def _assert_rare_class_claim(ce, both):
    assert ce["recall"] < 0.1 and both["recall"] > max(0.15, 5 * ce["recall"])
    assert both["iou"] > ce["iou"] + 0.1


@pytest.mark.parametrize("seed", [1, 2])
def test_rare_class_claim_holds_for_other_seeds(seed):
    from losskit.demo import _segmentation as seg

    r = seg.run(np.random.default_rng(np.random.SeedSequence(seed).spawn(8)[7]), True, ex.NullProgress())
    _assert_rare_class_claim(*(r["runs"][k][seg.CLASSES[seg.RARE]] for k in seg.LOSSES))
