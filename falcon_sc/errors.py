"""The errors falcon_sc raises on its own account, beside the plain errors of a bad argument.

A bad argument gets a ``ValueError`` / ``TypeError`` / ``KeyError`` naming it. A file or input that falcon_sc
refuses gets one of the errors below: each is a ``ValueError`` too (code that caught ``ValueError`` keeps working)
and a :class:`FalconError`, so one ``except falcon_sc.errors.FalconError`` catches them all. The message names the
file (and the field, line or entry) and says what to do. See the documentation's *Reliability* page.

Examples
--------
A saved model whose settings were edited by hand is refused with one error naming the file and the field:

>>> import json, tempfile
>>> from pathlib import Path
>>> import falcon_sc as fal
>>> adata = fal.datasets.simulate(n_cells=200, n_genes=100, children=(1, 2), random_state=0)
>>> model = fal.FalconModel(adata, "coarse").fit(n_fine=3, n_epochs=2, show_progress=False)
>>> folder = Path(tempfile.mkdtemp()) / "model"
>>> model.save(folder)
>>> settings = json.loads((folder / "model.json").read_text())
>>> settings["hidden"] = [10**12]
>>> _ = (folder / "model.json").write_text(json.dumps(settings))
>>> try:
...     fal.FalconModel.load(folder)
... except fal.errors.SavedModelError as err:
...     print(type(err).__name__, isinstance(err, ValueError), "hidden" in str(err))
SavedModelError True True
"""

from __future__ import annotations

__all__ = ["CheckpointError", "DatasetFileError", "DegenerateInputError", "FalconError", "SavedModelError"]


class FalconError(Exception):
    """Base of the errors below."""


class SavedModelError(FalconError, ValueError):
    """A saved-model folder is incomplete, damaged, edited inconsistently or not a model of this class."""


class CheckpointError(FalconError, ValueError):
    """A training checkpoint cannot be resumed.

    It is damaged, not a falcon_sc checkpoint, or was written for other data or other settings (the message says
    what differs).
    """


class DatasetFileError(FalconError, ValueError):
    """A dataset file on disk is empty, damaged, of another format, or would need code to run to be read."""


class DegenerateInputError(FalconError, ValueError):
    """The input holds nothing to learn from.

    No feature varies, a batch per cell, too few cells for the classes asked for, and the like; detected before
    any training.
    """
