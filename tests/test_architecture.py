"""Architecture rules of the package, checked on its source (AST) and in a fresh interpreter.

(a) **No import cycles** among the ``falcon_sc`` modules. The graph has an edge ``A -> B`` for every import in ``A``
    of the package module ``B``, wherever the import stands: at module level, inside a function or method, in a
    ``try`` block or under ``if TYPE_CHECKING:`` (an import moved into a function postpones a cycle, it does not
    remove it). Edges are resolved as follows:

    - ``import a.b.c`` and ``from a.b.c import name`` are edges to ``a.b.c``; ``from a.b import c`` where ``c`` is a
      submodule is an edge to ``a.b.c`` (relative imports are resolved against the importing module's package).
    - ``import falcon_sc`` and ``from falcon_sc import name`` where ``name`` is not a submodule are edges to the
      package itself (its ``__init__``).
    - Importing a submodule is **not** an edge to its parent packages, although Python initialises them first:
      every package's ``__init__`` imports its own submodules, so these implicit edges would put each submodule in
      a cycle with its package and hide the real cycles. The parents' own imports are edges of the parents and are
      checked like any other.
    - A package that loads submodules lazily (PEP 562: a module-level ``__getattr__``, as ``falcon_sc`` does for
      ``falcon_sc.bench``) has an edge to every submodule whose name appears as a string in its ``__init__``, and
      ``importlib.import_module("falcon_sc.x")`` with a constant name is an edge to ``falcon_sc.x``: loading on
      first use must not hide a cycle either.

(b) **No private names across modules**: no module imports a name starting with ``_`` (dunders excepted) from
    another package module, neither by ``from module import _name`` nor as an attribute ``module._name`` of an
    imported package module. Private *modules* may be imported (``from .pp._checks import check_codes``): make the
    name public inside a private module instead.

(c) **No function longer than** :data:`MAX_LINES` lines of code outside ``falcon_sc/bench/``: the lines from the
    ``def`` to the end of the body that hold code (blank lines, comment lines and the docstring excluded; nested
    functions count in their enclosing function too).

(d) **``import falcon_sc`` is light**: in a fresh interpreter where ``import resource`` fails (as on Windows) it
    succeeds, does not import ``falcon_sc.bench``, and leaves matplotlib's backend as it was; ``falcon_sc.bench``
    still loads on attribute access and ``dir(falcon_sc)`` lists it.

Each checker takes the package's folder, so the self-tests at the end run it on small synthetic trees and show
that every rule can fail.
"""

from __future__ import annotations

import ast
import io
import json
import os
import subprocess
import sys
import textwrap
import tokenize
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = "falcon_sc"
PACKAGE_DIR = Path(__file__).resolve().parents[1] / PACKAGE
MAX_LINES = 100
EXEMPT_FROM_LENGTH = ("bench",)  # subpackages of PACKAGE whose functions may be longer (benchmark scripts)


# ----------------------------------------------------------------------------------------------- the package's modules


def discover(package_dir: Path) -> dict[str, Path]:
    """Module name -> file of every module of the package in ``package_dir`` (``__init__.py`` names the package)."""
    modules = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = path.relative_to(package_dir.parent).with_suffix("").parts
        if not all(part.isidentifier() for part in parts):
            continue
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _base_package(module: str, path: Path, level: int) -> str:
    """The package a relative import of ``level`` dots in ``module`` starts from."""
    parts = module.split(".")
    if path.name != "__init__.py":
        parts = parts[:-1]
    return ".".join(parts[: len(parts) - (level - 1)])


@dataclass(frozen=True)
class Edge:
    """One import of the package module ``target`` by ``source`` (line ``line``; ``names``: what it takes)."""

    source: str
    target: str
    line: int
    names: tuple[str, ...] = ()


def _owner(name: str, modules: dict[str, Path]) -> str | None:
    """``name`` if it is a package module, else its longest prefix that is one (``None`` outside the package)."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def imports(module: str, modules: dict[str, Path]) -> Iterator[Edge]:
    """The edges of ``module`` (see the module docstring for the rules)."""
    path = modules[module]
    tree = _parse(path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = _owner(alias.name, modules)
                if target is not None:
                    yield Edge(module, target, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = _base_package(module, path, node.level) + (f".{base}" if base else "")
            target = _owner(base, modules)
            if target is None:
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                if sub in modules:
                    yield Edge(module, sub, node.lineno)
                else:
                    yield Edge(module, target, node.lineno, (alias.name,))
        elif isinstance(node, ast.Call) and _is_import_module(node) and isinstance(node.args[0], ast.Constant):
            target = _owner(str(node.args[0].value), modules)
            if target is not None:
                yield Edge(module, target, node.lineno)
    if path.name == "__init__.py" and _defines_getattr(tree):
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and f"{module}.{node.value}" in modules:
                yield Edge(module, f"{module}.{node.value}", node.lineno)


def _is_import_module(node: ast.Call) -> bool:
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
    return name == "import_module" and len(node.args) >= 1


def _defines_getattr(tree: ast.Module) -> bool:
    return any(isinstance(node, ast.FunctionDef) and node.name == "__getattr__" for node in tree.body)


def import_graph(package_dir: Path) -> tuple[dict[str, Path], dict[str, list[Edge]]]:
    """The package's modules and, for each, its edges to other package modules."""
    modules = discover(package_dir)
    graph = {m: [e for e in imports(m, modules) if e.target != m] for m in modules}
    return modules, graph


# ---------------------------------------------------------------------------------------------------- (a) cycles


def _strongly_connected(graph: dict[str, list[Edge]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for edge in graph[v]:
            w = edge.target
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10 * len(graph) + 100))
    try:
        for v in sorted(graph):
            if v not in index:
                visit(v)
    finally:
        sys.setrecursionlimit(limit)
    return found


def _one_cycle(component: list[str], graph: dict[str, list[Edge]]) -> list[Edge]:
    """A shortest cycle through the first module of a strongly connected component (breadth first)."""
    start, members = component[0], set(component)
    parent: dict[str, Edge] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for edge in graph[v]:
                if edge.target == start:
                    path = [edge]
                    while path[0].source != start:
                        path.insert(0, parent[path[0].source])
                    return path
                if edge.target in members and edge.target not in parent:
                    parent[edge.target] = edge
                    nxt.append(edge.target)
        frontier = nxt
    raise AssertionError(f"no cycle through {start}")  # cannot happen in a strongly connected component


def import_cycles(package_dir: Path) -> list[str]:
    """One line per cycle: the modules of a strongly connected component and one cycle with file:line of each import."""
    modules, graph = import_graph(package_dir)
    root = package_dir.parent
    out = []
    for component in _strongly_connected(graph):
        steps = " -> ".join(
            f"{e.source} ({modules[e.source].relative_to(root)}:{e.line}"
            + (f" imports {', '.join(e.names)}" if e.names else "")
            + ")"
            for e in _one_cycle(component, graph)
        )
        out.append(f"{{{', '.join(component)}}}: {steps} -> {component[0]}")
    return out


# --------------------------------------------------------------------------------------------- (b) private names


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _module_aliases(module: str, tree: ast.Module, modules: dict[str, Path]) -> dict[str, str]:
    """Local names bound to package modules by the imports of ``module`` (``import a.b`` binds ``a``)."""
    path = modules[module]
    aliases = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in modules or alias.name in modules:
                    if alias.asname:
                        aliases[alias.asname] = alias.name
                    else:
                        aliases[alias.name.split(".")[0]] = alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = _base_package(module, path, node.level) + (f".{base}" if base else "")
            for alias in node.names:
                if f"{base}.{alias.name}" in modules:
                    aliases[alias.asname or alias.name] = f"{base}.{alias.name}"
    return aliases


def private_imports(package_dir: Path) -> list[str]:
    """``file:line: module takes <target>.<_name>`` for every private name taken from another package module."""
    modules = discover(package_dir)
    root = package_dir.parent
    out = []
    for module, path in modules.items():
        tree = _parse(path)
        where = f"{path.relative_to(root)}"
        for edge in imports(module, modules):
            for name in edge.names:
                if _is_private(name) and edge.target != module:
                    out.append(f"{where}:{edge.line}: {module} imports {edge.target}.{name}")
        aliases = _module_aliases(module, tree, modules)
        for node in ast.walk(tree):
            if not isinstance(node, ast.Attribute) or not _is_private(node.attr):
                continue
            chain, value = [node.attr], node.value
            while isinstance(value, ast.Attribute):
                chain.insert(0, value.attr)
                value = value.value
            if not isinstance(value, ast.Name) or value.id not in aliases:
                continue
            target = aliases[value.id]
            for i, part in enumerate(chain):  # walk down the submodules; the first other attribute is the name
                if f"{target}.{part}" in modules:
                    target = f"{target}.{part}"
                    continue
                if i == len(chain) - 1 and target != module:
                    out.append(f"{where}:{node.lineno}: {module} uses {target}.{part}")
                break
    return sorted(set(out))


# ------------------------------------------------------------------------------------------- (c) function length


def _code_lines(source: str) -> set[int]:
    """Lines that hold a token of code (not only comments, blank space or line breaks)."""
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENCODING}
    lines: set[int] = set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type not in skip and tok.type != tokenize.ENDMARKER:
            lines.update(range(tok.start[0], tok.end[0] + 1))
    return lines


def function_lengths(path: Path) -> Iterator[tuple[str, int, int]]:
    """``(qualified name, def line, lines of code)`` of every function and method in ``path``."""
    source = path.read_text(encoding="utf-8")
    code = _code_lines(source)

    def walk(node: ast.AST, prefix: str) -> Iterator[tuple[str, int, int]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = set(range(child.lineno, (child.end_lineno or child.lineno) + 1)) & code
                first = child.body[0]
                if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                    if isinstance(first.value.value, str):  # the docstring
                        lines -= set(range(first.lineno, (first.end_lineno or first.lineno) + 1))
                yield f"{prefix}{child.name}", child.lineno, len(lines)
                yield from walk(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.ClassDef):
                yield from walk(child, f"{prefix}{child.name}.")
            else:
                yield from walk(child, prefix)

    yield from walk(ast.parse(source, filename=str(path)), "")


def long_functions(
    package_dir: Path, limit: int = MAX_LINES, exempt: tuple[str, ...] = EXEMPT_FROM_LENGTH
) -> list[str]:
    """``file:line name: n lines`` for each function over ``limit`` lines of code, longest first."""
    found = []
    for path in sorted(package_dir.rglob("*.py")):
        rel = path.relative_to(package_dir)
        if rel.parts[0] in exempt:
            continue
        for name, line, n in function_lengths(path):
            if n > limit:
                found.append((n, f"{path.relative_to(package_dir.parent)}:{line} {name}: {n} lines"))
    return [text for _, text in sorted(found, key=lambda item: (-item[0], item[1]))]


# ------------------------------------------------------------------------------------------ (d) import side effects

_PROBE = """
import json, sys
sys.modules["resource"] = None  # as on Windows: `import resource` raises ImportError
import matplotlib
if {backend!r}:
    matplotlib.use({backend!r})
before = dict.__getitem__(matplotlib.rcParams, "backend")
import {package} as pkg
after = dict.__getitem__(matplotlib.rcParams, "backend")
report = {{
    "backend_kept": after is before or after == before,
    "backend": str(after),
    "lazy_imported": [m for m in {lazy!r} if m in sys.modules],
    "listed": [m.rsplit(".", 1)[1] in dir(pkg) for m in {lazy!r}],
}}
loaded = []
for m in {lazy!r}:
    try:
        getattr(pkg, m.rsplit(".", 1)[1])
    except AttributeError:
        pass
    loaded.append(m in sys.modules)
report["loaded_on_access"] = loaded
print(json.dumps(report))
"""


def import_side_effects(package: str, lazy: tuple[str, ...], backend: str, path: Path) -> list[str]:
    """What is wrong with ``import package`` in a fresh interpreter (empty list: nothing)."""
    code = _PROBE.format(package=package, lazy=lazy, backend=backend)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(path), os.environ.get("PYTHONPATH", "")])}
    env.pop("MPLBACKEND", None)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env, cwd=path)
    if proc.returncode != 0:
        return [f"import {package} failed where `import resource` fails:\n{proc.stderr[-3000:]}"]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    problems = []
    if not report["backend_kept"]:
        problems.append(f"import {package} changed matplotlib's backend (to {report['backend']})")
    if report["lazy_imported"]:
        problems.append(f"import {package} imported {report['lazy_imported']}")
    if not all(report["listed"]):
        problems.append(f"dir({package}) does not list every one of {list(lazy)}")
    if not all(report["loaded_on_access"]):
        problems.append(f"attribute access did not load every one of {list(lazy)}")
    return problems


# ----------------------------------------------------------------------------------------------- the package's tests


def test_no_import_cycles():
    cycles = import_cycles(PACKAGE_DIR)
    assert not cycles, "import cycles (imports inside functions count):\n" + "\n".join(cycles)


def test_no_private_names_across_modules():
    found = private_imports(PACKAGE_DIR)
    assert not found, (
        "modules take private names of other package modules; make the name public (no underscore) in its "
        "module, which may itself be private:\n" + "\n".join(found)
    )


def test_no_long_functions_outside_the_bench():
    found = long_functions(PACKAGE_DIR)
    assert not found, (
        f"functions longer than {MAX_LINES} lines of code (docstring, comments and blank lines excluded; "
        "falcon_sc/bench/ exempt):\n" + "\n".join(found)
    )


@pytest.mark.parametrize("backend", ["", "svg"], ids=["backend-unset", "backend-svg"])
def test_import_falcon_sc_is_light(backend):
    problems = import_side_effects(PACKAGE, (f"{PACKAGE}.bench",), backend, PACKAGE_DIR.parent)
    assert not problems, "\n".join(problems)


def test_the_real_graph_sees_the_lazy_bench_and_function_level_imports():
    """The graph of the package holds the edges that the rules are about (guards against a blind parser)."""
    _, graph = import_graph(PACKAGE_DIR)
    targets = {m: {e.target for e in edges} for m, edges in graph.items()}
    assert f"{PACKAGE}.bench" in targets[PACKAGE]  # lazy, through __getattr__
    assert f"{PACKAGE}.tl" in targets[f"{PACKAGE}.bench._methods"]  # `from falcon_sc import tl` inside a function
    assert f"{PACKAGE}.bench.real" in targets[f"{PACKAGE}.bench.ablation"]  # `from . import real`


# ------------------------------------------------------------------------------------------ self-tests of the checks


def _tree(tmp_path: Path, files: dict[str, str], package: str = "pkg") -> Path:
    for name, text in files.items():
        file = tmp_path / package / name
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(textwrap.dedent(text))
    for folder in [tmp_path / package, *(p for p in (tmp_path / package).rglob("*") if p.is_dir())]:
        (folder / "__init__.py").touch()
    return tmp_path / package


CYCLES = {
    "function-level": (
        {"a.py": "from .b import x\n", "b.py": "x = 1\ndef f():\n    from .a import y\n"},
        ["pkg.a", "pkg.b"],
    ),
    "submodule-from-package": (
        {"a.py": "from . import b\n", "b.py": "def f():\n    from pkg import a\n"},
        ["pkg.a", "pkg.b"],
    ),
    "through-package-init": (
        {"__init__.py": "from .a import f\n", "a.py": "def f():\n    import pkg\n"},
        ["pkg", "pkg.a"],
    ),
    "lazy-getattr": (
        {
            "__init__.py": (
                "import importlib\n_LAZY = ('bench',)\n"
                "def __getattr__(name):\n    return importlib.import_module(f'{__name__}.{name}')\n"
            ),
            "bench/__init__.py": "from .run import go\n",
            "bench/run.py": "def go():\n    import pkg as p\n",
        },
        ["pkg", "pkg.bench", "pkg.bench.run"],
    ),
    "import-module-call": (
        {"a.py": "import importlib\nB = importlib.import_module('pkg.sub.b')\n", "sub/b.py": "from ..a import B\n"},
        ["pkg.a", "pkg.sub.b"],
    ),
    "type-checking": (
        {
            "a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .b import B\n",
            "b.py": "from .a import A\n",
        },
        ["pkg.a", "pkg.b"],
    ),
}


@pytest.mark.parametrize("case", list(CYCLES))
def test_cycle_check_finds(tmp_path, case):
    files, members = CYCLES[case]
    cycles = import_cycles(_tree(tmp_path, files))
    assert len(cycles) == 1 and cycles[0].startswith("{" + ", ".join(members) + "}"), cycles


def test_cycle_check_passes_acyclic_packages(tmp_path):
    """Siblings imported by their package's __init__ and importing each other one way are no cycle."""
    files = {
        "__init__.py": "from . import a, b\nfrom .b import g\n",
        "a.py": "def f():\n    return 1\n",
        "b.py": "from .a import f\nimport pkg.a\ndef g():\n    from pkg import a\n    return f()\n",
        "sub/c.py": "from ..b import g\nimport numpy\n",
    }
    assert import_cycles(_tree(tmp_path, files)) == []


PRIVATE = {
    "from-import": ({"a.py": "_x = 1\n", "b.py": "from .a import _x\n"}, "pkg.b imports pkg.a._x"),
    "relative-package": ({"__init__.py": "_x = 1\n", "sub/b.py": "from .. import _x\n"}, "pkg.sub.b imports pkg._x"),
    "attribute": (
        {"a.py": "def _f(): ...\n", "b.py": "def g():\n    from . import a\n    return a._f()\n"},
        "pkg.b uses pkg.a._f",
    ),
    "attribute-of-package": (
        {"sub/a.py": "def _f(): ...\n", "b.py": "import pkg as p\np.sub.a._f()\n"},
        "pkg.b uses pkg.sub.a._f",
    ),
}


@pytest.mark.parametrize("case", list(PRIVATE))
def test_private_name_check_finds(tmp_path, case):
    files, message = PRIVATE[case]
    found = private_imports(_tree(tmp_path, files))
    assert len(found) == 1 and found[0].endswith(message), found


def test_private_name_check_allows_private_modules_dunders_and_own_names(tmp_path):
    files = {
        "_impl.py": "def helper(): ...\n_own = 1\nprint(_own)\n",
        "a.py": "from ._impl import helper\nfrom . import _impl\nfrom pkg import __name__ as n\n_impl.helper()\n",
        "b.py": "import numpy as np\nnp._NoValue\nfrom os import _exit\n",
    }
    assert private_imports(_tree(tmp_path, files)) == []


def _body(n: int) -> str:
    return "".join(f"    x{i} = {i}\n" for i in range(n))


def test_length_check_counts_code_lines_only(tmp_path):
    doc = '    """Docstring\n\n    over several lines.\n    """\n'
    padding = "\n    # a comment\n\n" * 20
    files = {
        "a.py": f"def ok():\n{doc}{_body(50)}{padding}{_body(49)}",  # def line + 99 = 100: allowed
        "b.py": f"class K:\n    def long(self):\n{textwrap.indent(doc, '    ')}{textwrap.indent(_body(100), '    ')}",
        "c.py": f"def outer():\n    def inner():\n{textwrap.indent(_body(60), '    ')}{_body(40)}",
        "bench/d.py": f"def exempt():\n{_body(300)}",
        "e.py": "def sig(\n    a,\n    b,\n):\n" + _body(97),  # a long signature is code
    }
    found = long_functions(_tree(tmp_path, files))
    assert [line.split(" ", 1)[1] for line in found] == ["outer: 102 lines", "K.long: 101 lines", "sig: 101 lines"]
    assert found[1].startswith(str(Path("pkg", "b.py")) + ":2 ")  # file and line of the def


PROBES = {
    "imports-resource": ("import resource\n", "failed where `import resource` fails"),
    "sets-backend": ("import matplotlib\nmatplotlib.use('agg')\n", "changed matplotlib's backend"),
    "eager-bench": ("from . import bench\n", "imported ['probe.bench']"),
    "not-listed": (
        "import importlib\ndef __getattr__(name):\n    return importlib.import_module(f'{__name__}.{name}')\n",
        "does not list",
    ),
}


@pytest.mark.parametrize("case", list(PROBES))
def test_import_probe_finds(tmp_path, case):
    init, message = PROBES[case]
    _tree(tmp_path, {"__init__.py": init, "bench/__init__.py": "X = 1\n"}, package="probe")
    problems = import_side_effects("probe", ("probe.bench",), "svg", tmp_path)
    assert any(message in p for p in problems), problems


def test_import_probe_passes_a_lazy_package(tmp_path):
    init = (
        "import importlib\n"
        "def __getattr__(name):\n    if name == 'bench':\n"
        "        return importlib.import_module(f'{__name__}.{name}')\n    raise AttributeError(name)\n"
        "def __dir__():\n    return [*globals(), 'bench']\n"
    )
    _tree(tmp_path, {"__init__.py": init, "bench/__init__.py": "def peak():\n    import resource\n"}, "probe")
    assert import_side_effects("probe", ("probe.bench",), "", tmp_path) == []


def test_mypy_ignores_no_module():
    """Every module is type-checked: ``[tool.mypy]`` has no override that switches errors off or skips a module."""
    import tomllib

    config = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["tool"]["mypy"]
    assert not config.get("ignore_errors", False)
    for override in config.get("overrides", []):
        assert not override.get("ignore_errors", False), override
        assert override.get("follow_imports") != "skip", override
