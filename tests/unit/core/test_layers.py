"""The packages import one way (core ← server, core ← trainer ← client), and no module imports one that imports
it back, lazily inside a function or not (imports under ``if TYPE_CHECKING:`` are types only and do not count)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
PACKAGES = {"activedpo_core": "core", "activedpo_server": "server", "activedpo_trainer": "trainer",
            "activedpo_client": "client"}  # fmt: skip
# what each package may import of the others
MAY_IMPORT = {
    "activedpo_core": set(),
    "activedpo_trainer": {"activedpo_core"},
    "activedpo_server": {"activedpo_core"},
    "activedpo_client": {"activedpo_core", "activedpo_trainer"},
}
# the exceptions, each with its reason
ALLOWED = {
    ("activedpo_server.check", "activedpo_trainer"): "the GPU host check trains a DPO round on the toy world",
    ("activedpo_client.bench.arms", "activedpo_server"): "the benchmark reads the research strategies' registry",
    ("activedpo_client.cli.reference", "activedpo_server"): "the CLI reference documents both programs",
}


def _modules() -> dict[str, Path]:
    out = {}
    for package, folder in PACKAGES.items():
        base = ROOT / folder / package
        for path in base.rglob("*.py"):
            parts = path.relative_to(base).with_suffix("").parts
            name = ".".join((package, *parts)).removesuffix(".__init__")
            out[name] = path
    return out


def _imports(path: Path, modules: set[str]) -> set[str]:
    tree = ast.parse(path.read_text())
    typing_only = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            typing_only |= {id(n) for b in node.body for n in ast.walk(b)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for n in names:
            while n and n not in modules:
                n = n.rpartition(".")[0]
            if n:
                found.add(n)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {m: _imports(p, set(modules)) - {m} for m, p in modules.items()}


def test_packages_import_one_way():
    wrong = []
    for module, deps in _graph().items():
        own = module.split(".")[0]
        for dep in deps:
            pkg = dep.split(".")[0]
            if pkg != own and pkg not in MAY_IMPORT[own] and (module, pkg) not in ALLOWED:
                wrong.append(f"{module} imports {dep}")
    assert wrong == []


def test_no_module_imports_one_that_imports_it_back():
    graph = _graph()
    seen, stack, cycles = set(), [], []

    def visit(m):
        if m in stack:
            cycles.append([*stack[stack.index(m) :], m])
            return
        if m in seen:
            return
        seen.add(m)
        stack.append(m)
        for d in sorted(graph.get(m, ())):
            visit(d)
        stack.pop()

    for m in sorted(graph):
        visit(m)
    assert cycles == []


def test_a_module_over_400_lines_says_why_at_its_top():
    long = {}
    for name, path in _modules().items():
        text = path.read_text()
        if text.count("\n") > 400:
            doc = ast.get_docstring(ast.parse(text)) or ""
            long[name] = "Why one module of this length" in doc
    assert [n for n, says in long.items() if not says] == []
