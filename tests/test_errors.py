"""Clear errors that name the argument, for every kind of bad input."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import losskit as lk


def test_shape_mismatch_names_both_shapes_with_trailing_axis_hint():
    with pytest.raises(ValueError, match=r"`pred` and `target` must have the same shape, got pred \(4, 1\) and target \(4,\).*trailing axis of size 1"):
        lk.mse(np.zeros((4, 1)), np.zeros(4))
    with pytest.raises(ValueError, match=r"target \(4, 1\).*trailing axis"):
        lk.huber(np.zeros(4), np.zeros((4, 1)))
    with pytest.raises(ValueError, match=r"\(3,\) and target \(4,\)"):
        lk.binary_cross_entropy(np.zeros(3), np.zeros(4))


def test_class_ids_out_of_range_name_the_first_bad_id_and_position():
    z = np.zeros((3, 4))
    with pytest.raises(ValueError, match=r"class id 9 at target\[1\] is out of range for 4 classes"):
        lk.cross_entropy(z, np.array([0, 9, -3]))
    with pytest.raises(ValueError, match=r"class id -3 at target\[2\]"):
        lk.cross_entropy(z, np.array([0, -100, -3]), ignore_index=-100)
    # ignored or masked ids are exempt, and validate=False skips the check
    assert np.isfinite(lk.cross_entropy(z, np.array([0, -100, 1]), ignore_index=-100))
    assert np.isfinite(lk.cross_entropy(z, np.array([0, 77, 1]), mask=np.array([True, False, True])))


def test_integer_target_shape_errors():
    with pytest.raises(ValueError, match=r"without axis 1.*\(3,\).*trailing axis of size 1"):
        lk.cross_entropy(np.zeros((3, 4)), np.zeros((3, 1), dtype=int))
    with pytest.raises(ValueError, match="one-hot targets must be float"):
        lk.cross_entropy(np.zeros((3, 4)), np.zeros((3, 4), dtype=int))
    with pytest.raises(ValueError, match="ignore_index` applies to integer class ids"):
        lk.cross_entropy(np.zeros((3, 4)), np.full((3, 4), 0.25), ignore_index=-100)
    with pytest.raises(ValueError, match="`axis`=2 is out of range"):
        lk.cross_entropy(np.zeros((3, 4)), np.zeros(3, dtype=int), axis=2)


def test_non_floating_pred_is_rejected():
    with pytest.raises(TypeError, match="`pred` must be a floating-point array, got dtype int64"):
        lk.mse(np.arange(3), np.arange(3.0))
    with pytest.raises(TypeError, match="`logits` must be a floating-point array"):
        lk.cross_entropy(np.zeros((2, 3), dtype=np.int32), np.zeros(2, dtype=int))


def test_bad_options():
    x = np.zeros(3)
    with pytest.raises(ValueError, match=r"`reduction` must be one of \('mean', 'sum', 'none'\), got 'avg'"):
        lk.mse(x, x, reduction="avg")
    with pytest.raises(ValueError, match="`delta` must be in \\(0.0, inf\\], got -1.0"):
        lk.huber(x, x, delta=-1.0)
    with pytest.raises(ValueError, match="`delta`"):
        lk.huber(x, x, delta=0.0)
    with pytest.raises(ValueError, match="`normalizer` only applies to reduction='mean'"):
        lk.mse(x, x, reduction="sum", normalizer=4)
    with pytest.raises(ValueError, match="`label_smoothing` must be in \\[0.0, 1.0\\]"):
        lk.cross_entropy(np.zeros((2, 3)), np.zeros(2, dtype=int), label_smoothing=1.5)
    with pytest.raises(TypeError, match="unexpected keyword argument `detla`. Did you mean `delta`"):
        lk.huber(x, x, detla=1.0)
    with pytest.raises(ValueError, match=r"`class_weight` must have shape \(3,\)"):
        lk.cross_entropy(np.zeros((2, 3)), np.zeros(2, dtype=int), class_weight=np.ones(4))
    with pytest.raises(ValueError, match="`pos_weight` must be"):
        lk.binary_cross_entropy(np.zeros((2, 3)), np.zeros((2, 3)), pos_weight=np.ones(2))


def test_weight_and_mask_shapes():
    x = np.zeros((4, 3))
    with pytest.raises(ValueError, match=r"`weight` must have the shape of the per-sample loss \(4, 3\), got \(4,\)"):
        lk.mse(x, x, weight=np.ones(4))
    with pytest.raises(ValueError, match=r"`weight` must have the shape of the per-sample loss \(4,\), got \(4, 3\).*omits the class axis"):
        lk.cross_entropy(x, np.zeros(4, dtype=int), weight=np.ones((4, 3)))
    with pytest.raises(TypeError, match="`mask` must be a boolean array"):
        lk.mse(x, x, mask=np.ones((4, 3)))


def test_probabilities_outside_unit_interval():
    with pytest.raises(ValueError, match=r"`probs` must hold probabilities in \[0, 1\]; found 1.5 at probs\[1\]"):
        lk.binary_cross_entropy_from_probs(np.array([0.5, 1.5]), np.array([1.0, 0.0]))
    with pytest.raises(ValueError, match=r"`target` must hold probabilities.*-0.5"):
        lk.binary_cross_entropy_from_probs(np.array([0.5, 0.5]), np.array([1.0, -0.5]))
    v = lk.binary_cross_entropy_from_probs(np.array([0.5, 1.5]), np.array([1.0, 0.0]), validate=False)
    assert np.isfinite(v)


def test_mixed_libraries_are_rejected():
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match="arrays of one library"):
        lk.mse(torch.zeros(3), np.zeros(3))


def test_import_does_not_import_frameworks():
    code = "import sys, losskit; bad = [m for m in ('torch', 'jax', 'matplotlib', 'rich') if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_registry_metadata_is_complete():
    for name, loss in lk.registry.items():
        spec = loss.spec
        for field in ("formula", "gradient", "hessian", "domain", "reference", "use_when", "family"):
            assert getattr(spec, field), (name, field)
        doc = loss.__doc__
        assert ">>>" in doc and "Reference" in doc, name
        assert loss is getattr(lk, name)
