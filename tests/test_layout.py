"""The layout's import rules (harness/__init__.py): the rooms stand in one order, paper (ML only) <-
runs <- procedures <- execute <- claims <- the command line and the benchmarks, and every import
points down it, never up; the claims engine reaches the paper's ML only through the registries of
procedures and instruments; and no module imports, directly or through others, a module that
imports it (no import circle, inside a room or across rooms; an import inside a function counts)."""
import ast
from pathlib import Path

HARNESS = Path(__file__).resolve().parent.parent / "harness"


def _imports(path: Path, source: str | None = None) -> set:
    """Every harness module `path` (or `source`, as if it were there) imports, as dotted names
    (harness.paper.train, ...)."""
    package = ["harness", *path.parent.relative_to(HARNESS).parts]
    out = set()
    for node in ast.walk(ast.parse(path.read_text() if source is None else source)):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("harness")}
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            mod = ".".join(base + ([node.module] if node.module else []))
            if not mod.startswith("harness"):
                continue
            # `from harness.runs import keys` names a module; `from .train import X` a module's names
            for a in node.names:
                sub = f"{mod}.{a.name}"
                named = HARNESS.parent / sub.replace(".", "/")
                out.add(sub if named.with_suffix(".py").exists() or (named / "__init__.py").exists() else mod)
    return out


# The rooms, lowest first: a module may import its own room and the rooms below it.
ROOMS = ("paper", "runs", "procedures", "execute", "claims")
TOP = len(ROOMS)  # harness/__main__.py and harness/bench.py, above every room


def _room(module: str) -> int:
    """The rank of a dotted harness module's room (harness.runs.keys -> 1; harness -> TOP)."""
    parts = module.split(".")
    return ROOMS.index(parts[1]) if len(parts) > 1 and parts[1] in ROOMS else TOP


def _modules(room: str) -> dict:
    """Every module of a room, its subpackages' included (claims/kinds/), by path: its imports."""
    return {p.relative_to(HARNESS).as_posix(): _imports(p) for p in (HARNESS / room).rglob("*.py")}


def _all_modules() -> dict:
    """Every module of harness, as its path under harness/ -> (its room's rank, what it imports)."""
    out = {}
    for p in HARNESS.rglob("*.py"):
        rel = p.relative_to(HARNESS)
        rank = ROOMS.index(rel.parts[0]) if len(rel.parts) > 1 else TOP
        out[str(rel)] = (rank, _imports(p))
    return out


def _graph() -> dict:
    """Every harness module, as a dotted name (a package as its own: harness.procedures), -> the
    harness modules it imports."""
    out = {}
    for p in HARNESS.rglob("*.py"):
        parts = p.relative_to(HARNESS.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = _imports(p)
    return out


def _circles(graph: dict) -> list:
    """The import circles of `graph` (module -> the modules it imports): each group of modules that
    reach one another through imports, as a sorted list."""
    def reachable(start):
        seen, todo = set(), list(graph.get(start, ()))
        while todo:
            m = todo.pop()
            if m not in seen:
                seen.add(m)
                todo.extend(graph.get(m, ()))
        return seen

    reach = {m: reachable(m) for m in graph}
    return sorted({tuple(sorted(n for n in reach[m] if m in reach.get(n, ()))) for m in graph if m in reach[m]})


def test_every_room_is_known_and_every_module_in_one():
    rooms = {p.name for p in HARNESS.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert rooms == set(ROOMS), rooms


def test_no_module_imports_a_room_above_its_own():
    for name, (rank, imports) in _all_modules().items():
        above = {m for m in imports if _room(m) > rank}
        assert not above, (name, ROOMS[rank] if rank < TOP else "top", above)


def test_the_engine_reaches_the_paper_only_through_the_registries():
    for name, imports in _modules("claims").items():
        assert not any(m.startswith("harness.paper") for m in imports), (name, imports)


def test_the_papers_ml_modules_import_no_other_room():
    for name, imports in _modules("paper").items():
        assert all(m.startswith("harness.paper") for m in imports), (name, imports)


def test_no_import_circle():
    assert _circles(_graph()) == []


def test_no_module_is_over_400_lines():
    """A module a newcomer can read end to end: one job, at most about 400 lines (issue 46)."""
    long = {str(p.relative_to(HARNESS)): n for p in HARNESS.rglob("*.py") if (n := len(p.read_text().splitlines())) > 400}
    assert not long, long


def test_the_circle_check_catches_a_circle():
    """The checker itself: two modules importing each other (train.py and measure.py did, before
    issue 46), through a third too; a module that only imports them is in no circle."""
    graph = {"a": {"b"}, "b": {"a"}, "c": {"a", "d"}, "d": {"e"}, "e": {"c"}, "f": {"a"}}
    assert _circles(graph) == [("a", "b"), ("c", "d", "e")]


def test_the_rule_catches_an_arrow_up():
    """The checker itself: a runs module importing the procedures is an arrow up."""
    imports = _imports(HARNESS / "runs" / "probe.py", "from ..procedures import rows\nfrom . import keys\n")
    assert imports == {"harness.procedures", "harness.runs.keys"}
    assert {m for m in imports if _room(m) > ROOMS.index("runs")} == {"harness.procedures"}


def test_every_package_says_what_it_owns_and_may_import():
    for room in ROOMS:
        doc = ast.get_docstring(ast.parse((HARNESS / room / "__init__.py").read_text()))
        assert doc and "May import" in doc, room
