"""The ``Examples`` sections of the docstrings run and print what they say (one test per module of ``falcon_sc``).

Run one module's examples with ``pytest tests/test_docstring_examples.py -k falcon_sc.metrics``, or all of them
outside the suite with ``python -m pytest --doctest-modules falcon_sc -o addopts=""``.
"""

from __future__ import annotations

import doctest
import importlib
import io
import pkgutil

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

import falcon_sc  # noqa: E402

OPTIONFLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _modules_with_examples() -> list[str]:
    """Modules of the package whose docstrings hold at least one example (``__main__`` modules are not imported)."""
    names = []
    for info in pkgutil.walk_packages(falcon_sc.__path__, prefix="falcon_sc."):
        if info.name.rsplit(".", 1)[-1] == "__main__":
            continue
        module = importlib.import_module(info.name)
        if any(test.examples for test in doctest.DocTestFinder().find(module)):
            names.append(info.name)
    return sorted(names)


MODULES = _modules_with_examples()


def test_modules_are_found():
    assert {"falcon_sc.metrics", "falcon_sc.models._falcon", "falcon_sc.tl._refine"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # anything an example writes lands in a temporary folder
    module = importlib.import_module(name)
    runner = doctest.DocTestRunner(optionflags=OPTIONFLAGS)
    report = io.StringIO()
    try:
        for test in doctest.DocTestFinder().find(module):
            runner.run(test, out=report.write)
    finally:
        plt.close("all")
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}:\n{report.getvalue()}"
