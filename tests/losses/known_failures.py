"""Known bugs that a generic suite exposes, one entry per loss and test:
``KNOWN[loss][test function] = reason`` (every option set) or ``{option-set index: reason}``.
``registry_cases`` marks those cases ``xfail(strict=True)``, so a fix shows up as an unexpected
pass and the entry must go. Keep each reason specific: what is wrong, where (src or the
declaration)."""

_BCE_POS_WEIGHT_OVERFLOW = (
    "src bug: binary_cross_entropy with pos_weight > 1 at a wrong sure logit (z = -inf, y = 1) "
    "computes pos_weight * (|z| - z) on the clipped logit (2 * max/2) and overflows to inf "
    "(RuntimeWarning on NumPy); the docs promise a huge finite value"
)
_BCE_EDGES_SHAPE = (
    "declaration bug: checks.edges(o) returns 8 logits, but option set pos_weight=array(4) "
    "needs a last axis of 4 (edges must be valid inputs for every option set)"
)
_CE_EDGES_SHAPE = (
    "declaration bug: checks.edges(o) has 3 classes, but the option set's class_weight has 5 "
    "(edges must be valid inputs for every option set)"
)

_COMPILE = (
    "src bug: torch.compile(fullgraph=True) breaks the graph in the {} autograd.Function's "
    "forward (torch.result_type returns a dtype, which Dynamo cannot put in the graph); the "
    "declaration says checks.compiles=True"
)

KNOWN: dict = {
    "dice": {
        "test_torch_compile_fullgraph": _COMPILE.format("SetLossFunction"),
        "test_nan_in_soft_target_reaches_every_output": "src bug: a NaN target pixel makes "
        "Σt NaN, `present = Σt > 0` is then False and the set's value becomes 0 (value and "
        "gradient): NaN is silently replaced instead of propagated",
        "test_zero_normalizer_with_valid_samples_is_an_error": "src bug: dice(normalizer=0) "
        "with valid sets returns 0 instead of the ValueError every other loss raises (zero "
        "denominators are errors; only an empty selection gives 0)",
    },
    "triplet_margin": {"test_torch_compile_fullgraph": _COMPILE.format("MultiLossFunction")},
    "mae": {
        "test_torch_func_grad_and_vmap": "src bug: mae's gradient is xp.sign, which "
        "array_api_compat implements on torch with a boolean-mask assignment (its NaN fix-up) "
        "that torch.func.vmap cannot batch; the declaration says checks.vmaps=True",
    },
    "binary_cross_entropy": {
        "test_finite_value_grad_hess_at_the_edges": {1: _BCE_POS_WEIGHT_OVERFLOW, 2: _BCE_EDGES_SHAPE},
        "test_values_match_the_peer_on_edge_inputs": {1: _BCE_POS_WEIGHT_OVERFLOW, 2: _BCE_EDGES_SHAPE},
        "test_newton_steps_reach_the_baseline": {
            1: "src bug: binary_cross_entropy.baseline ignores pos_weight (the optimum is "
            "logit(Σ w·pw·y / Σ w·(1 + (pw − 1)y)), not the log-odds of the mean target)",
            2: "src bug: binary_cross_entropy.baseline ignores pos_weight (per column here)",
        },
        "test_perfect_predictions_reach_the_declared_minimum": {
            0: "declaration bug: checks.minimum clips y to [1e-3, 1 - 1e-3] before taking its "
            "logit and entropy, so for targets outside that range (rng.random draws them) the "
            "declared minimiser and minimum belong to another target",
        },
    },
    "binary_cross_entropy_from_probs": {
        "test_values_match_the_peer_on_edge_inputs": {
            0: "declaration gap: the torch peer clamps log at -100 where losskit clips p to "
            "[eps, 1 - eps] (a documented difference), but the Peer declares no less_accurate "
            "mask for p within eps of 0 or 1",
        },
    },
    "cross_entropy": {
        "test_finite_value_grad_hess_at_the_edges": {2: _CE_EDGES_SHAPE, 5: _CE_EDGES_SHAPE, 7: _CE_EDGES_SHAPE},
        "test_values_match_the_peer_on_edge_inputs": {2: _CE_EDGES_SHAPE, 5: _CE_EDGES_SHAPE, 7: _CE_EDGES_SHAPE},
        "test_newton_steps_reach_the_baseline": {
            7: "src bug: cross_entropy.baseline ignores label_smoothing and class_weight (the "
            "optimum is log Σ_i w_i q_i with q the smoothed, class-weighted target)",
        },
    },
}
