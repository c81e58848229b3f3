"""Sphinx configuration for falcon_sc (builds offline: no intersphinx, notebooks are not executed)."""

from __future__ import annotations

import importlib.util
import re
import sys
import warnings
from datetime import date
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent))

project = "falcon_sc"
author = "falcon_sc developers"
copyright = f"{date.today().year}, {author}"
# the version is written once, in falcon_sc/__init__.py (pyproject.toml reads it from there too)
release = re.search(r'^__version__ = "([^"]+)"', (HERE.parent / "falcon_sc" / "_version.py").read_text(), re.M).group(1)
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx_autodoc_typehints",  # after napoleon: types from the signatures into the numpydoc parameter lists
]

# Markdown pages. With myst-nb (the `docs` extra) the tutorial notebook is rendered with the outputs stored in it
# (never executed); with only myst-parser the tutorial page is a stub that points to the notebook file.
NOTEBOOKS = tuple(sorted(p.stem for p in (HERE.parent / "tutorials").glob("*.ipynb")))  # docs/tutorials.md lists them
try:
    import myst_nb  # noqa: F401

    extensions.append("myst_nb")
    HAVE_MYST_NB = True
except ImportError:  # pragma: no cover - depends on the docs environment
    extensions.append("myst_parser")
    source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
    HAVE_MYST_NB = False


def _stage_notebooks() -> None:
    """Copy the tutorials into docs/notebooks/ (git-ignored) so Sphinx sees them inside its source tree."""
    import shutil

    dest = HERE / "notebooks"
    dest.mkdir(exist_ok=True)
    for name in NOTEBOOKS:
        src = HERE.parent / "tutorials" / f"{name}.ipynb"
        for stale in (dest / f"{name}.ipynb", dest / f"{name}.md"):
            stale.unlink(missing_ok=True)
        if HAVE_MYST_NB and src.exists():
            shutil.copyfile(src, dest / f"{name}.ipynb")
        else:
            (dest / f"{name}.md").write_text(
                f"# Tutorial: `{name}`\n\nThis build renders no notebooks (install `myst-nb`, see the `docs` extra). "
                f"Open `tutorials/{name}.ipynb` in the repository with Jupyter instead.\n"
            )


_stage_notebooks()

myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_heading_anchors = 3
nb_execution_mode = "off"  # never execute notebooks during the docs build
nb_merge_streams = True

templates_path = ["_templates"]
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "**.ipynb_checkpoints", "requirements.txt"]

# autodoc / autosummary / napoleon (numpy style docstrings)
autosummary_generate = True
autosummary_imported_members = True
autodoc_member_order = "bysource"
# types come from the signatures only (sphinx-autodoc-typehints); docstrings explain meaning
typehints_fully_qualified = False
always_document_param_types = False
# no separate return-type field: several Returns sections are prose with a definition list (what is written where),
# which an inserted :rtype: line would break; the return type is in the signature
typehints_document_rtype = False
typehints_defaults = None  # defaults stay in the signature
# sphinx-autodoc-typehints (3.6.1, the latest) still calls the `Parser.set_application` that Sphinx 9 deprecated, once
# per rendered type: ~80 identical RemovedInSphinx10Warning lines (tox-dev/sphinx-autodoc-typehints#588). Only that
# one message is ignored; any other deprecation still shows.
warnings.filterwarnings("ignore", message=r".*_RstSnippetParser\.set_application' is deprecated")
autodoc_default_options = {"members": True, "show-inheritance": False}
autodoc_mock_imports: list[str] = []
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = True
napoleon_use_param = True
napoleon_preprocess_types = False
napoleon_use_ivar = True

# no intersphinx: the build must work offline. Cross-references to other projects' objects stay plain text.
nitpicky = False
suppress_warnings = ["myst.header"]

html_theme = "furo" if importlib.util.find_spec("furo") else "alabaster"
html_title = f"falcon_sc {release}"
html_static_path: list[str] = []
