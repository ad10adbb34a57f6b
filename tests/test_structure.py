"""The structure docs/architecture.md promises: no import cycles between modules, and the loop and
session use backends and policies only through their declared interfaces (no probing)."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# installed names -> folders (pyproject's package-dir)
PACKAGES = {"rgft_edge": ROOT / "rgft_edge", "rgft_edge.export": ROOT / "export",
            "rgft_edge.device_runners": ROOT / "device_runners"}


def modules() -> dict[str, Path]:
    found = {}
    for pkg, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            rel = path.relative_to(folder).with_suffix("").parts
            name = ".".join((pkg, *rel))
            found[name.removesuffix(".__init__")] = path
    return found


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    is_pkg = path.name == "__init__.py"
    base = name.split(".") if is_pkg else name.split(".")[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            stem = ".".join(base[: len(base) - node.level + 1]) if node.level else ""
            mod = ".".join(x for x in (stem, node.module or "") if x)
            targets = [mod] + [f"{mod}.{a.name}" for a in node.names]
        for t in targets:
            if t in known and t != name:
                out.add(t)
    return out


def test_no_module_imports_a_module_that_imports_it_back():
    mods = modules()
    graph = {m: imports_of(m, p, set(mods)) for m, p in mods.items()}
    # A package's __init__ re-exporting its own submodules is not a cycle of meaning.
    graph = {m: {t for t in ts if not t.startswith(m + ".")} for m, ts in graph.items()}
    state, cycles = {}, []

    def visit(m, stack):
        state[m] = "open"
        for t in graph[m]:
            if state.get(t) == "open":
                cycles.append(stack[stack.index(t):] + [t])
            elif t not in state:
                visit(t, stack + [t])
        state[m] = "done"

    for m in graph:
        if m not in state:
            visit(m, [m])
    assert cycles == [], cycles


def test_loop_and_session_use_declared_interfaces_only():
    for path in (ROOT / "rgft_edge" / "loop.py", ROOT / "rgft_edge" / "session.py"):
        text = path.read_text()
        assert not re.search(r"(getattr|hasattr)\((self\.)?(backend|policy)\b", text), path


def test_no_method_is_patched_onto_a_class_after_its_body():
    for folder in PACKAGES.values():
        for path in folder.rglob("*.py"):
            tree = ast.parse(path.read_text())
            classes = {n.name for n in tree.body if isinstance(n, ast.ClassDef)}
            for node in tree.body:
                if isinstance(node, ast.Assign):
                    for t in node.targets:
                        assert not (isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name)
                                    and t.value.id in classes), f"{path}: {t.value.id}.{t.attr} patched"
