"""Shared docstring fragments (as scanpy's ``_docs``), filled in with :func:`doc_params`."""

from __future__ import annotations

from collections.abc import Callable
from textwrap import dedent
from typing import TypeVar

F = TypeVar("F", bound=Callable)

baseline_inputs = """\
adata
    Cells x genes; counts or log-normalised expression in ``X``.
coarse_key
    Column of ``adata.obs`` with the coarse labels.
n_fine
    Total number of fine classes to find.
batch_key
    Optional column of ``adata.obs`` with batches, passed to the preprocessing."""

neural_options = """\
random_state
    Seed for numpy and torch (initialisation, minibatches, views, folds, k-means); the same seed on CPU gives the
    same labels.
accelerator
    ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``."""

plot_output = """\
figsize
    Size of a new figure.
show
    Show the figure; default: when scanpy's ``autoshow`` is on and the backend is interactive.
save
    Path of a file to save the figure to (``.png`` appended when it has no suffix)."""


def doc_params(**fragments: str) -> Callable[[F], F]:
    """Fill ``{name}`` placeholders of a docstring with fragments, indented like the placeholder's line."""

    def decorate(fn: F) -> F:
        doc = fn.__doc__ or ""
        for name, text in fragments.items():
            for line in doc.splitlines():
                if line.strip() == "{" + name + "}":
                    indent = line[: len(line) - len(line.lstrip())]
                    body = "\n".join(indent + t if t else t for t in dedent(text).splitlines())
                    doc = doc.replace(line, body)
        fn.__doc__ = doc
        return fn

    return decorate
