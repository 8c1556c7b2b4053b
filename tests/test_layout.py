"""The package's layout (DESIGN.md §2): which way imports run, read from the source with `ast`.

Every import counts: top-level, function-local and relative ones. A module's room is the
first name under styleavatar_jax (`train` for styleavatar_jax.train.loop, `cameras` for
styleavatar_jax.cameras); a room may import itself and the rooms ALLOWED lists, nothing
higher. No module-level import circles, and none between rooms.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "styleavatar_jax"

_BASE = {"cameras", "files"}  # import nothing of ours
_NETS = _BASE | {"nn", "render", "models"}
_RUN = _NETS | {"typed_config", "sampling", "checkpoint", "runtime"}
# room -> the rooms it may import (besides itself). Lowest first.
ALLOWED: dict[str, set[str]] = {
    "cameras": set(),
    "files": set(),
    "distributed": set(),  # joining the processes of a multi-host run (the CLI calls it)
    "nn": set(),
    "render": {"cameras"},
    "models": {"cameras", "nn", "render"},
    "data": {"cameras", "files"},  # dataset formats and the input pipeline: no networks
    "heads": {"cameras", "files", "render", "data"},  # synthetic heads: no networks
    "typed_config": _NETS,
    "runtime": _BASE,
    "sampling": _NETS | {"runtime"},
    "checkpoint": _NETS | {"typed_config"},
    "convert": _NETS | {"typed_config"},
    "eval": _RUN | {"data", "convert"},  # never train/
    "export": _RUN | {"heads"},  # never train/
    "invert": _RUN,
    "train": _RUN | {"data", "heads", "convert", "eval", "export"},
    "wdiff": _RUN | {"data", "convert", "eval", "export", "invert"},  # not train/
    "cli": None,  # the top: may import anything; nothing imports it
}
FORBIDDEN_PACKAGES = ("torch", "diffusers", "ray")  # the JAX side runs without these
OUTSIDE = ("tests", "bench", "data_gen", "scripts")  # never reach into the CLI's modules


def modules(pkg_dir: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py under pkg_dir (a package folder)."""
    out = {}
    for f in sorted(pkg_dir.rglob("*.py")):
        parts = list(f.relative_to(pkg_dir.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = f
    return out


def imported_names(name: str, path: Path) -> list[tuple[str, int]]:
    """Every dotted name `path` imports, anywhere in the file -> [(name, line)]. A relative
    import is resolved against `name`; `from a import b` yields a and a.b."""
    is_pkg = path.name == "__init__.py"
    base = name.split(".") if is_pkg else name.split(".")[:-1]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                head = base[: len(base) - node.level + 1]
                mod = ".".join(head + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out += [(mod, node.lineno)] + [(f"{mod}.{a.name}", node.lineno) for a in node.names]
    return out


def import_graph(pkg_dir: Path) -> dict[str, dict[str, int]]:
    """module -> {module of the package it imports: line of the first such import}."""
    mods = modules(pkg_dir)
    graph: dict[str, dict[str, int]] = {}
    for name, path in mods.items():
        edges: dict[str, int] = {}
        for target, line in imported_names(name, path):
            while target and target not in mods:
                target = target.rpartition(".")[0]
            if target and target != name and target != pkg_dir.name:
                edges.setdefault(target, line)
        graph[name] = edges
    return graph


def room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def cycles(graph: dict[str, set[str]] | dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan)."""
    index, low, stack, on, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in list(graph):
        if v not in index:
            visit(v)
    return found


def upward_imports(graph, allowed=ALLOWED) -> list[str]:
    """'a.b imports c.d (line N): room a may import only [...]' for each edge the table
    does not allow (an unknown room is an error too: add it to the table)."""
    out = []
    for src, edges in sorted(graph.items()):
        if "." not in src:  # the package's __init__.py
            continue
        mine = room(src)
        if mine not in allowed:
            out.append(f"{src}: room {mine!r} is not in tests/test_layout.py's ALLOWED table")
            continue
        ok = allowed[mine]
        for dst, line in sorted(edges.items()):
            theirs = room(dst)
            if theirs == mine or ok is None:
                continue
            if theirs not in ok:
                out.append(f"{src} imports {dst} (line {line}): room {mine!r} may import only "
                           f"{sorted(ok) or 'nothing of ours'}")  # fmt: skip
    return out


@pytest.fixture(scope="module")
def graph():
    return import_graph(ROOT / PACKAGE)


def test_imports_run_downwards(graph):
    problems = upward_imports(graph)
    assert not problems, "imports against DESIGN.md §2:\n  " + "\n  ".join(problems)


def test_no_import_circles(graph):
    assert not cycles(graph), f"import circles between modules: {cycles(graph)}"
    rooms = defaultdict(set)
    for src, edges in graph.items():
        rooms[room(src)] |= {room(d) for d in edges if room(d) != room(src)}
    assert not cycles(rooms), f"import circles between rooms: {cycles(rooms)}"


def test_the_allowed_table_is_layered():
    """The table itself has no circle (so obeying it means no room-level circle)."""
    table = {k: set(v) if v is not None else set() for k, v in ALLOWED.items()}
    assert not cycles(table)
    assert all(v <= set(ALLOWED) for v in table.values())
    assert not any(ok is not None and "cli" in ok for ok in ALLOWED.values())


def test_top_level_matches_design():
    """The package's top level is the rooms of ALLOWED, each named in DESIGN.md's layout."""
    pkg = ROOT / PACKAGE
    top = {p.stem for p in pkg.glob("*.py") if p.stem != "__init__"}
    top |= {p.name for p in pkg.iterdir() if (p / "__init__.py").is_file()}
    assert top == set(ALLOWED)
    design = (ROOT / "DESIGN.md").read_text()
    layout = design[design.index("## 2.") : design.index("## 3.")]
    missing = [r for r in sorted(top) if f"{r}/" not in layout and f"{r}.py" not in layout]
    assert not missing, f"DESIGN.md §2 does not list {missing}"


def test_no_torch_in_the_package(graph):
    bad = [
        f"{name} imports {target} (line {line})"
        for name, path in modules(ROOT / PACKAGE).items()
        for target, line in imported_names(name, path)
        if target.split(".")[0] in FORBIDDEN_PACKAGES
    ]
    assert not bad, bad


def _outside_files():
    for folder in OUTSIDE:
        yield from sorted((ROOT / folder).rglob("*.py"))


def test_outside_code_uses_the_library_not_the_cli():
    """tests/, bench/, data_gen/ and scripts/ import library modules; a CLI test may run
    `styleavatar_jax.cli.main` and nothing else of styleavatar_jax.cli."""
    cli = f"{PACKAGE}.cli"
    bad = []
    for path in _outside_files():
        tree = ast.parse(path.read_text(), str(path))
        where = path.relative_to(ROOT)
        names_cli = False  # `from styleavatar_jax import cli` / `import styleavatar_jax.cli`
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                if node.module == cli:
                    bad += [f"{where}:{node.lineno} imports {cli}.{a.name}"
                            for a in node.names if a.name != "main"]  # fmt: skip
                elif node.module.startswith(cli + "."):
                    bad.append(f"{where}:{node.lineno} imports {node.module}")
                elif node.module == PACKAGE and any(a.name == "cli" for a in node.names):
                    names_cli = True
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.startswith(cli + "."):
                        bad.append(f"{where}:{node.lineno} imports {a.name}")
                    elif a.name == cli:
                        names_cli = True
        if names_cli and where.parts[0] != "tests":
            bad.append(f"{where} imports {cli} (only the CLI's own tests may run it)")
        if names_cli:
            bad += [f"{where}:{n.lineno} uses cli.{n.attr}" for n in ast.walk(tree)
                    if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)
                    and n.value.id == "cli" and n.attr != "main"]  # fmt: skip
    assert not bad, "reaching into the CLI:\n  " + "\n  ".join(bad)


def test_the_check_sees_an_upward_import(tmp_path):
    """A deliberately wrong package: a model importing train/, a local import in a function
    and a relative one; both are reported, and so is the circle they close."""
    pkg = tmp_path / PACKAGE
    for sub in ("models", "train"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "models" / "net.py").write_text("def f():\n    from ..train import loop\n")
    (pkg / "train" / "loop.py").write_text(f"from {PACKAGE}.models import net\n")
    g = import_graph(pkg)
    problems = upward_imports(g)
    assert f"{PACKAGE}.models.net imports {PACKAGE}.train.loop (line 2): room 'models' may " \
        "import only ['cameras', 'nn', 'render']" in problems  # fmt: skip
    assert all(p.startswith(f"{PACKAGE}.models.net imports {PACKAGE}.train") for p in problems)
    assert cycles(g) == [[f"{PACKAGE}.models.net", f"{PACKAGE}.train.loop"]]
