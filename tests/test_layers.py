"""The layer table of ARCHITECTURE.md holds: every import of ``zzz/`` points down or sideways, and
none makes a cycle.

Imports are read from the source, not by importing it: every ``import`` and ``from ... import``
of every module (top level, under ``TYPE_CHECKING``, inside functions), and the ``import`` and
``cimport`` lines of the Cython files. The table (ARCHITECTURE.md, "Layers") is the one place
that says which module sits where; this test reads it.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "zzz"
ARCHITECTURE = ROOT / "ARCHITECTURE.md"
FACE = 6  # the "face" row sits above layer 5

# Files whose imports are checked; .pyi stubs and C headers are listed in the table but import nothing.
SOURCES = (".py", ".pyx", ".pxd")
_BACKTICKED = re.compile(r"`([^`]+)`")
_CYTHON_IMPORT = re.compile(
    r"^[ \t]*(?:from[ \t]+(?P<base>\.*[\w.]*)[ \t]+c?import[ \t]+(?P<names>[^#\n]+)|c?import[ \t]+(?P<mods>[^#\n]+))",
    re.MULTILINE,
)


@dataclass(frozen=True)
class Arrow:
    source: str
    target: str
    where: str


@dataclass
class Table:
    layers: dict[str, int]  # module name -> layer
    files: dict[str, int]  # path under zzz/ ("errors.py", "channels/") -> layer


def read_table() -> Table:
    """The layer rows of ARCHITECTURE.md: the layer in the first cell, backticked files in the second."""
    text = ARCHITECTURE.read_text(encoding="utf-8")
    section = text.split("## Layers", 1)[1].split("\n## ", 1)[0]
    files: dict[str, int] = {}
    compiled: dict[str, int] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 2:
            continue
        head = cells[0].split()[0] if cells[0] else ""
        if head.isdigit():
            layer = int(head)
        elif head == "face":
            layer = FACE
        else:
            continue
        for token in _BACKTICKED.findall(cells[1]):
            if token.isidentifier():  # a module built from another file (e.g. compiled by Cython)
                compiled[f"zzz.{token}"] = layer
            else:
                assert token not in files, f"ARCHITECTURE.md lists {token} twice"
                files[token] = layer
    layers = dict(compiled)
    for path in _package_files():
        layer = _layer_of(path, files)
        if layer is not None and path.suffix in SOURCES:
            layers[module_name(path)] = layer
    return Table(layers, files)


def _package_files() -> Iterator[Path]:
    for path in sorted(PACKAGE.rglob("*")):
        if path.is_file() and path.suffix in (*SOURCES, ".pyi", ".h") and "__pycache__" not in path.parts:
            yield path


def _layer_of(path: Path, files: dict[str, int]) -> int | None:
    rel = path.relative_to(PACKAGE).as_posix()
    if rel in files:
        return files[rel]
    for listed, layer in files.items():
        if listed.endswith("/") and rel.startswith(listed):
            return layer
    return None


def module_name(path: Path) -> str:
    """``zzz/channels/__init__.py`` -> ``zzz.channels``; a ``.pxd`` is its module's declarations."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(base: str, level: int, importer: Path) -> str:
    if not level:
        return base
    package = module_name(importer).split(".")
    if importer.name != "__init__.py":
        package.pop()
    package = package[: len(package) - level + 1]
    return ".".join([*package, base] if base else package)


def _targets(base: str, names: list[str], known: set[str]) -> Iterator[str]:
    """What ``from base import names`` imports: submodules where they exist, else ``base`` itself."""
    if not (base == "zzz" or base.startswith("zzz.")):
        return
    for name in names:
        sub = f"{base}.{name}"
        yield sub if sub in known else base


def imports_of(path: Path, known: set[str]) -> Iterator[tuple[str, int]]:
    """Every zzz module ``path`` imports, with the line."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".py":
        for node in ast.walk(ast.parse(text, str(path))):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name == "zzz" or alias.name.startswith("zzz."):
                        yield alias.name, node.lineno
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(node.module or "", node.level, path)
                for target in _targets(base, [a.name for a in node.names], known):
                    yield target, node.lineno
        return
    for m in _CYTHON_IMPORT.finditer(text):
        line = text.count("\n", 0, m.start()) + 1
        if m.group("mods"):
            for mod in m.group("mods").split(","):
                name = mod.split()[0] if mod.split() else ""
                if name == "zzz" or name.startswith("zzz."):
                    yield name, line
        else:
            raw = m.group("base")
            level = len(raw) - len(raw.lstrip("."))
            base = _resolve(raw.lstrip("."), level, path)
            names = [n.split()[0] for n in m.group("names").strip("() \\").split(",") if n.split()]
            for target in _targets(base, names, known):
                yield target, line


def arrows(table: Table) -> list[Arrow]:
    known = set(table.layers)
    out = []
    for path in _package_files():
        if path.suffix not in SOURCES:
            continue
        source = module_name(path)
        for target, line in imports_of(path, known):
            if target != source:
                out.append(Arrow(source, target, f"{path.relative_to(ROOT)}:{line}"))
    return out


def test_every_module_has_a_layer() -> None:
    table = read_table()
    unlisted = [
        path.relative_to(ROOT).as_posix()
        for path in _package_files()
        if path.suffix in SOURCES and _layer_of(path, table.files) is None
    ]
    assert not unlisted, f"not in ARCHITECTURE.md's layer table: {unlisted}"


def test_every_listed_module_exists() -> None:
    missing = [listed for listed in read_table().files if not (PACKAGE / listed).exists()]
    assert not missing, f"ARCHITECTURE.md's layer table lists files that are not in zzz/: {missing}"


def test_imports_only_name_known_modules() -> None:
    table = read_table()
    unknown = [f"{a.where}: {a.target}" for a in arrows(table) if a.target not in table.layers]
    assert not unknown, f"imports of modules that are neither in zzz/ nor in the layer table: {unknown}"


def test_no_import_points_up() -> None:
    table = read_table()
    layers = table.layers
    upward = [
        f"{a.where}: {a.source} (layer {layers[a.source]}) imports {a.target} (layer {layers[a.target]})"
        for a in arrows(table)
        if a.source in layers and a.target in layers and layers[a.target] > layers[a.source]
    ]
    assert not upward, "imports pointing up a layer:\n" + "\n".join(upward)


def test_no_import_cycle() -> None:
    graph: dict[str, dict[str, str]] = {}
    for a in arrows(read_table()):
        graph.setdefault(a.source, {}).setdefault(a.target, a.where)
    shown = []
    for component, cycle in _cycles(graph):
        steps = ", ".join(graph[cycle[i]][cycle[(i + 1) % len(cycle)]] for i in range(len(cycle)))
        shown.append(
            f"{' -> '.join([*cycle, cycle[0]])} ({steps}); all of {sorted(component)} reach each other"
        )
    assert not shown, "import cycles:\n" + "\n".join(shown)


def _cycles(graph: dict[str, dict[str, str]]) -> list[tuple[set[str], list[str]]]:
    """Each strongly connected component of more than one module, with one cycle through it."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[tuple[set[str], list[str]]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, {}):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append((set(component), _path_through(graph, set(component), node)))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _path_through(graph: dict[str, dict[str, str]], component: set[str], start: str) -> list[str]:
    # Breadth first from start back to start, inside the component: the shortest cycle through it.
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt_frontier = []
        for node in frontier:
            for nxt in graph.get(node, {}):
                if nxt not in component:
                    continue
                if nxt == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return path[::-1]
                if nxt not in previous:
                    previous[nxt] = node
                    nxt_frontier.append(nxt)
        frontier = nxt_frontier
    return sorted(component)


# The checker itself: a test that could not fail would prove nothing.


def test_the_checker_sees_lazy_type_checking_and_cython_imports(tmp_path: Path) -> None:
    known = {"zzz", "zzz.a", "zzz.b", "zzz.c", "zzz.d", "zzz.pkg", "zzz.pkg.e"}
    source = tmp_path / "mod.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "import zzz.a\n"
        "from zzz import b, Name\n"
        "if TYPE_CHECKING:\n"
        "    from zzz.c import X\n"
        "def f():\n"
        "    from zzz.pkg import e\n"
        "    import os\n"
    )
    assert sorted(t for t, _ in imports_of(source, known)) == ["zzz", "zzz.a", "zzz.b", "zzz.c", "zzz.pkg.e"]
    pyx = tmp_path / "mod.pyx"
    pyx.write_text(
        "from libc.string cimport memcpy\nfrom zzz.d cimport Thing\nimport zzz.a, os\nfrom zzz import b\n"
    )
    assert sorted(t for t, _ in imports_of(pyx, known)) == ["zzz.a", "zzz.b", "zzz.d"]


def test_the_checker_finds_a_cycle() -> None:
    graph = {"a": {"b": "1"}, "b": {"c": "2"}, "c": {"a": "3", "d": "4"}, "d": {}}
    ((component, cycle),) = _cycles(graph)
    assert component == {"a", "b", "c"} and sorted(cycle) == ["a", "b", "c"]
    assert _cycles({"a": {"b": "1"}, "b": {}}) == []
