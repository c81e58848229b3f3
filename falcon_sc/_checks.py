"""Scalar argument checks and declared parameter constraints, in one style for the whole package.

A leaf module (no other ``falcon_sc`` imports), so every layer can use it. The errors name the argument, what was
found and what is allowed: ``TypeError`` for a value of the wrong type, ``ValueError`` for one out of range.

Parameter objects (dataclasses) declare each field's constraint once with :func:`param`; :func:`validate` checks an
instance, :func:`defaults` lists the defaults (the signatures of the public functions are tested against it), in
the manner of scikit-learn's ``_param_validation``.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


def is_int(value: Any) -> bool:
    """Whether ``value`` is an integer (Python or numpy), bools excepted."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool | np.bool_)


def check_choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    """``ValueError`` unless ``value`` is one of the strings ``allowed``."""
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{name}={value!r} must be one of {', '.join(map(repr, allowed))}.")


def check_int(name: str, value: Any, minimum: int | None = None, *, allow_none: bool = False) -> None:
    """``TypeError`` unless ``value`` is an int (numpy ints too, bools not); ``ValueError`` below ``minimum``."""
    if value is None and allow_none:
        return
    if not is_int(value):
        what = "an int" + (" or None" if allow_none else "")
        raise TypeError(f"{name}={value!r} must be {what}, got {type(value).__name__}.")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name}={value!r} must be an int >= {minimum}.")


def check_number(
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    open_low: bool = False,
    open_high: bool = False,
) -> None:
    """``TypeError`` unless ``value`` is a real number (bools not); ``ValueError`` unless finite and in range.

    The range is ``[low, high]``; ``open_low`` / ``open_high`` leave out that end.
    """
    if not isinstance(value, numbers.Real) or isinstance(value, bool | np.bool_):
        raise TypeError(f"{name}={value!r} must be a number, got {type(value).__name__}.")
    number = float(value)
    below = low is not None and (number <= low if open_low else number < low)
    above = high is not None and (number >= high if open_high else number > high)
    if not math.isfinite(number) or below or above:
        if low is not None and high is not None:
            rng = f"in {'(' if open_low else '['}{low:g}, {high:g}{')' if open_high else ']'}"
        elif low is not None:
            rng = f"{'>' if open_low else '>='} {low:g}"
        else:
            rng = f"{'<' if open_high else '<='} {high:g}"
        raise ValueError(f"{name}={value!r} must be a finite number {rng}.")


def check_bool(name: str, value: Any, *, allow_none: bool = False) -> None:
    """``TypeError`` unless ``value`` is ``True`` or ``False`` (or ``None`` with ``allow_none``)."""
    if value is None and allow_none:
        return
    if not isinstance(value, bool | np.bool_):
        extra = " (or None)" if allow_none else ""
        raise TypeError(f"{name}={value!r} must be True or False{extra}, got {type(value).__name__}.")


def check_widths(name: str, value: Any) -> None:
    """A sequence of positive ints (layer widths; may be empty)."""
    if isinstance(value, str | bytes) or not isinstance(value, Sequence | np.ndarray):
        raise TypeError(f"{name}={value!r} must be a sequence of layer widths, e.g. (64, 64, 64, 64).")
    if not all(is_int(h) and h >= 1 for h in value):
        raise ValueError(f"{name}={value!r}: every layer width must be a positive int.")


# ---------------------------------------------------------------------- declared constraints
@dataclass(frozen=True)
class Int:
    """An int ``>= minimum`` (``None`` too with ``allow_none``)."""

    minimum: int | None = None
    allow_none: bool = False

    def __call__(self, name: str, value: Any) -> None:
        check_int(name, value, self.minimum, allow_none=self.allow_none)


@dataclass(frozen=True)
class Real:
    """A finite number in ``[low, high]`` (``open_low`` / ``open_high`` leave out that end)."""

    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False

    def __call__(self, name: str, value: Any) -> None:
        check_number(name, value, low=self.low, high=self.high, open_low=self.open_low, open_high=self.open_high)


@dataclass(frozen=True)
class Bool:
    """``True`` or ``False`` (``None`` too with ``allow_none``)."""

    allow_none: bool = False

    def __call__(self, name: str, value: Any) -> None:
        check_bool(name, value, allow_none=self.allow_none)


@dataclass(frozen=True)
class Choice:
    """One of the strings ``options``."""

    options: tuple[str, ...]

    def __call__(self, name: str, value: Any) -> None:
        check_choice(name, value, self.options)


@dataclass(frozen=True)
class Widths:
    """A sequence of positive ints."""

    def __call__(self, name: str, value: Any) -> None:
        check_widths(name, value)


@dataclass(frozen=True)
class Anything:
    """No constraint here: the value is checked where its meaning depends on the data."""

    def __call__(self, name: str, value: Any) -> None:
        return None


Constraint = Int | Real | Bool | Choice | Widths | Anything


def param(default: Any, check: Constraint, *, doc: str = "") -> Any:
    """A dataclass field with its default and its declared constraint (``doc``: one line for the docs)."""
    if isinstance(default, list | dict | set):
        raise TypeError("param defaults must be immutable (use a tuple).")
    return dataclasses.field(default=default, metadata={"check": check, "doc": doc})


def validate(params: Any) -> None:
    """Check every field of the parameter object ``params`` against its declared constraint."""
    for f in dataclasses.fields(params):
        check = f.metadata.get("check")
        if check is not None:
            check(f.name, getattr(params, f.name))


def defaults(cls: type) -> dict[str, Any]:
    """Field name -> default of the parameter class ``cls`` (fields without a default are left out)."""
    return {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}


def folder_path(name: str, value: Any) -> Path:
    """``value`` as a :class:`~pathlib.Path`; a ``TypeError`` naming ``name`` unless it is a str or os.PathLike."""
    if isinstance(value, bool) or not isinstance(value, str | os.PathLike) or value == "":
        raise TypeError(f"{name}={value!r} must be a path (a non-empty str or os.PathLike).")
    return Path(value)
