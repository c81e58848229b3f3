"""``fal.pl.fine_markers``: one dot plot, the fine classes in rows by coarse class, their markers in columns."""

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


def _main(fig: Figure):
    """The dot panel: the axes whose y tick labels are the rows."""
    (ax,) = [ax for ax in fig.axes if ax.get_yticklabels() and ax.get_xticklabels() and ax.collections]
    return ax


def _texts(ax) -> list[str]:
    return [t.get_text() for t in ax]


def test_one_figure_rows_grouped_by_coarse_class(adata, tmp_path):
    before = (list(adata.uns), adata.obs.copy(), adata.X.copy())
    fig = fal.pl.fine_markers(adata, n_genes=3, show=False, save=tmp_path / "markers")
    assert isinstance(fig, Figure)
    assert (tmp_path / "markers.png").stat().st_size > 0
    ax = _main(fig)
    table = adata.uns["falcon_markers"]["markers"]
    expected = {g: list(df["names"][:3]) for g, df in table.groupby("group", sort=False)}
    assert _texts(ax.get_xticklabels()) == sum((expected[f] for f in ("A/1", "A/2", "A/3", "B/1", "B/2")), [])
    rows = _texts(ax.get_yticklabels())
    assert rows[:5] == ["A/1", "A/2", "A/3", "B/1", "B/2"]
    # the single child of S is shown, its label saying why it has no markers
    assert rows[5].startswith("S/1: no markers (only child")
    assert len(ax.lines) == 2  # lines between the coarse groups A | B | S
    # one legend for the whole figure; the colour bar says what the colours are
    texts = [t.get_text() for a in fig.axes for t in a.texts] + [a.get_title() for a in fig.axes]
    assert sum("scaled per gene" in t for t in texts) == 1
    assert list(adata.uns) == before[0] and adata.obs.equals(before[1]) and (adata.X != before[2]).nnz == 0


def test_choose_coarse_and_single_child_against_other_coarse(tmp_path):
    data = known()
    fal.tl.fine_markers(data, n_genes=4, single_child="rest", key_added="mk")
    fig = fal.pl.fine_markers(data, coarse="S", markers_key="mk", show=False, save=tmp_path / "s.png")
    ax = _main(fig)
    assert _texts(ax.get_yticklabels()) == ["S/1 (only child: vs the other coarse classes)"]
    assert _texts(ax.get_xticklabels())[0] == "co_S"
    fig = fal.pl.fine_markers(data, coarse=["B", "A"], markers_key="mk", show=False)
    assert _texts(_main(fig).get_yticklabels()) == ["B/1", "B/2", "A/1", "A/2", "A/3"]


def test_errors(adata):
    fresh = known()
    with pytest.raises(KeyError, match="fal.tl.fine_markers"):
        fal.pl.fine_markers(fresh, show=False)
    with pytest.raises(KeyError, match="fal.tl.refine"):
        fal.pl.fine_markers(fresh, key="other", show=False)
    with pytest.raises(KeyError, match="no marker genes.*'S'"):
        fal.pl.fine_markers(adata, coarse="S", show=False)
    with pytest.raises(KeyError, match="without cells.*'Z'"):
        fal.pl.fine_markers(adata, coarse="Z", show=False)
    with pytest.raises(ValueError, match="n_genes"):
        fal.pl.fine_markers(adata, n_genes=0, show=False)
    assert set(FINE) >= set(adata.uns["falcon_markers"]["markers"]["group"])
