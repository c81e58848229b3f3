"""torchrun launch: ``torchrun --standalone --nproc-per-node 2 -m falcon_sc.train`` on 2 CPU processes (gloo).

torchrun is started as ``python -m torch.distributed.run`` (the same program as the ``torchrun`` script) with this
interpreter, so the test does not depend on the script being on PATH; ``--standalone`` picks a free port.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import anndata as ad
import pytest

import falcon_sc as fal
from falcon_sc import train
from falcon_sc.core.launch import TorchrunLaunch, launched_by_torchrun
from falcon_sc.core.relation_log import read_log

from ..conftest import CHILDREN_UNEVEN, simulate

ROOT = Path(__file__).resolve().parents[2]
N_CELLS, BATCH, EPOCHS, EVERY = 600, 64, 5, 5


@pytest.fixture(scope="module")
def cells(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small simulated dataset (3 coarse classes with 1, 2 and 3 fine classes) written as .h5ad."""
    path = tmp_path_factory.mktemp("torchrun") / "cells.h5ad"
    simulate(n_cells=N_CELLS, children=CHILDREN_UNEVEN).write_h5ad(path)
    return path


def torchrun(*args: str | Path, timeout: int = 120) -> subprocess.CompletedProcess:
    """Run ``falcon_sc.train`` on 2 CPU processes under torchrun; the finished process."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    command += ["-m", "falcon_sc.train", *map(str, args), "--accelerator", "cpu"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def training() -> list[str]:
    """Options of a short training run."""
    return ["--n-epochs", str(EPOCHS), "--batch-size", str(BATCH), "--relation-every", str(EVERY)]


def test_distributed_torchrun_ranks_hold_the_same_relation_and_find_the_fine_classes(cells, tmp_path):
    log, out, model_dir = tmp_path / "log", tmp_path / "labelled.h5ad", tmp_path / "model"
    proc = torchrun(cells, "--coarse-key", "coarse", "--n-fine", "6", "--output", out, "--model-dir", model_dir,
                    "--relation-log", log, *training())  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [read_log(log, rank) for rank in (0, 1)]
    steps_per_rank = EPOCHS * -(-(N_CELLS // 2) // BATCH)
    assert len(ranks[0]) == steps_per_rank // EVERY  # one record per solve
    assert ranks[0] == ranks[1]  # same step, children and relation digest on both ranks after every solve
    labelled = ad.read_h5ad(out)
    scores = fal.metrics.evaluate(labelled.obs["fine"], labelled.obs["falcon"], labelled.obs["coarse"])
    assert scores["ari"] > 0.8, scores
    assert labelled.uns["falcon"]["params"]["devices"] == 2
    assert fal.FalconModel.load(model_dir).relations.shape == (6, 3)
    assert proc.stdout.count("labels in obs['falcon']") == 1  # rank 0 alone writes and says so


def test_distributed_torchrun_ranks_agree_while_the_relation_changes(cells, tmp_path):
    """From a random warm start the solves move the relation; both ranks still hold the same one after each solve."""
    log, out = tmp_path / "log", tmp_path / "labelled.h5ad"
    proc = torchrun(cells, "--coarse-key", "coarse", "--n-fine", "6", "--output", out, "--init", "random",
                    "--relation-log", log, *training())  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [read_log(log, rank) for rank in (0, 1)]
    assert ranks[0] and ranks[0] == ranks[1]
    history = ad.read_h5ad(out).uns["falcon"]["history"]
    assert sum(history["relation_changes"]) > 0  # rank 0's record: the solves changed the relation


def test_distributed_torchrun_missing_coarse_key_is_said_once_and_fails(cells, tmp_path):
    out = tmp_path / "labelled.h5ad"
    proc = torchrun(cells, "--coarse-key", "celltype", "--n-fine", "6", "--output", out, *training())
    assert proc.returncode != 0
    assert proc.stderr.count("--coarse-key 'celltype' is not a column of obs") == 1, proc.stderr[-3000:]
    assert "'coarse'" in proc.stderr  # the columns there are named
    assert not out.exists()


def test_missing_input_file_names_the_argument(tmp_path, capsys):
    missing = tmp_path / "none.h5ad"
    status = train.main([str(missing), "--coarse-key", "coarse", "--n-fine", "6", "--output", str(tmp_path / "o.h5ad")])
    assert status == 2
    assert f"input {str(missing)!r}: no such file" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "said"),
    [
        ([], "give --output FILE.h5ad"),
        (["--output", "out.csv"], "--output 'out.csv': name an .h5ad file"),
        (["--output", "no/such/folder/out.h5ad"], "does not exist; create it first"),
    ],
)
def test_bad_outputs_are_refused_before_reading(cells, extra, said, capsys):
    assert train.main([str(cells), "--coarse-key", "coarse", "--n-fine", "6", *extra]) == 2
    assert said in capsys.readouterr().err


def test_output_may_not_be_the_input(cells, capsys):
    assert train.main([str(cells), "--coarse-key", "coarse", "--n-fine", "6", "--output", str(cells)]) == 2
    assert "is the input file" in capsys.readouterr().err


def test_bad_n_fine_is_an_argument_error(cells, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train.main([str(cells), "--coarse-key", "coarse", "--n-fine", "many", "--output", "x.h5ad"])
    assert exit_info.value.code == 2
    assert "neither a number of fine classes nor 'auto'" in capsys.readouterr().err


def test_one_process_without_torchrun_backed(cells, tmp_path, capsys):
    """The same command without torchrun trains on one process; --backed checks obs before reading X."""
    assert not launched_by_torchrun()
    out = tmp_path / "one.h5ad"
    argv = [str(cells), "--coarse-key", "coarse", "--n-fine", "6", "--output", str(out), "--backed"]
    assert train.main([*argv, "--accelerator", "cpu", *training()]) == 0
    labelled = ad.read_h5ad(out)
    assert labelled.obs["falcon"].nunique() == 6 and labelled.uns["falcon"]["params"]["devices"] == 1


def test_launch_outside_torchrun_is_a_clear_error():
    with pytest.raises(RuntimeError, match="not started by torchrun"):
        TorchrunLaunch.from_environment("cpu")
