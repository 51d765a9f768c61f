"""The package order, read from the code's own imports, so that it cannot silently rot.

monorepo is a stack of subpackages (docs/architecture.md): each may import only the
ones below it in :data:`ORDER`, never one above, and no modules import each other in a
loop.  Every import counts: at module level, inside functions (the lazy imports that
keep start-up cheap) and under ``TYPE_CHECKING``.  No module imports another's private
names, subpackage ``__init__.py`` files import nothing (``import monorepo.x.y`` stays as
cheap as the module it names), and no module grows past :data:`MAX_LINES` lines.

The checks are functions of a source tree, so the tests at the end run them on small
made-up packages too: each rule is shown to fail when it is broken.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: The subpackages (and top-level modules) from the ground floor up: each may import
#: those before it in the list, and itself.  ``monorepo/__init__.py`` (the public API)
#: and ``__main__.py`` stand above all of them.
ORDER: tuple[str, ...] = (
    "errors",
    "_core",
    "project",
    "extract",
    "index",
    "sources",
    "overlays",
    "resolve",
    "locking",
    "vendoring",
    "sysroot",
    "building",
    "cli",
)
TOP = ("__init__", "__main__")
MAX_LINES = 700


@dataclass(frozen=True)
class Import:
    """One import of a package module by another, where it is written."""

    source: str
    target: str
    line: int
    names: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.source}:{self.line} imports {self.target}"


def modules(root: Path, package: str) -> dict[str, Path]:
    """Dotted module name -> file, for every module of *package* under *root*."""
    found: dict[str, Path] = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _absolute(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    if not is_package:
        base.pop()
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def imports(root: Path, package: str) -> Iterator[Import]:
    """Every import of one of *package*'s modules by another, at any depth of the code."""
    known = modules(root, package)
    for module, path in known.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        is_package = path.name == "__init__.py"
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name in known:
                        yield Import(module, alias.name, node.lineno, ())
            elif isinstance(node, ast.ImportFrom):
                base = _absolute(module, is_package, node)
                if base not in known:
                    continue
                for alias in node.names:
                    child = f"{base}.{alias.name}"
                    if child in known:  # ``from pkg import module``
                        yield Import(module, child, node.lineno, ())
                    else:
                        yield Import(module, base, node.lineno, (alias.name,))


def layer(module: str, package: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def upward_imports(root: Path, package: str, order: tuple[str, ...]) -> list[str]:
    """Imports of a subpackage above the importer in *order* (or of one not in it)."""
    rank = {name: i for i, name in enumerate(order)}
    rank.update({name: len(order) for name in TOP})
    problems: list[str] = []
    for imp in imports(root, package):
        source, target = layer(imp.source, package), layer(imp.target, package)
        for name in (source, target):
            if name not in rank:
                problems.append(f"{imp}: {package}.{name} is not in the package order")
        if source in rank and target in rank and rank[target] > rank[source]:
            problems.append(f"{imp}: {target} stands above {source}")
    return sorted(set(problems))


def cycles(root: Path, package: str) -> list[list[str]]:
    """Every set of modules that import each other in a loop (Tarjan's algorithm)."""
    graph: dict[str, set[str]] = {m: set() for m in modules(root, package)}
    for imp in imports(root, package):
        if imp.target != imp.source:
            graph[imp.source].add(imp.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        # iterative DFS: (node, iterator over its successors)
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            for nxt in successors:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component: list[str] = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return sorted(found)


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_reaches(root: Path, package: str) -> list[str]:
    """Private names of one module used by another: imported, or read as an attribute."""
    known = modules(root, package)
    problems = [
        f"{imp}: {', '.join(n for n in imp.names if _private(n))}"
        for imp in imports(root, package)
        if imp.source != imp.target and any(_private(n) for n in imp.names)
    ]
    for module, path in known.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        aliases: dict[str, str] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name in known and alias.asname:
                        aliases[alias.asname] = alias.name
            elif isinstance(node, ast.ImportFrom):
                base = _absolute(module, path.name == "__init__.py", node)
                for alias in node.names:
                    if f"{base}.{alias.name}" in known:
                        aliases[alias.asname or alias.name] = f"{base}.{alias.name}"
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in aliases
                and aliases[node.value.id] != module
                and _private(node.attr)
            ):
                problems.append(
                    f"{module}:{node.lineno} reads {aliases[node.value.id]}.{node.attr}"
                )
    return sorted(problems)


def busy_inits(root: Path, package: str) -> list[str]:
    """Subpackage ``__init__.py`` files that import anything (they hold a docstring)."""
    problems: list[str] = []
    for module, path in modules(root, package).items():
        if path.name != "__init__.py" or module == package:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom) and not (
                isinstance(node, ast.ImportFrom) and node.module == "__future__"
            ):
                problems.append(f"{module}:{node.lineno} imports at package import time")
    return problems


def long_modules(root: Path, package: str, limit: int = MAX_LINES) -> list[str]:
    return [
        f"{module} has {count} lines"
        for module, path in modules(root, package).items()
        if (count := len(path.read_text(encoding="utf-8").splitlines())) > limit
    ]


# ------------------------------------------------------------------ the real package


def test_every_subpackage_imports_only_those_below_it() -> None:
    assert upward_imports(ROOT, "monorepo", ORDER) == []


def test_the_order_names_every_subpackage_once() -> None:
    layers = {layer(m, "monorepo") for m in modules(ROOT, "monorepo")}
    assert layers == set(ORDER) | set(TOP)
    assert len(ORDER) == len(set(ORDER))


def test_no_modules_import_each_other_in_a_loop() -> None:
    assert cycles(ROOT, "monorepo") == []


def test_no_module_reaches_into_another_modules_private_names() -> None:
    assert private_reaches(ROOT, "monorepo") == []


def test_subpackage_inits_import_nothing() -> None:
    assert busy_inits(ROOT, "monorepo") == []


def test_no_module_is_over_the_line_limit() -> None:
    assert long_modules(ROOT, "monorepo") == []


# ------------------------------------------- each rule fails when it is broken


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


@pytest.fixture
def toy(tmp_path: Path) -> Path:
    """A package ``toy`` with a ground floor ``low`` and an upper floor ``high``."""
    return _write(
        tmp_path,
        {
            "toy/__init__.py": '"""The public API."""\n',
            "toy/low/__init__.py": '"""Below."""\n',
            "toy/low/base.py": "VALUE = 1\n_SECRET = 2\n",
            "toy/high/__init__.py": '"""Above."""\n',
            "toy/high/top.py": "from toy.low.base import VALUE\n",
        },
    )


TOY_ORDER = ("low", "high")


def test_the_toy_package_passes(toy: Path) -> None:
    assert upward_imports(toy, "toy", TOY_ORDER) == []
    assert cycles(toy, "toy") == []
    assert private_reaches(toy, "toy") == []
    assert busy_inits(toy, "toy") == []


@pytest.mark.parametrize(
    ("code", "line"),
    [
        ("from toy.high.top import VALUE\n", 1),
        ("from toy.high import top\n", 1),
        ("import toy.high.top\n", 1),
        ("def later():\n    from ..high import top\n    return top\n", 2),
        (
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from toy.high.top import VALUE\n",
            3,
        ),
    ],
)
def test_an_upward_import_fails_the_order_check(toy: Path, code: str, line: int) -> None:
    _write(toy, {"toy/low/up.py": code})
    assert upward_imports(toy, "toy", TOY_ORDER) == [
        f"toy.low.up:{line} imports toy.high.top: high stands above low"
    ]


def test_a_subpackage_missing_from_the_order_fails(toy: Path) -> None:
    _write(toy, {"toy/side/__init__.py": "", "toy/side/x.py": "from toy.low.base import VALUE\n"})
    assert any(
        "toy.side is not in the package order" in p for p in upward_imports(toy, "toy", TOY_ORDER)
    )


def test_a_loop_inside_a_function_is_a_cycle(toy: Path) -> None:
    _write(toy, {"toy/low/other.py": "def f():\n    from toy.low import base\n"})
    _write(toy, {"toy/low/base.py": "def g():\n    from toy.low.other import f\n"})
    assert cycles(toy, "toy") == [["toy.low.base", "toy.low.other"]]


def test_private_names_of_another_module_fail(toy: Path) -> None:
    _write(
        toy,
        {
            "toy/high/a.py": "from toy.low.base import _SECRET\n",
            "toy/high/b.py": "from toy.low import base\nx = base._SECRET\n",
        },
    )
    assert private_reaches(toy, "toy") == [
        "toy.high.a:1 imports toy.low.base: _SECRET",
        "toy.high.b:2 reads toy.low.base._SECRET",
    ]


def test_an_init_that_imports_fails(toy: Path) -> None:
    _write(toy, {"toy/low/__init__.py": "from toy.low.base import VALUE\n"})
    assert busy_inits(toy, "toy") == ["toy.low:1 imports at package import time"]


def test_a_long_module_fails(toy: Path) -> None:
    _write(toy, {"toy/low/long.py": "x = 1\n" * 5})
    assert long_modules(toy, "toy", limit=4) == ["toy.low.long has 5 lines"]


# ------------------------------------------------------------- one definition each

#: Concepts the code once defined twice (issue "house"): each must have one home.
ONE_HOME = (
    "PrereleasePolicy",
    "Fetch",
    "normalize_index_url",
    "DEFAULT_BACKEND",
    "DEFAULT_REQUIRES",
    "tar_raw",
    "resolve_path",
    "read_workspace",
    "read_record",
    "record_text",
    "input_key",
    "source_identity",
    "read_build_system",
    "cache_root",
    "CacheDir",
)


def definitions(root: Path, package: str) -> dict[str, list[str]]:
    """Top-level name -> the modules that define it (def, class or assignment)."""
    found: dict[str, list[str]] = {}
    for module, path in modules(root, package).items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in tree.body:
            names: list[str] = []
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names = [node.name]
            elif isinstance(node, ast.Assign):
                names = [t.id for t in node.targets if isinstance(t, ast.Name)]
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                names = [node.target.id]
            for name in names:
                found.setdefault(name, []).append(module)
    return found


def test_each_concept_has_one_definition() -> None:
    defined = definitions(ROOT, "monorepo")
    twice = {name: defined[name] for name in ONE_HOME if len(defined.get(name, [])) > 1}
    assert twice == {}


def test_a_concept_defined_twice_fails(toy: Path) -> None:
    _write(toy, {"toy/high/again.py": "VALUE = 2\n"})
    assert definitions(toy, "toy")["VALUE"] == ["toy.high.again", "toy.low.base"]


# ------------------------------------------------------------------- the public face


def test_every_public_name_loads_from_its_home() -> None:
    import monorepo

    for name in monorepo.__all__:
        assert getattr(monorepo, name) is not None, name


def test_import_monorepo_and_the_version_stay_cheap() -> None:
    """``import monorepo`` loads its version and nothing else of the package; ``monorepo
    --version`` loads only the command line on top (the public names load on first use)."""
    import subprocess
    import sys

    code = (
        "import sys, monorepo\n"
        "print(sorted(m for m in sys.modules if m.startswith('monorepo')))\n"
        "from monorepo.cli import commands\n"
        "print(sorted(m for m in sys.modules if m.startswith('monorepo.')))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    first, cli = run.stdout.splitlines()
    assert first == str(["monorepo", "monorepo._core", "monorepo._core.version"])
    loaded = set(ast.literal_eval(cli))
    assert not {m for m in loaded if m.split(".")[1] not in ("_core", "cli")}, loaded
