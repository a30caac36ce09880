"""The package keeps the shape docs/architecture.md promises (imports read from the source)."""

from __future__ import annotations

import pytest

from tests.scripts import load_script

graph_tool = load_script("import_graph")

# Which wings each wing may import (docs/architecture.md); the core is open to every wing.
ALLOWED = {
    "data": set(),
    "models": {"data"},
    "eval": {"data"},
    "region": {"data"},
    "train": {"data", "models", "eval"},
    "cli": {"data", "models", "eval", "region", "train"},
}
METHOD = {"engine", "socioreasoner"}
CLI_PLUMBING = {"common", "model_options"}


@pytest.fixture(scope="module")
def graphs():
    package, others = graph_tool.source_files()
    return graph_tool.build(package), graph_tool.build(package + others)


def _wing(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ALLOWED else "core"


def test_no_import_circle_and_at_most_ten_levels(graphs):
    _, everything = graphs
    assert graph_tool.cycles(everything) == []
    depth = graph_tool.levels(everything)
    assert max(depth.values()) <= 10, graph_tool.chain(everything, depth, max(depth, key=depth.get))


def test_at_most_fourteen_modules_at_the_top():
    assert len(graph_tool.top_level_modules()) <= 14


def test_no_private_name_crosses_a_module_boundary(graphs):
    package, _ = graphs
    assert package.private == []


def test_wings_import_only_what_the_architecture_allows(graphs):
    package, _ = graphs
    wrong = []
    for module, deps in package.edges.items():
        wing = _wing(module)
        for dep in deps:
            target = _wing(dep)
            if wing == "core" and target in ("cli", "train", "eval", "region"):
                if module not in ("socioseg.demo", "socioseg"):  # the page and the API exports
                    wrong.append(f"{module} -> {dep}")
            elif wing != "core" and target not in ("core", wing) and target not in ALLOWED[wing]:
                wrong.append(f"{module} -> {dep}")
    assert wrong == []


def test_the_engine_imports_neither_its_users_nor_training(graphs):
    package, _ = graphs
    users = {m for m in package.edges if m.startswith(("socioseg.train", "socioseg.eval"))}
    assert not (package.edges["socioseg.engine"] & (users | {"socioseg.socioreasoner"}))


def test_command_groups_import_plumbing_not_each_other(graphs):
    package, _ = graphs
    groups = {m for m in package.edges if m.startswith("socioseg.cli.")}
    groups -= {f"socioseg.cli.{name}" for name in CLI_PLUMBING}
    crossing = [f"{m} -> {d}" for m in groups for d in package.edges[m] if d in groups]
    assert crossing == []


def test_the_graph_tool_sees_circles_levels_and_private_names(tmp_path, monkeypatch):
    """The checks above would pass on a tool that sees nothing: prove it sees each fault."""
    root = tmp_path / "src" / "socioseg"
    (root / "wing").mkdir(parents=True)
    files = {
        "__init__.py": "",
        "a.py": "from socioseg.b import thing\n",
        "b.py": "def f():\n    from socioseg.a import other\n",  # a lazy import closes a circle
        "c.py": "from socioseg.wing._hidden import x\nfrom socioseg.d import _secret\n",
        "d.py": "_secret = 1\n",
        "wing/__init__.py": "",
        "wing/_hidden.py": "x = 1\n",
        "wing/user.py": "from socioseg.wing._hidden import x\n",  # its own package: fine
    }
    for name, text in files.items():
        (root / name).write_text(text)
    monkeypatch.setattr(graph_tool, "PACKAGE", root)
    graph = graph_tool.build(sorted(root.rglob("*.py")))
    assert graph_tool.cycles(graph) == [["socioseg.a", "socioseg.b"]]
    assert graph.private == [
        "socioseg.c: socioseg.wing._hidden.x",
        "socioseg.c: socioseg.d._secret",
    ]
    eager = graph_tool.build(sorted(root.rglob("*.py")), lazy=False)
    assert graph_tool.cycles(eager) == []
    assert graph_tool.levels(eager)["socioseg.c"] == 2
