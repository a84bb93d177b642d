"""Run the demo's experiments, write ``results.json`` and ``report.html``."""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import losskit as lk

from . import _boosting, _imbalance, _segmentation, _tails
from . import _experiments as ex


class DemoOutputError(OSError):
    """The output folder cannot be created or written."""


@dataclass
class DemoResults:
    """What a run measured. ``summary`` is JSON-ready (it is what ``results.json`` holds);
    ``raw`` keeps the arrays the report plots."""

    out: Path
    report: Path | None
    results: Path
    summary: dict
    raw: dict
    seconds: float


def check_writable(out) -> Path:
    """Create ``out`` (and its parents) and check a file can be written there."""
    out = Path(out)
    try:
        if out.exists() and not out.is_dir():
            raise DemoOutputError(f"--out {str(out)!r} exists and is not a folder.")
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".losskit-write-test-", dir=out)
        os.close(fd)
        os.unlink(probe)
    except DemoOutputError:
        raise
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise DemoOutputError(f"cannot write to {str(out)!r}: {reason}. Pass --out with a folder you can write to.") from None
    return out


def run_demo(out="losskit-demo", *, seed: int = 0, quick: bool = False, progress=None, report: bool = True) -> DemoResults:
    """Train the demo models and write ``out/results.json`` and (with ``report``)
    ``out/report.html``. ``quick`` uses small settings (CI, tests). ``progress`` follows the
    protocol of :class:`losskit.demo._experiments.NullProgress`."""
    out = check_writable(out)
    progress = progress or ex.NullProgress()
    settings = ex.Settings.quick() if quick else ex.Settings()
    seeds = np.random.SeedSequence(seed).spawn(8)  # children are by index: adding one leaves the others
    rngs = [np.random.default_rng(s) for s in seeds]
    t0 = time.perf_counter()
    timings = {}
    raw = {}
    t = time.perf_counter()
    raw["regression"] = ex.regression(rngs[0], settings, progress)
    timings["regression"] = time.perf_counter() - t
    t = time.perf_counter()
    raw["binary"] = ex.binary(rngs[1], settings, progress)
    timings["binary"] = time.perf_counter() - t
    t = time.perf_counter()
    raw["multiclass"] = ex.multiclass(rngs[2], settings, progress)
    timings["multiclass"] = time.perf_counter() - t
    t = time.perf_counter()
    raw["distillation"] = ex.distillation(rngs[3], settings, progress, raw["multiclass"]["means"])
    timings["distillation"] = time.perf_counter() - t
    t = time.perf_counter()
    raw["boosting"] = _boosting.run(rngs[4], quick, progress)  # only when a boosting library is installed
    timings["boosting"] = time.perf_counter() - t
    t = time.perf_counter()
    raw["imbalance"] = _imbalance.run(rngs[5], quick, progress)
    timings["imbalance"] = time.perf_counter() - t
    t = time.perf_counter()
    raw["tails"] = _tails.run(rngs[6], quick, progress)
    timings["tails"] = time.perf_counter() - t
    t = time.perf_counter()
    raw["segmentation"] = _segmentation.run(rngs[7], quick, progress)
    timings["segmentation"] = time.perf_counter() - t
    train_seconds = time.perf_counter() - t0

    summary = summarize(raw)
    summary.update(
        seed=seed,
        quick=quick,
        settings=settings.__dict__,
        losskit_version=lk.__version__,
        numpy_version=np.__version__,
        train_seconds=round(train_seconds, 3),
        seconds_per_experiment={k: round(v, 3) for k, v in timings.items()},
    )
    results_path = out / "results.json"
    report_path = None
    if report:
        from ._report import write_report

        report_path = write_report(out / "report.html", raw, summary)
    summary["seconds"] = round(time.perf_counter() - t0, 3)
    results_path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return DemoResults(out, report_path, results_path, summary, raw, summary["seconds"])


def _pct(x):
    return f"{100 * x:.1f}%"


def summarize(raw) -> dict:
    """Numbers (JSON-ready), the rows of the summary table and one-line findings, all computed
    from the runs."""
    reg = raw["regression"]
    fits = reg["fits"]
    regression = {
        f"{name}/{data}": {k: f[k] for k in ("loss", "data", "slope", "intercept", "slope_error", "final_loss")}
        for (name, data), f in fits.items()
    }
    mlp = {name: {"rmse_to_truth": f["rmse_to_truth"]} for name, f in reg["mlp"]["fits"].items()}
    b = raw["binary"]
    binary = {k: b[k] for k in ("n_train", "n_test", "train_accuracy", "test_accuracy", "test_log_loss", "test_ece")}
    mc = raw["multiclass"]
    multiclass = {
        f"label_smoothing={ls}": {k: r[k] for k in ("train_accuracy", "test_accuracy", "test_nll", "test_ece", "mean_confidence")}
        for ls, r in mc["runs"].items()
    }
    d = raw["distillation"]
    students = {
        label: {k: st[k] for k in ("loss", "n_inputs", "n_labels", "temperature", "test_accuracy", "agreement_with_teacher", "kl_teacher_student")}
        for label, st in d["students"].items()
    }

    rows = []
    for (name, data), f in fits.items():
        if data == "outliers":
            rows.append(("1 outliers", "linear", name, f"slope {f['slope']:.3f} (true {reg['true_slope']:.1f}), error {f['slope_error']:.3f}"))
    for name, f in reg["mlp"]["fits"].items():
        rows.append(("1 outliers", "MLP 1-32-1", name, f"RMSE to true curve {f['rmse_to_truth']:.3f}"))
    rows.append(("2 binary", "MLP 2-16-16-1", "binary_cross_entropy",
                 f"test acc {_pct(b['test_accuracy'])}, log-loss {b['test_log_loss']:.3f}, ECE {b['test_ece']:.3f}"))
    for ls, r in mc["runs"].items():
        rows.append(("3 multi-class", "softmax regr.", f"cross_entropy, label_smoothing={ls}",
                     f"test acc {_pct(r['test_accuracy'])}, NLL {r['test_nll']:.3f}, ECE {r['test_ece']:.3f}"))
    rows.append(("4 distillation", "teacher 20-64-5", "cross_entropy", f"test acc {_pct(d['teacher_test_accuracy'])}"))
    for label, st in d["students"].items():
        rows.append(("4 distillation", "student 20-8-5", label,
                     f"test acc {_pct(st['test_accuracy'])}, agrees {_pct(st['agreement_with_teacher'])}, KL {st['kl_teacher_student']:.3f}"))

    boost_rows, boost_finding = _boosting.summarize(raw["boosting"])
    rows.extend(boost_rows)
    imbalance_rows, imbalance_finding = _imbalance.summarize(raw["imbalance"])
    rows.extend(imbalance_rows)
    tails_rows, tails_findings = _tails.summarize(raw["tails"])
    rows.extend(tails_rows)
    segmentation_rows, segmentation_findings = _segmentation.summarize(raw["segmentation"])
    rows.extend(segmentation_rows)

    fo = {name: fits[(name, "outliers")] for name, _ in ex.REGRESSION_LOSSES}
    r0, r1 = mc["runs"][0.0], mc["runs"][0.1]
    hard, soft, transfer = list(d["students"].values())
    findings = [
        f"Outliers ({reg['n_outliers']} of {reg['n']} points read 8-14 units low): the fitted slope is "
        f"{fo['mse']['slope']:.2f} with mse, {fo['mae']['slope']:.2f} with mae and {fo['huber']['slope']:.2f} with huber "
        f"(true {reg['true_slope']:.1f}); on the clean data all three give "
        + ", ".join(f"{fits[(n, 'clean')]['slope']:.2f}" for n, _ in ex.REGRESSION_LOSSES) + ".",
        f"Binary cross-entropy on two moons: {_pct(b['test_accuracy'])} test accuracy, ECE {b['test_ece']:.3f}.",
        f"Label smoothing 0.1 with {mc['n_wrong_labels']} wrong labels out of {mc['n_train']}: test ECE "
        f"{r0['test_ece']:.3f} -> {r1['test_ece']:.3f}, NLL {r0['test_nll']:.3f} -> {r1['test_nll']:.3f}, "
        f"accuracy {_pct(r0['test_accuracy'])} -> {_pct(r1['test_accuracy'])}, mean confidence "
        f"{r0['mean_confidence']:.2f} -> {r1['mean_confidence']:.2f}.",
        f"Distillation (T={d['temperature']:g}): a small student reaches {_pct(hard['test_accuracy'])} from "
        f"{hard['n_labels']} hard labels, {_pct(soft['test_accuracy'])} from the teacher's soft labels on the same inputs "
        f"and {_pct(transfer['test_accuracy'])} with {transfer['n_inputs'] - transfer['n_labels']} more unlabeled inputs "
        f"(teacher {_pct(d['teacher_test_accuracy'])}).",
        boost_finding,
        imbalance_finding,
        *tails_findings,
        *segmentation_findings,
    ]
    return {
        "regression": {
            "true_slope": reg["true_slope"],
            "true_intercept": reg["true_intercept"],
            "n": reg["n"],
            "n_outliers": reg["n_outliers"],
            "fits": regression,
            "mlp": mlp,
        },
        "binary": binary,
        "multiclass": {"n_train": mc["n_train"], "n_wrong_labels": mc["n_wrong_labels"], "n_test": mc["n_test"], "runs": multiclass},
        "distillation": {"temperature": d["temperature"], "teacher_test_accuracy": d["teacher_test_accuracy"],
                         "n_teacher_labels": d["n_teacher_labels"], "students": students},
        "boosting": raw["boosting"],
        "imbalance": raw["imbalance"],
        "tails": raw["tails"],
        "segmentation": raw["segmentation"],
        "rows": rows,
        "findings": findings,
    }
