"""Plotting: scanpy-style figures of FALCON results (``falcon_sc.pl``)."""

from ._confusion import confusion
from ._history import history
from ._markers import fine_markers
from ._relations import relations

__all__ = ["confusion", "fine_markers", "history", "relations"]
