"""What a run tells its user while it works: one scanpy-style line per phase, with its time, and progress bars.

Both follow scanpy's conventions: the lines are ``logg.info`` (shown from ``sc.settings.verbosity = "info"``), the
bars are tqdm bars that appear only once a phase has taken :data:`BAR_DELAY` seconds, so short runs stay quiet.
:func:`progress_shown` turns the bars of every phase off (``show_progress=False`` of ``refine``), as for training.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime, timezone
from typing import TypeVar

from scanpy import logging as logg
from tqdm import tqdm

T = TypeVar("T")

BAR_DELAY = 2.0
"""Seconds a phase runs before its bar appears (the training bar waits as long)."""

_SHOW = ContextVar("falcon_show_progress", default=True)


@contextmanager
def progress_shown(show: bool) -> Iterator[None]:
    """Show (or hide) the bars of every phase inside the block; the previous setting is restored after it."""
    token = _SHOW.set(bool(show))
    try:
        yield
    finally:
        _SHOW.reset(token)


def bar(items: Iterable[T], desc: str, total: int | None = None) -> Iterable[T]:
    """``items`` with a tqdm bar named ``desc``, shown after :data:`BAR_DELAY` seconds unless bars are hidden."""
    return tqdm(items, desc=desc, total=total, disable=not _SHOW.get(), leave=False, delay=BAR_DELAY)


@contextmanager
def phase(name: str) -> Iterator[list[str]]:
    """Log ``name``, what the phase found and its time in one line when the block ends.

    The block appends short findings to the list it is given (``"2,000 genes"``); they follow the name after a
    colon. Nothing is logged when the block raises.

    Examples
    --------
    >>> with phase("neighbours") as found:
    ...     found.append("20 per cell")
    """
    start = datetime.now(timezone.utc)
    found: list[str] = []
    yield found
    logg.info(f"    {name}" + (f": {'; '.join(found)}" if found else ""), time=start)
