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
