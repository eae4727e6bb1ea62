"""The module graph: no import circles (counting imports inside functions too: a lazy import
is still an arrow), no arrow from a lower layer up to a higher one, and the index package
entered only through its door (`jinaloc/index/__init__.py`)."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "jinaloc"

# Lower layers first: a module may import from its own layer or those before it.
LAYERS = [
    {
        "errors",
        "paths",
        "net",
        "textsafe",
        "defaults",
        "notes",
        "vectors",
        "registry",
        "hub",
        "output",
    },
    {"backends", "embedder", "load", "reranker", "records", "reader", "walk", "chunking", "inputs"},
    {"index"},
    {"pipelines", "watch", "plot"},
    {"server"},
    {"cli", "entry", "__main__"},
]


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_only(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The jinaloc modules `path` imports anywhere (not under `if TYPE_CHECKING:`)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = {
        id(n)
        for top in ast.walk(tree)
        if isinstance(top, ast.If) and _type_checking_only(top)
        for n in ast.walk(top)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("jinaloc")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            if not base.startswith("jinaloc"):
                continue
            for alias in node.names:  # `from . import x` may name a module
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in modules else base)
    return {m for m in found if m in modules and m != name}


def _graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {_module_name(p) for p in paths}
    return {_module_name(p): _imports(p, modules) for p in paths}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            part = []
            while True:
                w = stack.pop()
                on.discard(w)
                part.append(w)
                if w == v:
                    break
            if len(part) > 1:
                out.append(sorted(part))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def _layer(module: str) -> int | None:
    top = module.split(".")[1] if "." in module else ""
    return next((i for i, names in enumerate(LAYERS) if top in names), None)


def test_the_graph_is_read():
    graph = _graph()
    assert "jinaloc.index.session" in graph["jinaloc.index"] or graph["jinaloc.index"] == set()
    assert "jinaloc.index.store" in graph["jinaloc.index.session"]
    assert "jinaloc.errors" in graph["jinaloc.index.store"]


def test_no_import_circles():
    assert _cycles(_graph()) == []


def test_a_circle_would_be_found():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_every_module_has_a_layer():
    assert [m for m in _graph() if m != "jinaloc" and _layer(m) is None] == []


def test_no_arrow_runs_back_up():
    up = [
        (m, t)
        for m, targets in _graph().items()
        for t in targets
        if m != "jinaloc" and t != "jinaloc" and _layer(t) > _layer(m)
    ]
    assert up == []


def test_nothing_outside_the_index_package_imports_its_insides():
    inside = [
        (m, t)
        for m, targets in _graph().items()
        if not m.startswith("jinaloc.index")
        for t in targets
        if t.startswith("jinaloc.index.")
    ]
    assert inside == []
