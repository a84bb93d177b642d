"""Sphinx extension: one page per loss family, generated from ``losskit.registry``.

Nothing here names a loss: a loss declared with ``losskit._loss.declare`` gets its section
(signature, docstring, formula / gradient / Hessian table, options, plot) on its family's page
at the next build. Generated files go to ``docs/losses/`` and ``docs/_generated/`` (both
git-ignored); ``tests/test_docs.py`` checks that every registered loss has its page.
"""

from __future__ import annotations

import inspect
from collections import defaultdict
from pathlib import Path

GENERATED_NOTE = ".. This file is generated from losskit.registry by docs/_ext/losskit_pages.py at build time; do not edit."


def families(registry) -> dict[str, list]:
    """Family -> losses, in registration order."""
    out = defaultdict(list)
    for loss in registry.values():
        out[loss.spec.family].append(loss)
    return dict(out)


def family_title(family: str) -> str:
    return f"{family[:1].upper()}{family[1:]} losses"


def _indent(text: str, n: int) -> str:
    pad = " " * n
    return "\n".join(pad + line if line.strip() else "" for line in text.splitlines())


def loss_section(loss, plot: str | None) -> str:
    s = loss.spec
    sig = str(inspect.signature(loss))
    doc = inspect.cleandoc(loss.__doc__ or s.use_when)
    options = ", ".join(f"``{k}={v!r}``" for k, v in s.options.items()) or "only the common ones"
    from losskit._spec import kind_words

    kind = kind_words(s)
    lines = [
        f".. _loss-{s.name}:",
        "",
        s.name,
        "-" * len(s.name),
        "",
        f".. py:function:: losskit.{s.name}{sig}",
        "",
        _indent(doc, 3),
        "",
        "   .. list-table:: At a glance (from the declaration)",
        "      :widths: 18 82",
        "",
        "      * - loss",
        f"        - :math:`{s.formula}` ({kind})",
        "      * - gradient",
        f"        - :math:`{s.gradient}`",
        "      * - Hessian diagonal",
        f"        - :math:`{s.hessian}`",
        "      * - domain",
        f"        - {s.domain}",
        "      * - options",
        f"        - {options}; plus ``weight``, ``mask``, ``reduction``, ``normalizer``, ``validate`` (see :doc:`/conventions`)",
        "      * - use when",
        f"        - {s.use_when}",
        "      * - reference",
        f"        - {s.reference}",
        "      * - derivatives",
        f"        - ``lk.{s.name}.grad``, ``lk.{s.name}.value_and_grad``, ``lk.{s.name}.grad_hess``",
        "",
    ]
    if plot:
        lines += [
            f"   .. figure:: {plot}",
            f"      :alt: value, gradient and Hessian diagonal of {s.name}",
            "",
            f"      Value, gradient and Hessian diagonal of ``{s.name}`` (``losskit show {s.name} --plot FILE.png``).",
            "",
        ]
    return "\n".join(lines)


def family_page(family: str, losses, plots: dict) -> str:
    title = family_title(family)
    names = ", ".join(f":ref:`{l.spec.name} <loss-{l.spec.name}>`" for l in losses)
    parts = [GENERATED_NOTE, "", title, "=" * len(title), "", f"Losses of the ``{family}`` family: {names}.", ""]
    parts += [loss_section(l, plots.get(l.spec.name)) for l in losses]
    return "\n".join(parts) + "\n"


def table_page(registry) -> str:
    rows = [
        GENERATED_NOTE,
        "",
        ".. list-table::",
        "   :header-rows: 1",
        "   :widths: 25 15 60",
        "",
        "   * - loss",
        "     - family",
        "     - per-sample formula",
    ]
    for fam, losses in families(registry).items():
        for l in losses:
            rows += [
                f"   * - :ref:`{l.spec.name} <loss-{l.spec.name}>`",
                f"     - :doc:`{fam} </losses/{fam}>`",
                f"     - :math:`{l.spec.formula}`",
            ]
    return "\n".join(rows) + "\n"


def generate(docs_dir, *, plots: bool = True) -> dict[str, Path]:
    """Write ``losses/<family>.rst``, ``_generated/loss_table.rst`` and (with ``plots``) the
    PNGs; returns family -> page path. Stale family pages are removed."""
    import losskit as lk

    docs_dir = Path(docs_dir)
    pages_dir = docs_dir / "losses"
    gen_dir = docs_dir / "_generated"
    plot_dir = gen_dir / "plots"
    pages_dir.mkdir(parents=True, exist_ok=True)
    plot_dir.mkdir(parents=True, exist_ok=True)
    fams = families(lk.registry)
    plot_paths = {}
    if plots:
        from losskit.demo._lossplot import plot_loss

        for name, loss in lk.registry.items():
            plot_loss(loss, plot_dir / f"{name}.png", dpi=90)
            plot_paths[name] = f"/_generated/plots/{name}.png"
    written = {}
    for fam, losses in fams.items():
        path = pages_dir / f"{fam}.rst"
        _write_if_changed(path, family_page(fam, losses, plot_paths))
        written[fam] = path
    for old in pages_dir.glob("*.rst"):
        if old.stem not in fams:
            old.unlink()
    _write_if_changed(gen_dir / "loss_table.rst", table_page(lk.registry))
    return written


def _write_if_changed(path: Path, text: str) -> None:
    # unchanged files keep their mtime, so incremental builds stay incremental
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")


def _on_builder_inited(app):
    generate(app.srcdir)


def setup(app):
    app.connect("builder-inited", _on_builder_inited)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
