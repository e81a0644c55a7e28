"""The stage graph, from DVC: dvc.yaml's pipeline stages in the order `dvc repro` runs them, each with
its direct upstream stages, and the subset a list of targets needs."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path


@contextlib.contextmanager
def cwd(path: Path) -> Iterator[None]:
    """Work in ``path`` (DVC names stages relative to the working directory, MLflow's default store is
    ./mlruns.db)."""
    old = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def stage_graph(repo: str | Path = ".") -> dict[str, list[str]]:
    """The pipeline stages of ``repo`` (expanded names such as ``pretrain@switch``) in a topological
    order (dvc.yaml order where the DAG allows), each with its direct upstream stages.

    Read from DVC's own index, so it is exactly the DAG `dvc repro` runs.
    """
    import networkx as nx
    from dvc.repo import Repo
    from dvc.stage import PipelineStage

    with cwd(Path(repo).resolve()), Repo(".") as dvc_repo:  # names relative to the repo root
        index = dvc_repo.index
        graph = index.graph  # an edge goes from a stage to a stage it depends on
        position = {stage: i for i, stage in enumerate(index.stages)}
        order = nx.lexicographical_topological_sort(
            graph.reverse(copy=True), key=lambda s: (position.get(s, len(position)), s.addressing)
        )
        result: dict[str, list[str]] = {}
        for stage in order:
            if not isinstance(stage, PipelineStage):
                continue  # `dvc add`/import .dvc files: data sources, not run by `repro --single-item`
            upstream: list[str] = []
            todo = list(graph.successors(stage))
            seen = set()
            while todo:  # nearest pipeline stages, through any .dvc data sources in between
                node = todo.pop()
                if node in seen:
                    continue
                seen.add(node)
                if isinstance(node, PipelineStage):
                    upstream.append(node.addressing)
                else:
                    todo.extend(graph.successors(node))
            result[stage.addressing] = sorted(upstream, key=list(result).index)
        return result


def select_stages(graph: Mapping[str, list[str]], targets: list[str] | None) -> dict[str, list[str]]:
    """The stages `dvc repro TARGET...` would consider: each target (a stage name, or a foreach/matrix
    name such as ``pretrain`` for every ``pretrain@...``) with all its upstream stages, in ``graph``'s
    order. ``ValueError`` names a target that matches no stage."""
    if not targets:
        return dict(graph)
    wanted: set[str] = set()
    for target in targets:
        matched = [s for s in graph if s == target or s.split("@", 1)[0] == target]
        if not matched:
            raise ValueError(f"targets: no stage {target!r} in dvc.yaml; stages: {', '.join(graph)}")
        todo = list(matched)
        while todo:
            stage = todo.pop()
            if stage not in wanted:
                wanted.add(stage)
                todo.extend(graph[stage])
    return {s: ups for s, ups in graph.items() if s in wanted}


def missing_params(repo: str | Path = ".") -> list[str]:
    """``"<stage>: <key>"`` for every params.yaml key a stage of dvc.yaml names that params.yaml lacks
    (DVC would stop at that stage; ``make run`` says so first, naming every one). Read with YAML alone:
    no DVC import."""
    import yaml

    root = Path(repo)
    stages = (yaml.safe_load((root / "dvc.yaml").read_text()) or {}).get("stages", {})
    data = yaml.safe_load((root / "params.yaml").read_text()) if (root / "params.yaml").is_file() else {}
    out = []
    for name, spec in stages.items():
        if name.endswith("_extra") and name.removesuffix("_extra") in stages:
            continue  # base.extra_seeds' stages merge their base stage's params: named once, there
        for key in (spec or {}).get("params", []):
            if not isinstance(key, str) or "${" in key:
                continue
            node = data
            for part in key.split("."):
                node = node.get(part, _MISSING) if isinstance(node, dict) else _MISSING
            if node is _MISSING:
                out.append(f"{name}: {key}")
    return out


_MISSING = object()
