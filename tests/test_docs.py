"""The documentation: every registered loss has its page (generated from the registry), every
example on the hand-written pages runs and prints what the page says, and the site builds
without warnings."""

from __future__ import annotations

import doctest
import importlib.util
import re
import sys
from pathlib import Path

import numpy as np
import pytest

import losskit as lk

DOCS = Path(__file__).resolve().parents[1] / "docs"
sys.path.insert(0, str(DOCS / "_ext"))
import losskit_pages  # noqa: E402

PAGES = sorted(p.name for p in DOCS.glob("*.md") if ">>>" in p.read_text(encoding="utf-8"))


def test_every_registered_loss_has_its_page(tmp_path):
    pytest.importorskip("matplotlib")
    written = losskit_pages.generate(tmp_path)
    assert set(written) == {l.spec.family for l in lk.registry.values()}
    for name, loss in lk.registry.items():
        page = written[loss.spec.family].read_text(encoding="utf-8")
        assert f".. _loss-{name}:" in page
        assert f".. py:function:: losskit.{name}(" in page
        assert loss.spec.formula in page and loss.spec.gradient in page and loss.spec.hessian in page
        assert ">>>" in page.split(f".. _loss-{name}:")[1]  # the docstring's example
        assert (tmp_path / "_generated" / "plots" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    table = (tmp_path / "_generated" / "loss_table.rst").read_text(encoding="utf-8")
    assert all(f"<loss-{name}>" in table for name in lk.registry)


@pytest.fixture
def toy_loss():
    """A loss declared the way a new loss will be, removed again afterwards."""
    from losskit._loss import ELEMENTWISE, REGISTRY, declare

    loss = declare(
        name="toy_quartic",
        family="toyfamily",
        kind=ELEMENTWISE,
        formula=r"\ell = (p - y)^4",
        gradient=r"\partial_p \ell = 4 (p - y)^3",
        hessian=r"\partial_p^2 \ell = 12 (p - y)^2",
        domain="p, y real",
        reference="none (test only)",
        use_when="never (test only)",
        value=lambda p, y, o, xp: (p - y) ** 4,
        grad=lambda p, y, o, xp: 4 * (p - y) ** 3,
        hess=lambda p, y, o, xp: 12 * (p - y) ** 2,
        title="A toy loss.",
        example=">>> 1 + 1\n2",
    )
    yield loss
    del REGISTRY["toy_quartic"]


def test_a_newly_declared_loss_gets_a_page_a_plot_and_a_cli_row(toy_loss, tmp_path):
    pytest.importorskip("matplotlib")
    written = losskit_pages.generate(tmp_path)
    assert "toy_quartic" in written["toyfamily"].read_text(encoding="utf-8")
    assert (tmp_path / "_generated" / "plots" / "toy_quartic.png").exists()
    pytest.importorskip("click")
    from click.testing import CliRunner

    from losskit.cli import build

    out = CliRunner().invoke(build(), ["list"], terminal_width=200).output
    assert "toy_quartic" in out and "toyfamily" in out
    # and the stale page goes away once the loss is gone
    from losskit._loss import REGISTRY

    saved = REGISTRY.pop("toy_quartic")
    try:
        losskit_pages.generate(tmp_path, plots=False)
        assert not (tmp_path / "losses" / "toyfamily.rst").exists()
    finally:
        REGISTRY["toy_quartic"] = saved


def _blocks(page: str):
    text = (DOCS / page).read_text(encoding="utf-8")
    fences = re.findall(r"^```(\w*)\n(.*?)^```", text, flags=re.S | re.M)
    return [b for lang, b in fences if lang in ("python", "pycon") and ">>>" in b]


@pytest.mark.parametrize("page", PAGES)
def test_examples_on_the_page_run(page):
    """Each page's ```python blocks with >>> run in order, sharing one namespace, and print
    what the page shows."""
    blocks = _blocks(page)
    assert blocks
    for mod in ("torch", "jax"):
        if any(f"import {mod}" in b for b in blocks) and importlib.util.find_spec(mod) is None:
            pytest.skip(f"{page} needs {mod}")
    parser = doctest.DocTestParser()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    globs: dict = {}
    with np.printoptions(legacy=False):
        for i, block in enumerate(blocks):
            test = parser.get_doctest(block, globs, f"{page}[{i}]", str(DOCS / page), 0)
            runner.run(test, clear_globs=False)
            globs = test.globs
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} example(s) on {page} failed (see the output above)"


def test_differences_page_covers_each_deliberate_difference():
    text = (DOCS / "differences.md").read_text(encoding="utf-8")
    headings = re.findall(r"^## (\d+)\. ", text, flags=re.M)
    assert headings == [str(i) for i in range(1, len(headings) + 1)] and len(headings) >= 10
    # every section shows an example
    for section in re.split(r"^## \d+\. ", text, flags=re.M)[1:]:
        assert ">>>" in section


def test_site_builds_without_warnings(tmp_path):
    pytest.importorskip("sphinx")
    pytest.importorskip("myst_parser")
    pytest.importorskip("furo")
    pytest.importorskip("matplotlib")
    from sphinx.cmd.build import build_main

    rc = build_main(["-W", "--keep-going", "-q", "-b", "html", "-d", str(tmp_path / "doctrees"), str(DOCS), str(tmp_path / "html")])
    assert rc == 0
    for name, loss in lk.registry.items():
        html = (tmp_path / "html" / "losses" / f"{loss.spec.family}.html").read_text(encoding="utf-8")
        assert f'id="losskit.{name}"' in html
