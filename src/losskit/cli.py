"""The ``losskit`` command: ``list``, ``show NAME [--plot FILE]`` and ``demo [--out DIR] [--seed N]``.

Needs the ``cli`` extra (click, rich; ``demo`` and ``--plot`` also matplotlib):
``pip install "losskit[demo]"``. ``import losskit`` never imports this module.
"""

from __future__ import annotations

import difflib
import importlib.util
import os
import re
import sys
import textwrap

EXTRA_HINT = 'pip install "losskit[demo]"'
BACKENDS = ("numpy", "torch", "jax", "array-api")
PLOT_SUFFIXES = (".png", ".svg", ".pdf")  # written by matplotlib itself: no LaTeX, no optional plugin


def main(argv=None) -> int:
    """Console-script entry point."""
    try:
        app = build()
    except ImportError as exc:  # click or rich missing
        print(f"losskit: the command line needs {exc.name or 'click and rich'}: {EXTRA_HINT}", file=sys.stderr)
        return 1
    return app.main(args=argv, prog_name="losskit", standalone_mode=True)


# --- helpers that need no third-party library -----------------------------------------------


def suggest(name: str, names) -> list[str]:
    """Registered names close to ``name``: by spelling, by initials (``bce``) or by substring."""
    names = list(names)
    low = name.lower().replace("-", "_")
    # a registered name inside the query (``mse_loss`` -> ``mse``) is the strongest hint
    out = sorted((n for n in names if n in low), key=len, reverse=True)
    out += [n for n in difflib.get_close_matches(low, names, n=3, cutoff=0.6) if n not in out]
    for n in names:
        initials = "".join(part[0] for part in n.split("_"))
        if (low == initials or (len(low) >= 3 and low in n) or n in low) and n not in out:
            out.append(n)
    return out[:5]


def plot_path(value: str) -> str:
    """The file ``--plot VALUE`` writes: ``VALUE`` when it ends in .png, .svg or .pdf (any case),
    ``VALUE + ".png"`` when it has no suffix. Raises ``ValueError`` (the reason) for an empty
    value, a folder, or another suffix. Appending the suffix here, rather than leaving it to
    matplotlib, makes the reported path the written one whatever ``savefig.format`` says."""
    if not value:
        raise ValueError("an empty path; give a file name such as mse.png.")
    if value.endswith(os.sep) or (os.altsep and value.endswith(os.altsep)):
        raise ValueError(f"{value!r} names a folder; give a file name such as {os.path.join(value, 'mse.png')!r}.")
    ext = os.path.splitext(value)[1]
    if not ext:
        value += ".png"
    elif ext.lower() not in PLOT_SUFFIXES:
        raise ValueError(
            f"{value!r} ends in {ext!r}; use a name ending in .png, .svg or .pdf "
            "(a name without a suffix gets .png)."
        )
    if os.path.isdir(value):
        raise ValueError(f"{value!r} is a folder; give a file name.")
    return value


def installed_backends() -> dict[str, bool]:
    """Which backends can be imported here (found without importing them)."""
    have = {
        "numpy": True,
        "torch": importlib.util.find_spec("torch") is not None,
        "jax": importlib.util.find_spec("jax") is not None,
        "array-api": importlib.util.find_spec("array_api_compat") is not None,
    }
    return have


_SYMBOLS = {
    r"\ell": "ℓ", r"\partial": "∂", r"\sigma": "σ", r"\delta": "δ", r"\varepsilon": "ε", r"\epsilon": "ε",
    r"\alpha": "α", r"\gamma": "γ", r"\lambda": "λ", r"\tau": "τ", r"\mu": "μ", r"\pi": "π", r"\theta": "θ",
    r"\sum": "Σ", r"\prod": "Π", r"\le": "≤", r"\ge": "≥", r"\leq": "≤", r"\geq": "≥", r"\cdot": "·",
    r"\times": "×", r"\infty": "∞", r"\nabla": "∇", r"\in": "∈", r"\to": "→", r"\log": "log", r"\exp": "exp", r"\max": "max",
    r"\min": "min", r"\lVert": "‖", r"\rVert": "‖", r"\|": "‖", r"\mid": "|", r"\neq": "≠", r"\approx": "≈",
}
_SUPER = str.maketrans("0123456789+-", "⁰¹²³⁴⁵⁶⁷⁸⁹⁺⁻")


def latex_to_text(tex: str) -> str:
    """A readable plain-text rendering of the simple LaTeX used in loss declarations (the
    terminal cannot typeset); unknown commands lose their backslash."""
    s = tex
    s = re.sub(r"\\begin\{cases\}(.*?)\\end\{cases\}", lambda m: _cases(m.group(1)), s, flags=re.S)
    s = re.sub(r"\\(?:operatorname|mathrm|text|mathbf|textrm|mathit)\{([^{}]*)\}", r"\1", s)
    s = re.sub(r"\\mathbb\{([^{}]*)\}", r"\1", s)
    s = re.sub(r"\\[td]?frac\s*12", "½", s)
    s = re.sub(r"\\[td]?frac\{1\}\{2\}", "½", s)
    s = re.sub(r"\\[td]?frac\{([^{}]*)\}\{([^{}]*)\}", r"(\1)/(\2)", s)
    s = re.sub(r"\\tilde\s*\{?(\w)\}?", "\\1\u0303", s)
    s = re.sub(r"\\hat\s*\{?(\w)\}?", "\\1\u0302", s)
    s = re.sub(r"\\(textstyle|displaystyle|left|right|big|Big|bigl|bigr)\b", "", s)
    s = re.sub(r"\\(quad|qquad)\b", "  ", s)
    s = s.replace(r"\,", " ").replace(r"\ ", " ").replace(r"\;", " ").replace(r"\!", "")
    for cmd in sorted(_SYMBOLS, key=len, reverse=True):
        s = re.sub(re.escape(cmd) + r"(?![A-Za-z])", _SYMBOLS[cmd], s)
    s = re.sub(r"\^\{?([0-9+-]+)\}?", lambda m: m.group(1).translate(_SUPER), s)
    s = re.sub(r"\\([A-Za-z]+)", r"\1", s)
    s = s.replace("{", "").replace("}", "")
    s = re.sub(r"\s+", " ", s).strip()
    return re.sub(r"\s+([,;])", r"\1", s)


def _cases(body: str) -> str:
    rows = [r.strip() for r in body.split(r"\\") if r.strip()]
    parts = []
    for r in rows:
        expr, _, cond = r.partition("&")
        cond = re.sub(r"\\(?:text|mathrm)\{([^{}]*)\}", r"\1", cond).strip()
        if not cond:
            parts.append(expr.strip())
        elif cond in ("otherwise", "else"):
            parts.append(f"{expr.strip()} otherwise")
        else:
            parts.append(f"{expr.strip()} if {cond}")
    return "; ".join(parts)


# --- the click application -----------------------------------------------------------------


def build():
    """The click group (imports click and rich)."""
    import click
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    import losskit as lk
    from losskit._spec import kind_words

    def console() -> Console:
        return Console(highlight=False)

    def get_loss(name: str):
        if name in lk.registry:
            return lk.registry[name]
        close = suggest(name, lk.registry)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise click.BadParameter(f"unknown loss {name!r}.{hint} Run `losskit list` to see all losses.", param_hint="NAME")

    def plot_option(ctx, param, value):
        if value is None:
            return None
        try:
            return plot_path(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc), ctx=ctx, param=param) from None

    def nonempty(ctx, param, value):
        if value == "":
            raise click.BadParameter("an empty path; give a folder name.", ctx=ctx, param=param)
        return value

    def need_matplotlib(what: str):
        if importlib.util.find_spec("matplotlib") is None:
            raise click.ClickException(f"{what} needs matplotlib: {EXTRA_HINT}")

    @click.group(context_settings={"help_option_names": ["-h", "--help"]})
    @click.version_option(lk.__version__, prog_name="losskit")
    def app():
        """losskit: loss functions with closed-form gradients and Hessians for NumPy, PyTorch
        and JAX.

        \b
        losskit list                 every registered loss
        losskit show huber --plot huber.png
        losskit demo --out losskit-demo   train small models, write report.html
        """

    @app.command("list")
    @click.option("--family", help="Only losses of this family (e.g. regression).")
    @click.option("--latex", is_flag=True, help="Show formulas as LaTeX source.")
    def list_cmd(family, latex):
        """List every registered loss: name, family, formula, domain, backends."""
        losses = [l for l in lk.registry.values() if family is None or l.spec.family == family]
        if not losses:
            families = sorted({l.spec.family for l in lk.registry.values()})
            raise click.BadParameter(f"no loss of family {family!r}; families: {', '.join(families)}.", param_hint="--family")
        have = installed_backends()
        backends = " ".join(b if have[b] else f"[dim]{b}*[/dim]" for b in BACKENDS)
        c = console()
        wide = c.width >= 140
        table = Table(title=f"losskit {lk.__version__}: {len(losses)} losses", show_lines=True)
        if wide:
            table.add_column("name", style="bold cyan", no_wrap=True)
            table.add_column("family", no_wrap=True)
            table.add_column("formula (per sample)", ratio=3)
            table.add_column("domain", ratio=2)
            table.add_column("backends", ratio=1)
        else:  # narrow terminal: name / family / backends stacked, formula over domain
            table.add_column("name · family · backends", no_wrap=True)
            table.add_column("formula (per sample) · domain")
        for loss in sorted(losses, key=lambda l: (l.spec.family, l.spec.name)):
            s = loss.spec
            formula = escape(s.formula if latex else latex_to_text(s.formula))
            if wide:
                table.add_row(s.name, s.family, formula, escape(s.domain), backends)
            else:
                table.add_row(
                    f"[bold cyan]{s.name}[/bold cyan]\n{s.family}\n[dim]{backends.replace(' array', chr(10) + 'array')}[/dim]",
                    f"{formula}\n[dim]{escape(s.domain)}[/dim]",
                )
        c.print(table)
        missing = [b for b in BACKENDS if not have[b]]
        note = "Every loss runs on NumPy, PyTorch, JAX and any array-API library."
        if missing:
            note += f" * not installed here: {', '.join(missing)}."
        c.print(f"[dim]{note} Details: losskit show NAME[/dim]")

    @app.command()
    @click.argument("name")
    @click.option("--plot", "plot", type=click.Path(dir_okay=False), callback=plot_option,
                  help="Write a figure of value, gradient and Hessian: FILE.png, .svg or .pdf (no suffix: .png).")
    @click.option("--latex", is_flag=True, help="Show formulas as LaTeX source.")
    def show(name, plot, latex):
        """Formula, gradient, Hessian, options, when to use it and reference of one loss."""
        loss = get_loss(name)
        s = loss.spec
        fmt = (lambda t: t) if latex else latex_to_text
        c = console()
        c.rule(f"[bold cyan]{s.name}[/bold cyan]  [dim]({s.family}, {kind_words(s)})[/dim]")
        table = Table(show_header=False, box=None, pad_edge=False)
        table.add_column(style="bold", no_wrap=True)
        table.add_column(overflow="fold")
        sig = f"lk.{s.name}({', '.join(s.positional)}, *, weight=None, mask=None, reduction='mean', normalizer=None"
        sig += "".join(f", {k}={v!r}" for k, v in s.options.items()) + ")"
        rows = [
            ("call", sig),
            ("formula", fmt(s.formula)),
            ("gradient", fmt(s.gradient)),
            ("Hessian", fmt(s.hessian)),
            ("domain", s.domain),
            ("options", ", ".join(f"{k}={v!r}" for k, v in s.options.items()) or "(only the common ones)"),
            ("use when", s.use_when),
            ("reference", s.reference),
        ]
        for key, value in rows:
            table.add_row(key, escape(value))
        c.print(table)
        if loss.__doc__:
            c.rule("[dim]docstring[/dim]")
            c.print(textwrap.dedent(loss.__doc__).strip(), markup=False, soft_wrap=True)
        if plot:
            need_matplotlib("--plot")
            from losskit.demo._lossplot import plot_loss

            try:
                plot_loss(loss, plot)
            except OSError as exc:
                raise click.ClickException(f"cannot write {plot!r} (--plot): {exc.strerror or exc}.") from None
            # ValueError, TypeError: a loss the generic plot ranges do not fit; RuntimeError:
            # matplotlib's environment (e.g. text.usetex set in a matplotlibrc without LaTeX).
            except (ValueError, TypeError, RuntimeError) as exc:
                raise click.ClickException(f"cannot plot {s.name}: {exc}") from None
            c.print(f"wrote {escape(plot)}")

    @app.command()
    @click.option("--out", "out", default="losskit-demo", show_default=True, type=click.Path(file_okay=False),
                  callback=nonempty, help="Folder for report.html and results.json (created if missing).")
    # NumPy's SeedSequence takes any non-negative integer, however large, and rejects negative ones.
    @click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0),
                  help="Random seed, a non-negative integer (the run is deterministic).")
    @click.option("--quick", is_flag=True, help="Small settings (a few seconds; used by CI).")
    @click.option("--quiet", "-q", is_flag=True, help="No progress display.")
    def demo(out, seed, quick, quiet):
        """Train small models with plain NumPy and losskit's closed-form gradients; write a report.

        (1) linear and MLP regression on data with outliers with mse, mae and huber;
        (2) binary classification with binary_cross_entropy; (3) multi-class cross_entropy
        with and without label smoothing (accuracy, ECE); (4) distillation with kl_divergence.
        """
        need_matplotlib("losskit demo")
        from losskit.demo._run import DemoOutputError, check_writable, run_demo

        try:
            check_writable(out)
        except DemoOutputError as exc:
            raise click.ClickException(str(exc)) from None
        c = console()
        try:
            if quiet:
                res = run_demo(out, seed=seed, quick=quick)
            else:
                with _RichProgress(c) as progress:
                    res = run_demo(out, seed=seed, quick=quick, progress=progress)
        except DemoOutputError as exc:
            raise click.ClickException(str(exc)) from None
        except OSError as exc:
            raise click.ClickException(f"cannot write the report to {out!r} (--out): {exc.strerror or exc}.") from None
        table = Table(title=f"losskit demo (seed {seed}{', quick' if quick else ''}): measured in this run", show_lines=False)
        for col, ratio in (("experiment", 2), ("model", 2), ("loss", 3), ("result", 4)):
            table.add_column(col, ratio=ratio)
        for row in res.summary["rows"]:
            table.add_row(*map(escape, row))
        c.print(table)
        for line in res.summary["findings"]:
            c.print(f"• {escape(line)}")
        c.print(f"\n[bold]report:[/bold] {escape(str(res.report))}  [dim](results.json next to it; {res.seconds:.1f} s)[/dim]")

    return app


class _RichProgress:
    """The demo's progress protocol on a rich progress display."""

    def __init__(self, console):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(
            TextColumn("{task.description}", style="cyan"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[text]}"),
            TimeElapsedColumn(),
            console=console,
        )
        self.tasks = {}

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        return self.progress.__exit__(*exc)

    def start(self, key, description, total):
        self.tasks[key] = self.progress.add_task(description, total=total, text="")

    def update(self, key, completed, text=""):
        self.progress.update(self.tasks[key], completed=completed, text=text)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
