"""tools/import_graph.py: the import graph and its checks, on small packages and on the real tree."""

import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("import_graph", ROOT / "tools" / "import_graph.py")
import_graph = importlib.util.module_from_spec(_spec)
sys.modules["import_graph"] = import_graph  # dataclasses look their module up there
_spec.loader.exec_module(import_graph)


def write(root: Path, files: dict[str, str]) -> Path:
    """Each relative path -> source under root, with empty __init__.py files in every new folder."""
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        for folder in path.relative_to(root).parents:
            init = root / folder / "__init__.py"
            if folder != Path(".") and not init.exists() and init != path:
                init.write_text("")
        path.write_text(text)
    return root


def graph_of(root: Path, *packages: str):
    return import_graph.build_graph(root, packages or ("pkg",))


def test_cycle_through_a_function_level_import_is_found(tmp_path):
    write(
        tmp_path,
        {
            "pkg/a.py": "import pkg.b\n",
            "pkg/b.py": "def load():\n    from pkg.a import thing\n    return thing\n",
            "pkg/c.py": "from pkg import b\n",
        },
    )
    graph = graph_of(tmp_path)
    assert graph.edges["pkg.b"] == {"pkg.a"}
    assert import_graph.cycles(graph) == [["pkg.a", "pkg.b"]]
    assert import_graph.main(["--root", str(tmp_path), "--packages", "pkg", "--check"]) == 1


def test_a_self_import_is_a_cycle(tmp_path):
    write(tmp_path, {"pkg/a.py": "def f():\n    import pkg.a\n"})
    assert import_graph.cycles(graph_of(tmp_path)) == [["pkg.a"]]


def test_type_checking_imports_are_ignored(tmp_path):
    write(
        tmp_path,
        {
            "pkg/a.py": "import pkg.b\n",
            "pkg/b.py": (
                "import typing\nfrom typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n    from pkg.a import A\n"
                "if typing.TYPE_CHECKING:\n    import pkg.a\n"
                "else:\n    import pkg.c\n"
            ),
            "pkg/c.py": "",
        },
    )
    graph = graph_of(tmp_path)
    assert graph.edges["pkg.b"] == {"pkg.c"}  # the else branch runs, the TYPE_CHECKING bodies do not
    assert import_graph.cycles(graph) == []
    assert import_graph.main(["--root", str(tmp_path), "--packages", "pkg", "--check"]) == 0


def test_relative_imports_are_resolved(tmp_path):
    write(
        tmp_path,
        {
            "pkg/a.py": "X = 1\n",
            "pkg/sub/__init__.py": "from .d import Y\n",
            "pkg/sub/c.py": "from ..a import X\nfrom . import d\nfrom .. import a as again\n",
            "pkg/sub/d.py": "Y = 2\n",
        },
    )
    graph = graph_of(tmp_path)
    assert graph.edges["pkg.sub.c"] == {"pkg.a", "pkg.sub.d"}
    assert graph.edges["pkg.sub"] == {"pkg.sub.d"}


def test_lazy_package_names_and_import_module_literals(tmp_path):
    write(
        tmp_path,
        {
            "pkg/lazy/__init__.py": (
                "import importlib\n"
                '_LAZY = {"Model": "pkg.lazy.model"}\n'
                "def __getattr__(name):\n"
                "    return getattr(importlib.import_module(_LAZY[name]), name)\n"
            ),
            "pkg/lazy/model.py": "class Model: ...\n",
            "pkg/user.py": "from pkg.lazy import Model\n",
            "pkg/plugin.py": 'import importlib\nmod = importlib.import_module("pkg.lazy.model")\n',
        },
    )
    graph = graph_of(tmp_path)
    assert graph.edges["pkg.lazy"] == set()  # the package imports nothing until a name is asked for
    assert graph.edges["pkg.user"] == {"pkg.lazy.model"}
    assert graph.edges["pkg.plugin"] == {"pkg.lazy.model"}


def test_a_file_over_the_limit_is_reported(tmp_path):
    write(tmp_path, {"pkg/long.py": "x = 1\n" * 451, "pkg/ok.py": "x = 1\n" * 450})
    graph = graph_of(tmp_path)
    assert import_graph.long_files(graph) == [("pkg/long.py", 451)]
    assert import_graph.check(graph) == ["over 450 lines: pkg/long.py (451 lines)"]


def test_imports_against_the_direction_are_reported(tmp_path):
    write(
        tmp_path,
        {
            "flanmoe/lib.py": "def f():\n    import stages.run\n",
            "stages/run.py": "import flanmoe.lib\nimport pipelines.flow\n",
            "pipelines/flow.py": "import stages.run\n",
        },
    )
    graph = graph_of(tmp_path, "flanmoe", "stages", "pipelines")
    assert import_graph.wrong_direction(graph) == [
        ("flanmoe.lib", "stages.run"),
        ("stages.run", "pipelines.flow"),
    ]


def test_mermaid_groups_modules_by_folder_and_splice_replaces_between_markers(tmp_path):
    write(tmp_path, {"pkg/a.py": "import pkg.sub.b\n", "pkg/sub/b.py": ""})
    graph = graph_of(tmp_path)
    drawing = import_graph.mermaid(graph)
    assert 'subgraph pkg_sub__group["pkg/sub/"]' in drawing
    assert "pkg_a --> pkg_sub_b" in drawing
    assert import_graph.mermaid(graph, "package").splitlines()[-1] == "    pkg --> pkg_sub"
    doc = "intro\n<!-- BEGIN import-graph -->\nold\n<!-- END import-graph -->\nrest\n"
    new = import_graph.splice(doc, "import-graph", "NEW")
    assert new.startswith("intro\n<!-- BEGIN import-graph -->\n") and new.endswith(
        "NEW\n<!-- END import-graph -->\nrest\n"
    )
    assert "old" not in new


def test_real_tree_has_no_cycle_no_long_file_and_one_way_imports():
    result = subprocess.run(
        [sys.executable, "tools/import_graph.py", "--check"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout
