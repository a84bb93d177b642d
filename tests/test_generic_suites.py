"""Guards for the registry-driven test suites: every registered loss declares what they need,
and no generic test module names a loss (what is special to one loss lives in
``tests/losses/test_<loss>.py``)."""

from __future__ import annotations

import ast
from pathlib import Path

import losskit as lk

TESTS = Path(__file__).resolve().parent

# Modules that use losses as examples of something else (the command line, the demo, the
# docs, the boosting libraries' objectives), not suites run over every loss.
EXAMPLE_MODULES = ("test_cli.py", "test_demo.py", "test_docs*.py", "test_boosting*.py")


def test_every_registered_loss_declares_its_checks():
    for name, loss in lk.registry.items():
        checks = loss.spec.checks
        assert checks is not None, f"{name}: declare checks=Checks(...)"
        assert callable(checks.sample), name
        assert checks.option_sets, name
        assert checks.peers or checks.minimum is not None, f"{name}: declare a peer or a minimum"


def _modules() -> list[Path]:
    exempt = {p for pattern in EXAMPLE_MODULES for p in TESTS.glob(pattern)}
    return sorted(p for p in TESTS.glob("*.py") if p not in exempt)


def _loss_names_in(path: Path, names: set, strings_only: bool = False) -> list:
    """(line, text) of every string literal equal to a loss name (f-string pieces too) and,
    unless ``strings_only``, every ``lk.<name>`` / ``losskit.<name>`` attribute and every
    ``from losskit import <name>``."""
    hits = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names:
            hits.append((node.lineno, repr(node.value)))
        elif strings_only:
            continue
        elif isinstance(node, ast.Attribute) and node.attr in names and isinstance(node.value, ast.Name) and node.value.id in ("lk", "losskit"):
            hits.append((node.lineno, f"{node.value.id}.{node.attr}"))
        elif isinstance(node, ast.ImportFrom) and node.module == "losskit":
            hits.extend((node.lineno, f"from losskit import {a.name}") for a in node.names if a.name in names)
    return hits


def _registry_driven(path: Path) -> bool:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return any(
        isinstance(node, (ast.Import, ast.ImportFrom))
        and ((getattr(node, "module", None) == "registry_cases") or any(a.name == "registry_cases" for a in node.names))
        for node in ast.walk(tree)
    )


# the suites run over every loss (values, derivatives, edges, properties, hooks, fast paths,
# errors): each must read the registry through registry_cases
SUITES = ("test_reference.py", "test_derivatives.py", "test_edges.py", "test_properties.py", "test_torch_hooks.py", "test_jax_hooks.py", "test_blocks.py", "test_reliability.py", "test_errors.py")


def test_no_test_module_holds_a_loss_name_as_a_string():
    names = set(lk.registry)
    found = {p.name: hits for p in _modules() if (hits := _loss_names_in(p, names, strings_only=True))}
    assert not found, f"test modules name losses in strings (per-loss tests go to tests/losses/test_<loss>.py): {found}"


def test_registry_driven_suites_name_no_loss_at_all():
    names = set(lk.registry)
    driven = [p for p in _modules() if _registry_driven(p)]
    assert {TESTS / s for s in SUITES} <= set(driven), sorted(set(SUITES) - {p.name for p in driven})
    assert TESTS / "registry_cases.py" in _modules()
    found = {p.name: hits for p in driven + [TESTS / "registry_cases.py"] if (hits := _loss_names_in(p, names))}
    assert not found, f"registry-driven suites name losses (move those tests to tests/losses/test_<loss>.py): {found}"


def test_the_guard_sees_names(tmp_path):
    """The scan itself finds each form of naming a loss."""
    name = next(iter(lk.registry))
    src = tmp_path / "t.py"
    src.write_text(f"import losskit as lk\nfrom losskit import {name}\nx = lk.{name}\ny = '{name}'\nz = f'{{1}}{name}'\n", encoding="utf-8")
    assert [line for line, _ in _loss_names_in(src, {name})] == [2, 3, 4, 5]  # f-string pieces too
