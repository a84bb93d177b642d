"""The ``losskit`` command: output generated from the registry, clear errors, no tracebacks."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import losskit as lk

click = pytest.importorskip("click")
pytest.importorskip("rich")
from click.testing import CliRunner  # noqa: E402

from losskit.cli import build, latex_to_text, plot_path, suggest  # noqa: E402


@pytest.fixture(scope="module")
def app():
    return build()


def invoke(app, *args, width=200):
    """Run the command on a console ``width`` columns wide, whatever the terminal running the
    tests: rich reads COLUMNS (not click's ``terminal_width``) and adds colour codes under
    FORCE_COLOR / TTY_COMPATIBLE, so those are pinned too."""
    env = {"COLUMNS": str(width), "FORCE_COLOR": None, "TTY_COMPATIBLE": None, "TTY_INTERACTIVE": None}
    return CliRunner().invoke(app, list(args), catch_exceptions=False, terminal_width=width, env=env)


def squash(text: str) -> str:
    """``text`` without whitespace: a narrow console folds long cells onto indented lines."""
    return re.sub(r"\s+", "", text)


@pytest.mark.parametrize("width", [80, 200])  # the narrow (stacked) and the wide table layout
def test_list_shows_every_registered_loss(app, width):
    res = invoke(app, "list", width=width)
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


@pytest.mark.parametrize("width", [50, 300])
@pytest.mark.parametrize("name", sorted(lk.registry))
def test_show_every_loss(app, name, width):
    res = invoke(app, "show", name, width=width)
    assert res.exit_code == 0, res.output
    spec = lk.registry[name].spec
    for field in ("formula", "gradient", "Hessian", "use when", "reference"):
        assert field in res.output
    out = squash(res.output)
    assert squash(spec.reference.split(",")[0]) in out
    for tex in (spec.formula, spec.gradient, spec.hessian):
        assert squash(latex_to_text(tex)) in out
    res = invoke(app, "show", name, "--latex", width=width)
    assert res.exit_code == 0, res.output
    assert squash(spec.gradient) in squash(res.output)


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


MAGIC = {".png": b"\x89PNG\r\n\x1a\n", ".pdf": b"%PDF", ".svg": b"<?xml"}


def written(res) -> Path:
    """The path the ``wrote ...`` line names."""
    lines = [line for line in res.output.splitlines() if line.startswith("wrote ")]
    assert len(lines) == 1, res.output
    return Path(lines[0][len("wrote "):])


@pytest.mark.parametrize("name", sorted(lk.registry))
def test_show_plot_every_loss(app, name, tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    monkeypatch.chdir(tmp_path)
    res = invoke(app, "show", name, "--plot", f"{name}.png")
    assert res.exit_code == 0, res.output
    assert written(res) == Path(f"{name}.png")
    assert Path(f"{name}.png").read_bytes()[:8] == MAGIC[".png"]


@pytest.mark.parametrize(
    "value, expected",
    [
        ("figure", "figure.png"),  # no suffix: .png is added, and the message says so
        ("figure.png", "figure.png"),
        ("figure.svg", "figure.svg"),
        ("figure.pdf", "figure.pdf"),
        ("Figure.PDF", "Figure.PDF"),
        ("br[red]acket", "br[red]acket.png"),  # not read as rich markup
    ],
)
def test_show_plot_reports_the_file_it_wrote(app, value, expected, tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    monkeypatch.chdir(tmp_path)
    res = invoke(app, "show", "mse", "--plot", value)
    assert res.exit_code == 0, res.output
    assert written(res) == Path(expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == [expected]  # that file and nothing else
    assert Path(expected).read_bytes().startswith(MAGIC[Path(expected).suffix.lower()])


def test_plot_path_rule(tmp_path):
    assert plot_path("figure") == "figure.png"
    assert plot_path("out.d/figure") == "out.d/figure.png"
    assert plot_path("a.svg") == "a.svg"
    (tmp_path / "taken.png").mkdir()
    for bad in ("", "fig.", "fig.jpg", "fig.pgf", "run.v2", "folder/", str(tmp_path / "taken")):
        with pytest.raises(ValueError):
            plot_path(bad)


# Every option given an invalid value (and every argument a bad one): (arguments, exit code, the
# option or argument the message must name). {tmp} is a folder holding a file `a-file` and a
# folder `folder.png`; the working directory is {tmp}. Exit code 2: click's usage error, nothing
# written. Exit code 1: the value is well formed but the file system refuses it.
DEMO = ("demo", "--quick", "--quiet", "--out", "{tmp}/out")
INVALID = [
    (("nope",), 2, "nope"),
    (("--bogus",), 2, "--bogus"),
    (("list", "--family", ""), 2, "--family"),
    (("list", "--family", "nope"), 2, "--family"),
    (("list", "--family"), 2, "--family"),
    (("list", "--latex=yes"), 2, "--latex"),
    (("show",), 2, "NAME"),
    (("show", ""), 2, "NAME"),
    (("show", "hubr"), 2, "NAME"),
    (("show", "mse", "--latex=yes"), 2, "--latex"),
    (("show", "mse", "--plot"), 2, "--plot"),
    (("show", "mse", "--plot", ""), 2, "--plot"),
    (("show", "mse", "--plot", "{tmp}"), 2, "--plot"),  # an existing folder
    (("show", "mse", "--plot", "{tmp}/new-folder/"), 2, "--plot"),  # names a folder
    (("show", "mse", "--plot", "{tmp}/folder"), 2, "--plot"),  # would write folder.png, a folder
    (("show", "mse", "--plot", "fig."), 2, "--plot"),
    (("show", "mse", "--plot", "fig.xyz"), 2, "--plot"),
    (("show", "mse", "--plot", "fig.pgf"), 2, "--plot"),  # matplotlib would need LaTeX
    (("show", "mse", "--plot", "fig.jpg"), 2, "--plot"),
    (("show", "mse", "--plot", "{tmp}/missing/x.png"), 1, "--plot"),
    (("show", "mse", "--plot", "{tmp}/a-file/x.png"), 1, "--plot"),
    ((*DEMO, "--seed", "-1"), 2, "--seed"),
    ((*DEMO, "--seed", "-4294967296"), 2, "--seed"),
    ((*DEMO, "--seed", "1.5"), 2, "--seed"),
    ((*DEMO, "--seed", "abc"), 2, "--seed"),
    ((*DEMO, "--seed", ""), 2, "--seed"),
    ((*DEMO, "--seed"), 2, "--seed"),
    (("demo", "--quick", "--quiet", "--out", ""), 2, "--out"),
    (("demo", "--quick", "--quiet", "--out", "{tmp}/a-file"), 2, "--out"),  # an existing file
    (("demo", "--quick", "--quiet", "--out"), 2, "--out"),
    (("demo", "--quick", "--quiet", "--out", "{tmp}/a-file/sub"), 1, "--out"),
    ((*DEMO, "--quick=yes"), 2, "--quick"),
    ((*DEMO, "--quiet=yes"), 2, "--quiet"),
]


@pytest.mark.parametrize("args, code, names", INVALID, ids=[" ".join(a) or "''" for a, _, _ in INVALID])
def test_invalid_input_is_a_clean_error(app, args, code, names, tmp_path, monkeypatch):
    if code == 1:
        pytest.importorskip("matplotlib")
    (tmp_path / "a-file").write_text("")
    (tmp_path / "folder.png").mkdir()
    monkeypatch.chdir(tmp_path)
    before = sorted(tmp_path.rglob("*"))
    res = invoke(app, *(a.replace("{tmp}", str(tmp_path)) for a in args))  # an exception would propagate
    assert res.exit_code == code, res.output
    assert "Traceback" not in res.output
    assert "Error" in res.output and names in res.output, res.output
    if code == 2:
        assert sorted(tmp_path.rglob("*")) == before  # a usage error writes nothing


def test_every_option_has_invalid_value_cases(app):
    """A new command, option or argument needs its rows in INVALID."""
    covered = {(args[0], names) for args, _, names in INVALID}
    for cmd_name, cmd in app.commands.items():
        for param in cmd.params:
            name = param.opts[0] if isinstance(param, click.Option) else param.human_readable_name
            assert (cmd_name, name) in covered, f"no invalid-value case for `losskit {cmd_name} {name}`"


def test_demo_end_to_end(app, tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "demo"
    seed = 2**32  # NumPy's SeedSequence takes any non-negative integer, beyond 32 bits too
    res = invoke(app, "demo", "--quick", "--quiet", "--out", str(out), "--seed", str(seed))
    assert res.exit_code == 0, res.output
    assert (out / "report.html").is_file()
    saved = json.loads((out / "results.json").read_text())
    assert saved["seed"] == seed
    assert f"seed {seed}" in res.output
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
