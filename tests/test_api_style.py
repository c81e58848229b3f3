"""One API style, scanpy's, for every public function of ``falcon_sc.tl`` and ``falcon_sc.pl`` (by signature).

- ``adata`` first, positional; then the main inputs, positional-or-keyword (``key``, the results' key, default
  ``"falcon"``; the columns or values the call is about: ``coarse_key``, ``n_fine``, ``true_key``, ``mapping``);
  everything else keyword-only.
- ``tl`` functions that write annotations take ``copy=False`` (return ``None``, or the modified copy); those whose
  result is a table return it and take ``inplace`` (also write it into ``adata``); never both.
- ``pl`` functions take ``ax``, ``show`` and ``save`` keyword-only; ``save=True`` or a ``str`` writes under scanpy's
  ``settings.figdir`` as ``{plot name}{save}``, as ``sc.pl.*`` do.

A new public function that breaks the scheme fails here.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pytest
import scanpy as sc

import falcon_sc as fal

P = inspect.Parameter
#: the main inputs that may follow ``adata`` as positional-or-keyword parameters
MAIN_INPUTS = {"key", "coarse_key", "true_key", "n_fine", "mapping"}
FUNCTIONS = [(f"{mod.__name__}.{name}", getattr(mod, name)) for mod in (fal.tl, fal.pl) for name in mod.__all__]


def _params(fn: Callable) -> list[P]:
    return list(inspect.signature(fn).parameters.values())


@pytest.mark.parametrize(("name", "fn"), FUNCTIONS, ids=[n for n, _ in FUNCTIONS])
def test_adata_then_main_inputs_then_keyword_only(name, fn):
    params = _params(fn)
    assert params[0].name == "adata" and params[0].kind is P.POSITIONAL_OR_KEYWORD, name
    assert params[0].default is P.empty, f"{name}: adata has no default"
    positional = [p for p in params[1:] if p.kind is P.POSITIONAL_OR_KEYWORD]
    assert positional, f"{name}: the main key (or input) follows adata, positional-or-keyword"
    assert {p.name for p in positional} <= MAIN_INPUTS, f"{name}: only main inputs are positional: {positional}"
    assert len(positional) <= 2, f"{name}: at most two main inputs after adata"
    rest = params[1 + len(positional) :]
    assert all(p.kind in (P.KEYWORD_ONLY, P.VAR_KEYWORD) for p in rest), f"{name}: the rest is keyword-only"
    assert not any(p.kind in (P.POSITIONAL_ONLY, P.VAR_POSITIONAL) for p in params), name


@pytest.mark.parametrize(("name", "fn"), FUNCTIONS, ids=[n for n, _ in FUNCTIONS])
def test_key_means_the_results_key(name, fn):
    by_name = {p.name: p for p in _params(fn)}
    if "key" in by_name:
        key = by_name["key"]
        assert key.kind is P.POSITIONAL_OR_KEYWORD and key.default == "falcon", name
    else:  # the functions that compute results name where they write them
        assert "key_added" in by_name and by_name["key_added"].default == "falcon", name


@pytest.mark.parametrize(("name", "fn"), [f for f in FUNCTIONS if f[0].startswith("falcon_sc.tl.")])
def test_tools_copy_or_inplace(name, fn):
    by_name = {p.name: p for p in _params(fn)}
    returns = str(inspect.signature(fn).return_annotation)
    if "DataFrame" in returns:  # a table: returned, and written into adata with inplace
        assert "inplace" in by_name and "copy" not in by_name, name
        assert by_name["inplace"].kind is P.KEYWORD_ONLY, name
    else:  # annotations written into adata: copy=False returns None, copy=True the modified copy
        assert "copy" in by_name and "inplace" not in by_name, name
        assert by_name["copy"].default is False and by_name["copy"].kind is P.KEYWORD_ONLY, name
        assert "AnnData" in returns and "None" in returns, name


@pytest.mark.parametrize(("name", "fn"), [f for f in FUNCTIONS if f[0].startswith("falcon_sc.pl.")])
def test_plots_ax_show_save(name, fn):
    by_name = {p.name: p for p in _params(fn)}
    for option in ("show", "save"):
        assert by_name[option].kind is P.KEYWORD_ONLY and by_name[option].default is None, (name, option)
    assert "bool" in str(by_name["save"].annotation) and "str" in str(by_name["save"].annotation), name
    if "ax" in by_name:
        assert by_name["ax"].kind is P.KEYWORD_ONLY and by_name["ax"].default is None, name
    assert "settings.figdir" in (fn.__doc__ or ""), f"{name}: the docstring says where save= writes"


def test_save_writes_under_scanpys_figdir(tmp_path):
    from tests.pl.test_render import synthetic

    adata = synthetic(2)
    figdir = sc.settings.figdir
    sc.settings.figdir = tmp_path / "figures"
    try:
        fal.pl.history(adata, show=False, save="_run1.pdf")
        fal.pl.relations(adata, show=False, save=True)
        fal.pl.confusion(adata, "fine", show=False, save=tmp_path / "exact")  # a Path: written as given
    finally:
        sc.settings.figdir = figdir
        plt.close("all")
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    suffix = f"{sc.settings.plot_suffix}.{sc.settings.file_format_figs}"
    assert written == sorted(
        ["exact.png", f"figures/history_run1{sc.settings.plot_suffix}.pdf", f"figures/relations{suffix}"]
    )


def test_old_keyword_calls_still_work():
    from tests.pl.test_render import synthetic

    adata = synthetic(2)
    fal.pl.history(adata, key="falcon", show=False)  # keyword-only before, positional-or-keyword now
    fal.pl.relations(adata, key="falcon", show=False)
    fal.pl.confusion(adata, "fine", key="falcon", show=False)
    plt.close("all")
    table = fal.tl.coarse_conflicts(adata, store=True)  # older name of inplace
    assert adata.uns["falcon"]["conflicts"].equals(table)
    renamed = fal.tl.rename(adata, {"myeloid/1": "mono"}, key="falcon", copy=True)
    assert "mono" in renamed.obs["falcon"].cat.categories and "mono" not in adata.obs["falcon"].cat.categories
    assert fal.tl.rename(adata, {"myeloid/1": "mono"}) is None and "mono" in adata.obs["falcon"].cat.categories
