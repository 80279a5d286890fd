"""The package's import graph (module-level and function-level imports alike) has no circle: each layer only
looks down."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "medrun"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The medrun modules `path` imports anywhere in its body (`from medrun.x import y` counts medrun.x.y when
    that is a module, else medrun.x)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in modules}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module in modules:
            found |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                      for a in node.names}
    return found


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == "open":
                return stack[stack.index(n):] + [n]
            if n not in state and (found := visit(n)):
                return found
        stack.pop()
        state[m] = "done"
        return None

    return next((c for m in sorted(graph) if m not in state and (c := visit(m))), None)


def test_the_import_graph_has_no_circle():
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {m: imports_of(p, set(files)) - {m} for m, p in files.items()}
    # a package's __init__ re-exporting its modules is no circle: importing a submodule runs its package first
    graph = {m: {n for n in deps if not (m == n.rsplit(".", 1)[0] or n == m.rsplit(".", 1)[0])} for m, deps in graph.items()}
    assert cycle({"a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]  # the check finds a circle when there is one
    assert cycle(graph) is None, " -> ".join(cycle(graph))
