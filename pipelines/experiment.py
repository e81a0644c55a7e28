"""The private experiment workspace: a run with overrides works in its own clone of the workspace
(sharing DVC's cache), and is recorded at the end as a DVC experiment (``dvc exp save``) pushed back to
the workspace repo, where ``dvc exp show`` lists it."""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from pipelines.graph import select_stages, stage_graph
from pipelines.overrides import PARAMS_FILE
from pipelines.runner import StageFailed, dvc_command, stage_env, stream

EXPERIMENTS_DIR = Path(".dvc") / "tmp" / "flow-runs"  # inside .dvc: DVC and git ignore it


def _git(cwd: str | Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def experiment_ref(repo: str | Path, name: str) -> str | None:
    """The git ref of DVC experiment ``name`` in ``repo`` (``refs/exps/../NAME``), or None."""
    refs = _git(repo, "for-each-ref", "--format=%(refname)", "refs/exps").split()
    return next((r for r in refs if r.rsplit("/", 1)[-1] == name), None)


def check_experiment_name(repo: str | Path, name: str) -> None:
    """``ValueError`` when ``name`` cannot be a new DVC experiment of ``repo``."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name) or name.endswith((".", ".lock")):
        raise ValueError(f"experiment name {name!r}: use letters, digits, '_', '-' and '.'")
    try:
        _git(repo, "rev-parse", "--verify", "-q", "HEAD")
    except subprocess.CalledProcessError:
        raise ValueError(f"{repo}: DVC experiments need a git repository with a commit") from None
    if experiment_ref(repo, name):
        raise ValueError(
            f"experiment name {name!r}: a DVC experiment of that name exists (`dvc exp remove {name}`, "
            "or choose another name)"
        )


def _dvc_cache_dir(repo: Path) -> str:
    from dvc.repo import Repo

    with Repo(str(repo)) as dvc_repo:
        return dvc_repo.cache.local_cache_dir


@contextlib.contextmanager
def experiment_workspace(root: Path, name: str, set_params: list[str]) -> Iterator[Path]:
    """A private copy of the workspace for experiment ``name``, removed at the end.

    What `dvc exp run --temp` does, so that every stage can still be its own task run: a git clone of
    HEAD (objects shared) with the workspace's uncommitted changes copied over, DVC's cache shared with
    the workspace (so finished stages are found in the run cache, and outputs are not copied twice), and
    the Hydra overrides applied to its params.yaml. The workspace itself is never touched, so runs of
    different experiments cannot mix, and a workspace stays what its user left.
    """
    from dvc.utils.hydra import apply_overrides as dvc_apply_overrides

    dest = root / EXPERIMENTS_DIR / name
    shutil.rmtree(dest, ignore_errors=True)  # left behind by a killed run of the same name
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        head = _git(root, "rev-parse", "HEAD").strip()
        _git(root, "clone", "-q", "--shared", "--no-checkout", str(root), str(dest))
        _git(dest, "checkout", "-q", "--detach", head)
        changed = _git(root, "ls-files", "-z", "--modified", "--others", "--exclude-standard").split("\0")
        for rel in filter(None, changed):
            src = root / rel
            if src.is_file():
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dest / rel)
            else:  # deleted in the workspace
                (dest / rel).unlink(missing_ok=True)
        local = root / ".dvc" / "config.local"  # the user's local remotes and credentials
        if local.is_file():
            shutil.copy2(local, dest / ".dvc" / "config.local")
        subprocess.run(
            dvc_command("config", "--local", "cache.dir", _dvc_cache_dir(root)),
            cwd=dest, check=True, capture_output=True, text=True,
        )  # fmt: skip
        if set_params:
            dvc_apply_overrides(str(dest / PARAMS_FILE), set_params)
        yield dest
    finally:
        shutil.rmtree(dest, ignore_errors=True)


@contextlib.contextmanager
def private_workspace(
    root: Path, name: str, set_params: list[str], targets: list[str], logger
) -> Iterator[tuple[Path, dict[str, list[str]]]]:
    """Experiment ``name``'s private workspace (``experiment_workspace``) with the outputs dvc.lock
    records checked out, and the stages of ``targets`` there (its params may change the DAG)."""
    logger.info("DVC experiment %s: %s", name, " ".join(set_params) or "(no overrides)")
    with experiment_workspace(root, name, set_params) as work:
        graph = select_stages(stage_graph(work), targets)
        checkout(str(work))
        yield work, graph


@task(task_run_name="dvc checkout", cache_policy=NO_CACHE)
def checkout(repo: str) -> None:
    """Check the outputs dvc.lock records out of the shared cache (missing ones are left to the run)."""
    logger = get_run_logger()
    rc, _ = stream(dvc_command("checkout", "--quiet"), repo, stage_env(), logger)
    if rc != 0:
        logger.info("dvc checkout: some outputs are not in the cache; their stages will run")


@task(task_run_name="dvc exp save {name}", cache_policy=NO_CACHE)
def save_experiment(name: str, stages: list[str], repo: str, origin: str) -> str:
    """Record the run as DVC experiment ``name`` (`dvc exp save`) and push its git ref to the workspace
    repo ``origin`` (`dvc exp push --no-cache`: the cache is already shared). Returns the ref."""
    logger = get_run_logger()
    untracked = _git(repo, "ls-files", "-z", "--others", "--exclude-standard").split("\0")
    save = dvc_command(
        "exp", "save", "-n", name, *(a for p in filter(None, untracked) for a in ("-I", p)), *stages
    )
    for cmd in (save, dvc_command("exp", "push", "--no-cache", "origin", name)):
        rc, tail = stream(cmd, repo, stage_env(), logger)
        if rc != 0:
            raise StageFailed(f"dvc exp {cmd[4]} {name}", rc, None, tail)
    ref = experiment_ref(origin, name)
    logger.info("DVC experiment %s: %s", name, ref)
    return ref or ""
