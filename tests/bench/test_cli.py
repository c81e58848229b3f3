"""Exit statuses and messages of ``python -m falcon_sc.bench`` for mistyped names and failing runs."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from anndata import AnnData

from falcon_sc.baselines import BaselineResult
from falcon_sc.bench import DATASETS, METHODS
from falcon_sc.bench.__main__ import main
from falcon_sc.bench._datasets import DatasetSpec

from ..test_baselines import nested_blobs


@pytest.fixture(scope="module")
def toy() -> AnnData:
    return nested_blobs(seed=5)


@pytest.fixture
def registered(toy, monkeypatch):
    """A ``toy`` dataset, a dataset whose loading fails, a method that fails and one that works."""

    def broken(adata, coarse_key, n_fine, *, batch_key, seed):
        raise RuntimeError("boom")

    def constant(adata, coarse_key, n_fine, *, batch_key, seed):
        coarse = adata.obs[coarse_key].astype(str).to_numpy()
        return BaselineResult(labels=np.char.add(coarse.astype(str), "/0"), relation={f"{c}/0": c for c in set(coarse)})

    def unreadable() -> AnnData:
        raise OSError("disk gone")

    monkeypatch.setitem(DATASETS, "toy", DatasetSpec(name="toy", loader=lambda: toy))
    monkeypatch.setitem(DATASETS, "unreadable", DatasetSpec(name="unreadable", loader=unreadable))
    monkeypatch.setitem(METHODS, "broken", broken)
    monkeypatch.setitem(METHODS, "constant", constant)


def _run(tmp_path, dataset: str, methods: str, *extra: str) -> int:
    out = tmp_path / "out"
    argv = ["run", "--dataset", dataset, "--methods", methods, "--seeds", "2", "--out", str(out), "--no-plots"]
    return main([*argv, "--quiet", *extra])


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("falcon-bench: error: ")
    return err[0]


@pytest.mark.parametrize(
    ("dataset", "methods", "named"),
    [
        ("pbmc68kk", "kmeans_within", "unknown dataset 'pbmc68kk'"),
        ("sim_rare,nope", "kmeans_within", "unknown dataset 'nope'"),
        ("sim_rare", "kmeans_withn", "unknown method 'kmeans_withn'"),
        ("sim_rare", "kmeans_within,falcn", "unknown method 'falcn'"),
        ("missing.h5ad", "kmeans_within", "missing.h5ad' does not exist"),
        ("sim_rare@x", "kmeans_within", "seed after '@'"),
        (",", "kmeans_within", "names no dataset"),
        ("sim_rare", " , ", "names no method"),
    ],
    ids=[
        "dataset",
        "dataset-in-list",
        "method",
        "method-in-list",
        "missing-file",
        "bad-seed",
        "no-dataset",
        "no-method",
    ],
)
def test_mistyped_name_is_one_line_and_status_2(tmp_path, capsys, dataset, methods, named):
    assert _run(tmp_path, dataset, methods) == 2
    line = _one_error_line(capsys)
    assert named in line
    assert not (tmp_path / "out").exists()  # nothing was run or written


def test_scale_mistyped_method(capsys):
    assert main(["scale", "--n-cells", "600", "--methods", "leidn_scanpy"]) == 2
    assert "unknown scale method(s) ['leidn_scanpy']" in _one_error_line(capsys)


def test_every_run_failed_exits_1(tmp_path, capsys, registered):
    assert _run(tmp_path, "toy", "broken") == 1
    err = capsys.readouterr().err
    assert err.count("FAILED toy / broken") == 2 and "every run failed (2 of 2)" in err
    assert (tmp_path / "out" / "runs.csv").exists()  # the report is still written


def test_every_dataset_failed_to_load_exits_1(tmp_path, capsys, registered):
    assert _run(tmp_path, "unreadable", "constant") == 1
    assert "loading dataset failed: OSError: disk gone" in capsys.readouterr().err


def test_some_runs_failed_exits_0(tmp_path, capsys, registered):
    assert _run(tmp_path, "toy,unreadable", "constant,broken") == 0
    err = capsys.readouterr().err
    assert "FAILED toy / broken" in err and "every run failed" not in err


def test_module_entry_point_without_traceback(tmp_path):
    cmd = [sys.executable, "-m", "falcon_sc.bench", "run", "--dataset", "nope", "--out", str(tmp_path / "o")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        next(
            line for line in proc.stderr.splitlines() if line.startswith("falcon-bench: error: unknown dataset 'nope'")
        )
    ]


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--split", "bogus"], "split='bogus' must be one of 'train', 'val', 'test', 'all'"),
        (["--split", "test"], "digits has no test split"),
        (["--dataset", "cifar100", "--root", ".", "--split", "bogus"], "split='bogus'"),
    ],
    ids=["unknown-split", "digits-has-no-test-split", "unknown-split-cifar"],
)
def test_images_bad_split_is_a_usage_error(capsys, argv, named):
    """Issue 17: ``falcon-bench images --split bogus`` ran the digits and exited 0."""
    assert main(["images", "--seeds", "1", *argv]) == 2
    assert named in _one_error_line(capsys)


def test_images_bad_split_exits_non_zero_from_the_shell():
    cmd = [sys.executable, "-m", "falcon_sc.bench", "images", "--split", "bogus"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "falcon-bench: error: split='bogus'" in proc.stderr


def test_library_split_check_runs_before_loading(monkeypatch):
    from falcon_sc import datasets
    from falcon_sc.bench.images import load_image_dataset, run_image_bench

    def never(*args, **kwargs):
        raise AssertionError("the dataset was loaded before the split was checked")

    monkeypatch.setattr(datasets, "digits", never)
    with pytest.raises(ValueError, match="split='val'"):
        run_image_bench("digits", split="val")
    with pytest.raises(ValueError, match="split=None"):
        load_image_dataset("digits", split=None)  # type: ignore[arg-type]
