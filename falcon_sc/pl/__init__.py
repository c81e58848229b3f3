"""Plotting: scanpy-style figures of FALCON results (``falcon_sc.pl``)."""

from ._conflicts import coarse_conflicts
from ._confusion import confusion
from ._embedding import embedding
from ._history import history
from ._markers import fine_markers
from ._n_fine import n_fine
from ._relations import relations

__all__ = ["coarse_conflicts", "confusion", "embedding", "fine_markers", "history", "n_fine", "relations"]
