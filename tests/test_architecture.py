"""The layers, read from the source: every import (inside functions too, and `importlib.import_module("...")` with a
literal name) between edgedistill's modules.

    orchestration  edgedistill.cli, edgedistill.pipeline         may import anything below
    stages         edgedistill.{teacher,student,export,serve,evals}   import the kernel, never each other
    kernel         every other edgedistill module                 imports no stage and no orchestration

and no import circle anywhere; the kernel holds nothing that only one stage uses (it would belong in that stage);
the OpenAI-compatible API answers through serve.answering, never through the page's module. `python tests/test_architecture.py` prints the graph's circles and upward edges.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
STAGES = ("teacher", "student", "export", "serve", "evals")
ORCHESTRATION = ("edgedistill.cli", "edgedistill.pipeline")


def module_files(root: Path = ROOT) -> dict[str, Path]:
    """Module name -> file, for the kernel (edgedistill/) and the stages (installed as edgedistill.<stage>)."""
    found = {}
    for top, prefix in [("edgedistill", "edgedistill"), *[(stage, f"edgedistill.{stage}") for stage in STAGES]]:
        for path in sorted((root / top).rglob("*.py")):
            parts = list(path.relative_to(root / top).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([prefix, *parts])] = path
    return found


def canonical(name: str) -> str:
    """A stage imported by its folder name (`teacher.distill`) is the same module as `edgedistill.teacher...`."""
    head = name.split(".")[0]
    return f"edgedistill.{name}" if head in STAGES else name


def imports_of(path: Path, module: str, known: set[str]) -> set[str]:
    """The edgedistill modules `path` imports, anywhere in the file, resolved to the longest known module name."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
            names.update(f"{base}.{alias.name}" for alias in node.names)
            names.add(base)
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "import_module" and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)):
            names.add(node.args[0].value)
    resolved = set()
    for name in map(canonical, names):
        parts = name.split(".")
        for end in range(len(parts), 0, -1):
            if ".".join(parts[:end]) in known:
                resolved.add(".".join(parts[:end]))
                break
    return resolved - {module}


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    files = module_files(root)
    return {module: imports_of(path, module, set(files)) for module, path in files.items()}


def layer(module: str) -> str:
    if module in ORCHESTRATION:
        return "orchestration"
    parts = module.split(".")
    return f"stage:{parts[1]}" if len(parts) > 1 and parts[1] in STAGES else "kernel"


def upward_edges(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """Edges that break the layers: the kernel importing a stage or orchestration, a stage another stage or
    orchestration."""
    bad = []
    for module, targets in graph.items():
        for target in targets:
            source, dest = layer(module), layer(target)
            if dest == "orchestration" and source != "orchestration":
                bad.append((module, target))
            elif source == "kernel" and dest.startswith("stage:"):
                bad.append((module, target))
            elif source.startswith("stage:") and dest.startswith("stage:") and source != dest:
                bad.append((module, target))
    return sorted(bad)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted: the import circles."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10000))
    for node in graph:
        if node not in index:
            visit(node)
    return sorted(found)


def users(graph: dict[str, set[str]], module: str) -> set[str]:
    """The layers outside the kernel that reach `module` through kernel modules only (orchestration or stage:x)."""
    importers = {source for source, targets in graph.items() if module in targets}
    found, seen, todo = set(), {module}, list(importers)
    while todo:
        source = todo.pop()
        if source in seen:
            continue
        seen.add(source)
        if layer(source) == "kernel":
            todo.extend(s for s, targets in graph.items() if source in targets)
        else:
            found.add(layer(source))
    return found


def single_stage_kernel_modules(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """Kernel modules every user of which is one stage: (module, that stage)."""
    return sorted((module, next(iter(reached))) for module in graph if layer(module) == "kernel"
                  and len(reached := users(graph, module)) == 1 and next(iter(reached)).startswith("stage:"))


def test_no_import_circle():
    assert cycles(import_graph()) == []


def test_no_upward_or_sideways_import():
    assert upward_edges(import_graph()) == []


def test_the_kernel_holds_nothing_only_one_stage_uses():
    assert single_stage_kernel_modules(import_graph()) == []


def test_the_api_answers_through_the_answering_module_not_the_page():
    graph = import_graph()
    reached, todo = set(), ["edgedistill.serve.api"]
    while todo:
        for target in graph[todo.pop()] - reached:
            reached.add(target)
            todo.append(target)
    assert "edgedistill.serve.answering" in reached and "edgedistill.serve.app" not in reached


def test_the_checks_fail_on_a_planted_circle_and_upward_edge(tmp_path):
    """The test is only worth its pass if it can fail: a copy of the tree with a circle and an upward edge."""
    for top in ("edgedistill", *STAGES):
        (tmp_path / top).mkdir()
    (tmp_path / "edgedistill" / "__init__.py").write_text("")
    (tmp_path / "edgedistill" / "a.py").write_text("def f():\n    from edgedistill import b\n")
    (tmp_path / "edgedistill" / "b.py").write_text("import importlib\nimportlib.import_module('edgedistill.a')\n")
    (tmp_path / "edgedistill" / "c.py").write_text("from teacher.distill import run\n")
    (tmp_path / "teacher" / "distill.py").write_text("from ..student import loop\n")
    (tmp_path / "teacher" / "__init__.py").write_text("")
    (tmp_path / "student" / "__init__.py").write_text("")
    (tmp_path / "student" / "loop.py").write_text("from edgedistill.pipeline import run\n")
    (tmp_path / "edgedistill" / "pipeline.py").write_text("")
    (tmp_path / "edgedistill" / "only_teacher.py").write_text("")
    (tmp_path / "edgedistill" / "shared.py").write_text("from edgedistill import only_teacher\n")
    (tmp_path / "teacher" / "uses.py").write_text("from edgedistill import shared\n")
    (tmp_path / "student" / "uses.py").write_text("from edgedistill import only_teacher\n")
    (tmp_path / "edgedistill" / "only_student.py").write_text("")
    (tmp_path / "student" / "more.py").write_text("from edgedistill import only_student\n")
    graph = import_graph(tmp_path)
    assert single_stage_kernel_modules(graph) == [("edgedistill.only_student", "stage:student"),
                                                  ("edgedistill.shared", "stage:teacher")]
    assert cycles(graph) == [["edgedistill.a", "edgedistill.b"]]
    assert upward_edges(graph) == [("edgedistill.c", "edgedistill.teacher.distill"),
                                   ("edgedistill.student.loop", "edgedistill.pipeline"),
                                   ("edgedistill.teacher.distill", "edgedistill.student"),
                                   ("edgedistill.teacher.distill", "edgedistill.student.loop")]


if __name__ == "__main__":
    graph = import_graph()
    print(f"{len(graph)} modules, {sum(len(t) for t in graph.values())} import edges")
    for circle in cycles(graph):
        print("circle:", " <-> ".join(circle))
    for source, target in upward_edges(graph):
        print(f"upward: {source} ({layer(source)}) -> {target} ({layer(target)})")
