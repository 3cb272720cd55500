"""The layout's import rules (harness/__init__.py): the claims engine reaches the paper's ML only
through the registry of procedures and never the other way round; the paper's ML modules import
nothing else of harness; runs never import the engine."""
import ast
from pathlib import Path

HARNESS = Path(__file__).resolve().parent.parent / "harness"


def _imports(path: Path) -> set:
    """Every harness module `path` imports, as dotted names (harness.paper.train, ...)."""
    package = ["harness", *path.parent.relative_to(HARNESS).parts]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("harness")}
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            mod = ".".join(base + ([node.module] if node.module else []))
            if not mod.startswith("harness"):
                continue
            # `from harness.paper import procedures` names a module; `from .train import X` a module's names
            for a in node.names:
                sub = f"{mod}.{a.name}"
                out.add(sub if (HARNESS.parent / (sub.replace(".", "/") + ".py")).exists() else mod)
    return out


def _modules(room: str) -> dict:
    """Every module of a room, its subpackages' included (claims/kinds/), by path: its imports."""
    return {p.relative_to(HARNESS).as_posix(): _imports(p) for p in (HARNESS / room).rglob("*.py")}


def test_the_engine_reaches_the_paper_only_through_the_registry():
    for name, imports in _modules("claims").items():
        paper = {m for m in imports if m.startswith("harness.paper")}
        assert paper <= {"harness.paper.procedures"}, (name, paper)


def test_the_papers_ml_modules_import_no_other_room():
    for name, imports in _modules("paper").items():
        if name != "paper/procedures.py":
            assert all(m.startswith("harness.paper") for m in imports), (name, imports)


def test_runs_never_import_the_engine():
    for name, imports in {**_modules("runs"), **_modules("paper")}.items():
        assert not any(m.startswith("harness.claims") for m in imports), (name, imports)


def test_every_package_says_what_it_owns_and_may_import():
    for room in ("claims", "paper", "runs"):
        doc = ast.get_docstring(ast.parse((HARNESS / room / "__init__.py").read_text()))
        assert doc and "May import" in doc, room
