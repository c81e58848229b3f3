"""Transitional: the names other modules still import from here (``pp`` is split by job).

Import ``INPUT_KINDS`` and ``check_values`` from :mod:`falcon_sc.pp`, ``check_input_kind`` from
``falcon_sc.pp._checks`` and ``resolve_input_kind`` from ``falcon_sc.pp._input_kind``; this file is deleted once
nothing imports it.
"""

from __future__ import annotations

from ._checks import INPUT_KINDS, check_input_kind, check_values
from ._input_kind import resolve_input_kind

__all__ = ["INPUT_KINDS", "check_input_kind", "check_values", "resolve_input_kind"]
