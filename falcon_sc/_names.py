"""New names for fine classes: the check shared by :func:`falcon_sc.tl.rename` and :meth:`FalconModel.rename`."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence


def _listed(values, limit: int = 20) -> str:
    values = [repr(v) for v in values]
    more = f" ... ({len(values) - limit} more)" if len(values) > limit else ""
    return ", ".join(values[:limit]) + more


def renamed(names: Sequence[str], mapping: Mapping[str, str], *, what: str = "fine classes") -> list[str]:
    """``names`` with ``mapping`` applied (names not in ``mapping`` are kept), after checking the whole mapping.

    Swapping names (``{"a": "b", "b": "a"}``) is allowed: only the names after renaming must be unique.

    Parameters
    ----------
    names
        Current names, unique.
    mapping
        Old name -> new name.
    what
        What ``names`` are, for the messages (e.g. ``"fine classes of adata.uns['falcon']"``).

    Returns
    -------
    The new names, in the order of ``names``.

    Raises
    ------
    TypeError
        ``mapping`` is not a mapping, or a key or value is not a ``str``.
    KeyError
        Keys of ``mapping`` that are not in ``names`` (all of them listed).
    ValueError
        An empty new name, or two classes that would end up with the same name (renamed onto one name, or onto the
        name of a class that keeps it).
    """
    if not isinstance(mapping, Mapping):
        raise TypeError(f"mapping must be a dict of old name -> new name, got {type(mapping).__name__}.")
    not_str = [f"{k!r}: {v!r}" for k, v in mapping.items() if not isinstance(k, str) or not isinstance(v, str)]
    if not_str:
        raise TypeError(f"mapping must map str to str; these entries are not: {', '.join(not_str[:10])}.")
    empty = [k for k, v in mapping.items() if not v.strip()]
    if empty:
        raise ValueError(f"mapping gives an empty name to {_listed(empty)}; give each class a non-empty name.")
    names = [str(n) for n in names]
    unknown = [k for k in mapping if k not in set(names)]
    if unknown:
        raise KeyError(f"mapping names {_listed(unknown)}, not among the {what}: {_listed(names)}.")
    new = [mapping.get(n, n) for n in names]
    clashes = [name for name, count in Counter(new).items() if count > 1]
    if clashes:
        parts = []
        for name in clashes:
            sources = [
                f"{old!r} ({'renamed' if old in mapping else 'not renamed'})"
                for old, nn in zip(names, new, strict=True)
                if nn == name
            ]
            parts.append(f"{name!r} from {' and '.join(sources)}")
        raise ValueError(
            "mapping would give two fine classes the same name: " + "; ".join(parts) + ". Choose distinct names "
            "(a class that is not renamed keeps its name; map it too to free the name)."
        )
    return new
