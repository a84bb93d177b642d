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

