"""The ``losskit`` command: output generated from the registry, clear errors, no tracebacks."""

from __future__ import annotations

import json

import pytest

import losskit as lk

click = pytest.importorskip("click")
pytest.importorskip("rich")
from click.testing import CliRunner  # noqa: E402

from losskit.cli import build, latex_to_text, suggest  # noqa: E402


@pytest.fixture(scope="module")
def app():
    return build()


def invoke(app, *args):
    return CliRunner().invoke(app, list(args), catch_exceptions=False, terminal_width=200)


def test_list_shows_every_registered_loss(app):
    res = invoke(app, "list")
    assert res.exit_code == 0, res.output
    for name, loss in lk.registry.items():
        assert name in res.output
        assert loss.spec.family in res.output
    for backend in ("numpy", "torch", "jax", "array-api"):
        assert backend in res.output


def test_list_family_filter_and_unknown_family(app):
    res = invoke(app, "list", "--family", "regression")
    assert res.exit_code == 0
    assert "huber" in res.output and "cross_entropy" not in res.output
    res = invoke(app, "list", "--family", "nope")
    assert res.exit_code == 2
    assert "families:" in res.output and "Traceback" not in res.output


@pytest.mark.parametrize("name", sorted(lk.registry))
def test_show_every_loss(app, name):
    res = invoke(app, "show", name)
    assert res.exit_code == 0, res.output
    spec = lk.registry[name].spec
    for field in ("formula", "gradient", "Hessian", "use when", "reference"):
        assert field in res.output
    assert spec.reference.split(",")[0] in res.output
    assert latex_to_text(spec.gradient) in res.output


@pytest.mark.parametrize("typo, expected", [("hubr", "huber"), ("bce", "binary_cross_entropy"), ("crossentropy", "cross_entropy"), ("kl", None)])
def test_unknown_loss_suggests_close_names(app, typo, expected):
    res = invoke(app, "show", typo)
    assert res.exit_code == 2
    assert f"unknown loss {typo!r}" in res.output
    assert "Traceback" not in res.output
    if expected:
        assert "Did you mean" in res.output and expected in res.output


def test_suggest():
    assert suggest("mse_loss", lk.registry)[0] == "mse"
    assert "kl_divergence" in suggest("divergence", lk.registry)
    assert suggest("zzzzzz", lk.registry) == []


def test_show_plot_writes_a_png(app, tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "huber.png"
    res = invoke(app, "show", "huber", "--plot", str(path))
    assert res.exit_code == 0, res.output
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_show_plot_unwritable_is_a_clear_error(app, tmp_path):
    pytest.importorskip("matplotlib")
    res = invoke(app, "show", "mse", "--plot", str(tmp_path / "missing-dir" / "x.png"))
    assert res.exit_code == 1
    assert "cannot write" in res.output and "Traceback" not in res.output


def test_demo_unwritable_out_is_a_clear_error(app, tmp_path):
    pytest.importorskip("matplotlib")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    res = invoke(app, "demo", "--quick", "--out", str(blocker / "sub"))
    assert res.exit_code == 1
    assert "cannot write" in res.output and "Traceback" not in res.output


def test_demo_end_to_end(app, tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "demo"
    res = invoke(app, "demo", "--quick", "--quiet", "--out", str(out))
    assert res.exit_code == 0, res.output
    assert (out / "report.html").is_file()
    saved = json.loads((out / "results.json").read_text())
    assert saved["findings"][0].split(":")[0] in res.output  # the printed findings are the saved ones
    assert "report:" in res.output


def test_version(app):
    res = invoke(app, "--version")
    assert lk.__version__ in res.output


@pytest.mark.parametrize(
    "tex, text",
    [
        (r"\ell(p, y) = (p - y)^2", "ℓ(p, y) = (p - y)²"),
        (r"\partial_z \ell = \sigma(z) - y", "∂_z ℓ = σ(z) - y"),
        (r"\begin{cases} \tfrac12 r^2 & |r| \le \delta \\ r & \text{otherwise} \end{cases}", "½ r² if |r| ≤ δ; r otherwise"),
    ],
)
def test_latex_to_text(tex, text):
    assert latex_to_text(tex) == text


def test_console_script_is_declared():
    from importlib.metadata import entry_points

    eps = [ep for ep in entry_points(group="console_scripts") if ep.name == "losskit"]
    assert eps and eps[0].value == "losskit.cli:main"


def test_missing_cli_libraries_give_an_install_hint():
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['click'] = None\n"
        "from losskit.cli import main\n"
        "sys.exit(main(['list']))"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 1
    assert 'pip install "losskit[demo]"' in res.stderr and "Traceback" not in res.stderr
