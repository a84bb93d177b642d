"""Sphinx configuration. Build (warnings are errors):

    python -m sphinx -W --keep-going -b html docs docs/_build/html
"""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))

import losskit  # noqa: E402

project = "losskit"
author = "losskit developers"
copyright = "losskit developers"
release = version = losskit.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.mathjax",
    "sphinx-mathjax-offline",  # ships MathJax with the site: formulas render without a network
    "losskit_pages",  # docs/_ext/losskit_pages.py: one page per loss family from the registry
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "_generated/*.rst", "README.md", ".gitignore"]
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3
default_role = "code"
pygments_style = "sphinx"
suppress_warnings = []

html_theme = "furo"
html_title = f"losskit {version}"
html_static_path = []
