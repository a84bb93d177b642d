"""Every docstring example runs and prints what it says."""

from __future__ import annotations

import doctest

import pytest

import losskit as lk


@pytest.mark.parametrize("name", sorted(lk.registry))
def test_docstring_example(name):
    loss = lk.registry[name]
    parser = doctest.DocTestParser()
    test = parser.get_doctest(loss.__doc__, {}, name, None, 0)
    assert test.examples, f"{name} has no example"
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    runner.run(test)
    assert runner.failures == 0


def test_readme_examples_run():
    """The README's 30-second examples are copy-pasteable."""
    import pathlib
    import re

    pytest.importorskip("torch")
    readme = (pathlib.Path(__file__).parents[1] / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
    assert len(blocks) >= 2
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})


def _markdown_doctests():
    import pathlib
    import re

    docs = pathlib.Path(__file__).parents[1] / "docs"
    out = []
    for page in sorted(docs.glob("*.md")):
        fences = re.findall(r"^```(\w*)\n(.*?)^```", page.read_text(), re.S | re.M)
        blocks = [b for lang, b in fences if lang in ("python", "pycon") and ">>>" in b]
        if blocks:
            out.append(pytest.param(page, "\n".join(blocks), id=page.name))
    return out


@pytest.mark.parametrize("page,text", _markdown_doctests())
def test_markdown_examples(page, text):
    """``>>>`` examples in docs/*.md print what they say (one namespace per page)."""
    test = doctest.DocTestParser().get_doctest(text, {}, page.name, str(page), 0)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    runner.run(test)
    assert runner.failures == 0
