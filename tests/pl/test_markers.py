"""``fal.pl.fine_markers``: one dot plot per coarse class, titled with it, the stored markers in columns."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pytest
from matplotlib.figure import Figure

import falcon_sc as fal

from ..tl.test_markers import FINE, known


@pytest.fixture(scope="module")
def adata():
    data = known()
    fal.tl.fine_markers(data, n_genes=10)
    return data


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _titles(fig: Figure) -> list[str]:
    return [ax.get_title() for ax in fig.axes if ":" in ax.get_title()]  # not the legends' titles


def _main_axes(fig: Figure) -> list:
    """The dot panels: axes whose y tick labels are the rows."""
    return [ax for ax in fig.axes if ax.get_yticklabels() and ax.get_xticklabels() and ax.collections]


def test_one_panel_per_coarse_class(adata, tmp_path):
    before = (list(adata.uns), adata.obs.copy(), adata.X.copy())
    fig = fal.pl.fine_markers(adata, n_genes=3, show=False, save=tmp_path / "markers")
    assert isinstance(fig, Figure)
    assert (tmp_path / "markers.png").stat().st_size > 0
    titles = _titles(fig)
    assert len(titles) == 2 and titles[0].startswith("A:") and titles[1].startswith("B:")
    assert all("siblings" in t for t in titles)
    panels = _main_axes(fig)
    genes = [[t.get_text() for t in ax.get_xticklabels()] for ax in panels]
    rows = [[t.get_text() for t in ax.get_yticklabels()] for ax in panels]
    table = adata.uns["falcon_markers"]["markers"]
    expected = {g: list(df["names"][:3]) for g, df in table.groupby("group", sort=False)}
    assert genes == [sum((expected[f] for f in ("A/1", "A/2", "A/3")), []), expected["B/1"] + expected["B/2"]]
    assert rows == [["A/1", "A/2", "A/3"], ["B/1", "B/2"]]
    assert list(adata.uns) == before[0] and adata.obs.equals(before[1]) and (adata.X != before[2]).nnz == 0


def test_choose_coarse_and_single_child_against_other_coarse(tmp_path):
    data = known()
    fal.tl.fine_markers(data, n_genes=4, single_child="rest", key_added="mk")
    fig = fal.pl.fine_markers(data, coarse="S", markers_key="mk", show=False, save=tmp_path / "s.png")
    assert _titles(fig) == ["S: markers against the other coarse classes"]
    (panel,) = _main_axes(fig)
    assert [t.get_text() for t in panel.get_yticklabels()] == ["S/1", "A", "B"]
    assert [t.get_text() for t in panel.get_xticklabels()][0] == "co_S"
    fig = fal.pl.fine_markers(data, coarse=["B", "A"], markers_key="mk", show=False)
    assert [t.split(":")[0] for t in _titles(fig)] == ["B", "A"]


def test_errors(adata):
    fresh = known()
    with pytest.raises(KeyError, match="fal.tl.fine_markers"):
        fal.pl.fine_markers(fresh, show=False)
    with pytest.raises(KeyError, match="fal.tl.refine"):
        fal.pl.fine_markers(fresh, key="other", show=False)
    with pytest.raises(KeyError, match="without markers.*'S'"):
        fal.pl.fine_markers(adata, coarse="S", show=False)
    with pytest.raises(ValueError, match="n_genes"):
        fal.pl.fine_markers(adata, n_genes=0, show=False)
    assert set(FINE) >= set(adata.uns["falcon_markers"]["markers"]["group"])
