"""``falcon-bench list`` prints plain text: no Sphinx roles or reST literals from the docstrings it quotes."""

from __future__ import annotations

import pytest

from falcon_sc.bench.__main__ import _plain, main


def test_list_prints_plain_text(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "methods:" in out and "falcon " in out
    for markup in (":func:", ":class:", ":meth:", ":mod:", "``", "`"):
        assert markup not in out, f"{markup!r} in `falcon-bench list`:\n{out}"
    # the text inside the markup stays
    assert "falcon_sc.tl.refine" in out and "sc.tl.leiden(restrict_to=...)" in out


@pytest.mark.parametrize(
    ("text", "plain"),
    [
        ("FALCON: :func:`falcon_sc.tl.refine` on ``adata``.", "FALCON: falcon_sc.tl.refine on adata."),
        (":class:`~falcon_sc.models.FalconModel`", "FalconModel"),
        (":doc:`the method <method>` and :py:meth:`a.b`", "the method and a.b"),
        ("`default role` and plain", "default role and plain"),
        ("no markup: 2 < 3", "no markup: 2 < 3"),
    ],
)
def test_plain(text, plain):
    assert _plain(text) == plain
