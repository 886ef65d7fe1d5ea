"""The tree shows the pipeline, and the README's "Layout" table says what may import what: this keeps
the table, the tree and every import in the package equal, so none of them drifts from the others."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.tools import REPO

PACKAGE = REPO / "daemon" / "runwatch"
README = (REPO / "README.md").read_text()
#: Top-level modules allowed beside the packages (the issue that set the layout: at most 14).
MAX_TOP_LEVEL = 14
#: Top-level modules that are not basics: they sit above the packages they name.
ABOVE = {"config": {"sources", "pipeline", "delivery"}, "__main__": {"commands"}}


def layout_section() -> str:
    start = README.index("\n## Layout\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end != -1 else len(README)]


def table() -> dict[str, tuple[set[str], set[str]]]:
    """package -> (its modules, what it may import), read off the README's table."""
    rows: dict[str, tuple[set[str], set[str]]] = {}
    for line in layout_section().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 4 or not re.fullmatch(r"`\w+/`", cells[0]):
            continue
        modules = set(re.findall(r"`(\w+)`", cells[2]))
        allowed = set(re.findall(r"`(\w+)`", cells[3])) | ({"*"} if cells[3] == "everything" else set())
        rows[cells[0].strip("`/")] = (modules, allowed)
    return rows


def packages() -> dict[str, set[str]]:
    return {
        d.name: {p.stem for p in d.glob("*.py") if p.stem != "__init__"}
        for d in PACKAGE.iterdir()
        if (d / "__init__.py").exists()
    }


def basics_paragraph() -> set[str]:
    text = layout_section()
    para = text[text.index("The basics, beside the packages:") :].split("\n\n")[0]
    return set(re.findall(r"`([a-z_]+)`", para)) - set(packages())


def top_level() -> set[str]:
    return {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}


def runwatch_imports(path: Path) -> set[str]:
    """Every ``runwatch`` module this file imports, anywhere in it (lazy and TYPE_CHECKING ones too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "runwatch":
            found.update(imported(node))
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "runwatch")
    return found


def is_module(dotted: str) -> bool:
    path = PACKAGE.parent.joinpath(*dotted.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def imported(node: ast.ImportFrom) -> set[str]:
    """``from runwatch.x import y``: ``runwatch.x.y`` when y is a module, else ``runwatch.x``."""
    assert node.module is not None
    subs = {f"{node.module}.{a.name}" for a in node.names if is_module(f"{node.module}.{a.name}")}
    return subs | ({node.module} if len(subs) < len(node.names) else set())


def where(module: str) -> str:
    """The package a ``runwatch.x[.y]`` module belongs to, or the top-level module's own name."""
    parts = module.split(".")
    if len(parts) == 1:
        return "__init__"
    return parts[1]


def test_the_readme_table_lists_every_package_with_its_modules() -> None:
    rows = table()
    assert set(rows) == set(packages()), "README Layout table vs daemon/runwatch/*/__init__.py"
    for name, modules in packages().items():
        assert rows[name][0] == modules, f"README Layout row {name}/ vs the files in it"


def test_the_readme_names_every_top_level_module_and_there_are_few() -> None:
    assert basics_paragraph() == top_level()
    assert len(top_level()) + 1 <= MAX_TOP_LEVEL  # + __init__.py


@pytest.mark.parametrize("package", sorted(packages()))
def test_every_package_says_what_it_is_for_and_what_it_offers(package: str) -> None:
    init = ast.parse((PACKAGE / package / "__init__.py").read_text())
    assert ast.get_docstring(init), f"{package}/__init__.py has no docstring"
    assigned = [t for n in init.body if isinstance(n, ast.Assign) for t in n.targets]
    names = {t.id for t in assigned if isinstance(t, ast.Name)}
    assert "__all__" in names, f"{package}/__init__.py has no __all__"


def test_every_import_goes_where_the_table_allows() -> None:
    rows = table()
    tops = top_level()
    basics = tops - set(ABOVE)
    wrong: list[str] = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE)
        own = rel.parts[0] if len(rel.parts) > 1 else rel.stem
        if own in rows:
            allowed = rows[own][1]
            ok = {own, *basics, "__init__"} | allowed if "*" not in allowed else None
        else:
            ok = {own, *(basics - {own}), "__init__", *ABOVE.get(own, set())}
            if own in basics:
                ok -= set(rows)
        for module in runwatch_imports(path):
            target = where(module)
            if ok is not None and target not in ok:
                wrong.append(f"{rel} imports {module}")
    assert not wrong, "imports the README's Layout table does not allow:\n" + "\n".join(sorted(wrong))


def test_no_module_imports_itself_round_a_circle() -> None:
    """Module-level imports only (what runs at import time); TYPE_CHECKING blocks are left out too."""
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        name = ".".join(rel.parts).removesuffix(".__init__")
        deps: set[str] = set()
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("runwatch"):
                deps.update(imported(node))
        graph[name] = deps
    seen: dict[str, int] = {}
    cycles: list[str] = []

    def visit(node: str, stack: list[str]) -> None:
        seen[node] = 1
        for dep in graph.get(node, ()):
            if seen.get(dep) == 1:
                cycles.append(" -> ".join([*stack[stack.index(dep) :], dep]))
            elif dep not in seen:
                visit(dep, [*stack, dep])
        seen[node] = 2

    for name in sorted(graph):
        if name not in seen:
            visit(name, [name])
    assert not cycles, "\n".join(cycles)


def test_tests_follow_the_tree() -> None:
    folders = {d.name for d in (REPO / "tests").iterdir() if d.is_dir() and list(d.glob("test_*.py"))}
    assert folders <= set(packages()), "every tests/ folder mirrors a package of daemon/runwatch/"
    for folder in folders:
        for test in (REPO / "tests" / folder).glob("test_*.py"):
            assert test.read_text().lstrip().startswith('"""'), f"{test} says what it tests"
