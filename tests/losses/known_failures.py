"""Known bugs that a generic suite exposes, one entry per loss and test:
``KNOWN[loss][test function] = reason`` (every option set) or ``{option-set index: reason}``.
``registry_cases`` marks those cases ``xfail(strict=True)``, so a fix shows up as an unexpected
pass and the entry must go. Keep each reason specific: what is wrong, where (src or the
declaration)."""


_COMPILE = (
    "src bug: torch.compile(fullgraph=True) breaks the graph in the {} autograd.Function's "
    "forward (torch.result_type returns a dtype, which Dynamo cannot put in the graph); the "
    "declaration says checks.compiles=True"
)

KNOWN: dict = {
    # declaration gaps: these losses declare no checks.edges yet (the edge grid skips them)
}
