"""What refine tells its user: one info line per phase with its time, the count estimate as a table, the keys added."""

from __future__ import annotations

import re

import falcon_sc as fal
from falcon_sc.core.progress import bar, phase, progress_shown

from ..conftest import scanpy_log

PHASES = (
    "input checked: 300 cells x 200 genes, on cpu",
    "preprocessed: ",
    "neighbours searched: 20 per cell inside 3 coarse classes, on cpu",
    "number of fine classes estimated: ",
    "warm start (leiden): children C0=",
    "trained: 3 epochs, ",
    "fine labels chosen",
    "coarse labels checked against neighbours: ",
)


def test_refine_logs_each_phase_once_with_its_time_and_the_estimate_table():
    adata = fal.datasets.simulate(n_cells=300, n_genes=200, children=(1, 2, 3), random_state=0)
    with scanpy_log(verbosity=2) as log:
        fal.tl.refine(adata, "coarse", n_fine="auto", n_epochs=3, show_progress=False)
    text = log.getvalue()
    lines = text.splitlines()
    starts = []
    for name in PHASES:
        found = [i for i, line in enumerate(lines) if line.startswith(f"    {name}")]
        assert len(found) == 1, (name, text)
        assert re.search(r"\(\d+:\d\d:\d\d\)$", lines[found[0]]), lines[found[0]]  # its time, scanpy's format
        starts.append(found[0])
    assert starts == sorted(starts)  # in the order they run
    # the estimate: a table of cells, estimated and used per coarse class, then how to override it
    table = lines[starts[3] + 1 : starts[3] + 5]
    assert table[0].split() == ["cells", "estimated", "used"]
    assert [row.split()[0] for row in table[1:]] == ["C0", "C1", "C2"]
    assert all(int(row.split()[2]) == int(row.split()[3]) for row in table[1:])  # nothing given: used = estimated
    assert "pass a mapping, e.g. n_fine={'C0': " in lines[starts[3] + 5]
    assert "falcon_sc.pl.n_fine(adata)" in lines[starts[3] + 5]


def test_refine_lists_every_key_it_added():
    adata = fal.datasets.simulate(n_cells=300, n_genes=200, children=(1, 2, 3), random_state=0)
    with scanpy_log(verbosity=3) as log:  # scanpy shows the `added` detail from "hint" on
        fal.tl.refine(adata, "coarse", n_fine=6, n_epochs=2, show_progress=False, key_added="sub")
    text = log.getvalue()
    for key in ("obs['sub']", "obs['sub_confidence']", "obs['sub_warm_start']", "obsm['sub_probs']",
                "obsm['sub_embedding']", "uns['sub']"):  # fmt: skip
        assert f"    '{key}'" in text, text


def test_phase_bars_follow_show_progress(capsys):
    with progress_shown(False):
        assert bar(range(3), "hidden").disable
        with progress_shown(True):
            assert not bar(range(3), "shown").disable
        assert bar(range(3), "hidden again").disable
    assert not bar(range(3), "default").disable
    with scanpy_log(verbosity=2) as log:
        try:
            with phase("never finished"):
                raise RuntimeError("stop")
        except RuntimeError:
            pass
        with phase("done") as found:
            found += ["a", "b"]
    assert log.getvalue().splitlines() == ["    done: a; b (0:00:00)"]
