"""Search a clustering resolution that gives a wanted number of clusters."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

T = TypeVar("T")

RESOLUTION_RANGE = (1e-4, 1e3)


@dataclass(frozen=True)
class ResolutionSearch(Generic[T]):
    """Outcome of :func:`search_resolution`.

    Attributes
    ----------
    resolution
        The resolution kept.
    n_clusters
        Its cluster count (differs from the target when no resolution tried reached it).
    result
        What the clustering returned at that resolution.
    n_evals
        Clusterings run.
    """

    resolution: float
    n_clusters: int
    result: T
    n_evals: int


def search_resolution(
    cluster: Callable[[float], tuple[int, T]],
    n_clusters: int,
    *,
    max_evals: int = 30,
    start: float = 1.0,
    ties: Literal["fewer", "more"] = "fewer",
    tol: float = 1.001,
    bounds: tuple[float, float] = RESOLUTION_RANGE,
) -> ResolutionSearch[T]:
    """Resolution whose cluster count is closest to ``n_clusters`` (the count rises with the resolution).

    Doubling/halving from ``start`` until the target is bracketed, then geometric bisection, stopping when the
    count is reached, the bracket is narrower than a factor ``tol``, the resolution leaves ``bounds`` or
    ``max_evals`` clusterings have run.

    Parameters
    ----------
    cluster
        ``cluster(resolution) -> (count, result)``.
    n_clusters
        Wanted count.
    max_evals
        Most calls of ``cluster``.
    start
        First resolution tried.
    ties
        Among resolutions equally far from the target, keep the one with fewer clusters (the smaller
        resolution) or more.
    tol
        Smallest ratio ``hi / lo`` of the bracket worth bisecting.
    bounds
        Resolutions outside this range are not tried.

    Returns
    -------
    The kept resolution, its count and result, and the number of clusterings run.
    """
    if n_clusters < 1:
        raise ValueError(f"n_clusters must be >= 1, got {n_clusters}.")
    if max_evals < 1:
        raise ValueError(f"max_evals must be >= 1, got {max_evals}.")
    sign = 1 if ties == "fewer" else -1
    tried: dict[float, tuple[int, T]] = {}
    lo: float | None = None  # gave fewer clusters than wanted
    hi: float | None = None  # gave more
    res = start
    while True:
        tried[res] = cluster(res)
        count = tried[res][0]
        if count == n_clusters or len(tried) >= max_evals:
            break
        if count < n_clusters:
            lo = res
        else:
            hi = res
        if lo is not None and hi is not None:
            if hi / lo < tol:
                break
            res = (lo * hi) ** 0.5
        else:
            res = lo * 2.0 if lo is not None else hi / 2.0  # type: ignore[operator]
        if not bounds[0] <= res <= bounds[1] or res in tried:
            break
    best = min(tried, key=lambda r: (abs(tried[r][0] - n_clusters), sign * tried[r][0], sign * r))
    count, result = tried[best]
    return ResolutionSearch(resolution=best, n_clusters=count, result=result, n_evals=len(tried))
