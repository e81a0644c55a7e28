"""What every stage does the same way: validate params, write outputs atomically, write metrics JSON,
log one MLflow run tagged with the git commit, the DVC hashes of the stage's inputs and what runs are
compared by (seed, DVC experiment, arch, ...), with its datasets as run inputs and its metrics and
plots files as artifacts.

This module knows the pipeline's file layout and dvc.yaml; the ``flanmoe`` library does not.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import NoReturn

import yaml

from flanmoe import tracking_client
from flanmoe.config import Params, flatten, load_params_or_exit
from flanmoe.env import machine, torch_threads

DVC_EXP_ENV = "DVC_EXP_NAME"  # set by `dvc exp run` in the stages it runs (dvc/repo/experiments/queue)
_IGNORED_NAMES = {"__pycache__", ".DS_Store"}  # mirrors .dvcignore


def run_stage(main: Callable[[], object]) -> NoReturn:
    """``if __name__ == "__main__": run_stage(main)``: run a stage's ``main``, then leave the process
    as Python would (exit status, error message or traceback, atexit handlers, flushed streams) but
    without tearing the interpreter down: unloading torch and datasets takes ~0.5 s and changes
    nothing on disk (every output is written and closed, and the MLflow helper has finished)."""
    try:
        main()
        code = 0
    except SystemExit as e:
        if e.code is None or isinstance(e.code, int):
            code = e.code or 0
        else:  # SystemExit("message"): Python prints it and exits 1
            print(e.code, file=sys.stderr)
            code = 1
    except KeyboardInterrupt:
        code = 130
    except BaseException:  # noqa: BLE001 - reported exactly as the interpreter would
        sys.excepthook(*sys.exc_info())
        code = 1
    atexit._run_exitfuncs()  # logging.shutdown, weakref finalizers, temp dirs: what exit would run
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def require(*paths: Path, hint: str) -> None:
    """Exit 2 naming the first missing input (``hint``: which stage makes it)."""
    for path in paths:
        if not path.exists():
            fail(f"{path} not found: {hint}")


def require_model(model_dir: Path, hint: str) -> None:
    """Exit 2 unless ``model_dir`` is an exported model whose config parses and whose
    ``model.safetensors`` is whole (a truncated or corrupt file is named, with ``hint``: which stage
    writes it), before the stage does any work."""
    from flanmoe.model.pretrained import check_weights, load_config

    try:
        load_config(model_dir)
        check_weights(model_dir)
    except (ValueError, FileNotFoundError) as e:
        fail(f"{e}; {hint}")


def require_device(key: str, device: str) -> None:
    """Exit 2 naming params ``key`` when it asks for ``cuda`` and no GPU is visible (``auto`` and
    ``cpu`` need nothing; torch is imported only to check ``cuda``)."""
    if device != "cuda":
        return
    import torch

    if not torch.cuda.is_available():
        fail(
            f"{key}: {device}, but no GPU is visible here (torch.cuda.is_available() is False); "
            "set it to auto or cpu"
        )


def fail(message: str, code: int = 2) -> None:
    """Stop the stage with one clear error line (exit status 2: bad input, nothing written)."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(code)


def _file_md5(path: Path) -> str:
    h = hashlib.md5()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def dvc_md5(path: Path) -> str:
    """The hash DVC records for ``path`` in dvc.lock: md5 of a file, or ``<md5>.dir`` of a directory."""
    path = Path(path)
    if path.is_file():
        return _file_md5(path)
    entries = []
    for p in sorted(path.rglob("*")):
        rel = p.relative_to(path)
        if p.is_file() and not (set(rel.parts) & _IGNORED_NAMES) and p.suffix != ".pyc":
            entries.append({"md5": _file_md5(p), "relpath": rel.as_posix()})
    entries.sort(key=lambda e: e["relpath"])
    blob = json.dumps(entries, sort_keys=True).encode("utf-8")
    return hashlib.md5(blob).hexdigest() + ".dir"


def disk_mb(path: Path) -> float:
    """MB (1e6 bytes) of the files under ``path`` (a stage's throughput: MB/s of the data it wrote or read)."""
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file()) / 1e6


def stage_deps(stage: str, dvc_yaml: Path = Path("dvc.yaml")) -> list[str]:
    """The ``deps`` dvc.yaml declares for ``stage`` (``foreach`` stages: pass ``name@key``)."""
    if not dvc_yaml.is_file():
        return []
    spec = yaml.safe_load(dvc_yaml.read_text()).get("stages", {})
    name, _, _key = stage.partition("@")
    entry = spec.get(name, {})
    entry = entry.get("do", entry)  # foreach/matrix body; templated deps are skipped below
    return [d for d in entry.get("deps", []) if isinstance(d, str) and "${" not in d]


def input_hashes(stage: str) -> dict[str, str]:
    """``{"dvc.dep.<path>": md5}`` for the data deps of ``stage`` that exist (code deps are skipped:
    the git commit covers them)."""
    out = {}
    for dep in stage_deps(stage):
        p = Path(dep)
        if p.exists() and not dep.startswith(("flanmoe/", "stages/")):
            out[f"dvc.dep.{dep}"] = dvc_md5(p)
    return out


def git_commit() -> str | None:
    """HEAD's commit, with ``-dirty`` when tracked files have uncommitted changes."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def without_timings(obj):
    """``obj`` less every key ending in ``seconds``: metrics files tracked by git and DVC hold only
    what the same params reproduce (timings go to MLflow)."""
    if isinstance(obj, dict):
        return {k: without_timings(v) for k, v in obj.items() if not str(k).endswith("seconds")}
    return obj


def load_params() -> Params:
    """Validate the whole params.yaml (exit 2 with dotted keys on any error). First checks that the
    tracking server of ``MLFLOW_TRACKING_URI``, if it is one, answers (exit 2 naming it: a server down
    at the start is a setup error; one that dies mid-run only costs a warning), then starts the stage's
    MLflow helper (``tracking_client.prestart``): it imports mlflow while the stage starts up (a stage
    that stops before its run starts leaves the helper nothing to write)."""
    problem = tracking_client.unreachable_server()
    if problem is not None:
        fail(problem)
    tracking_client.prestart()
    return load_params_or_exit()


def for_seed(params: Params, seed: int | None, arch: str | None = None, extra: bool = True) -> Params:
    """``params`` as replicate ``seed`` of ``base.seeds`` sees them (``Params.for_seed``); ``None`` is
    allowed when ``base.seeds`` has one seed. A seed of ``base.extra_seeds`` is allowed for a stage with
    extra replicates (``extra``: pretrain, instruct, evaluate) and an arch of ``base.extra_archs``
    (``arch`` None: the evaluate stage, whose model directory names the arch). Exit 2 for another seed."""
    seeds = params.base.seeds
    extra_seeds = params.base.extra_seeds
    if seed is None:
        if len(seeds) > 1:
            fail(f"--seed: base.seeds has {len(seeds)} seeds {seeds}; pass one of them")
        seed = seeds[0]
    elif seed in extra_seeds and not extra:
        fail(
            f"--seed: {seed} is one of base.extra_seeds, which only pretrain, instruct and their evaluation"
            f" run; this stage runs base.seeds {seeds}"
        )
    elif seed in extra_seeds and arch is not None and arch not in params.base.extra_archs:
        fail(
            f"--seed: {seed} is one of base.extra_seeds, which only base.extra_archs "
            f"{params.base.extra_archs} run; {arch} runs base.seeds {seeds}"
        )
    elif seed not in seeds and seed not in extra_seeds:
        more = f" or base.extra_seeds {extra_seeds}" if extra_seeds else ""
        fail(f"--seed: {seed} is not one of base.seeds {seeds}{more}")
    return params.for_seed(seed)


def effective_seed(params: Params, section: str) -> int:
    """The seed stage ``section`` uses: its own ``seed`` if it has one that is set, else ``base.seed``
    (in a replicate: the replicate's seed)."""
    seed = getattr(getattr(params, section, None), "seed", None)
    return params.base.seed if seed is None else seed


def arch_tags(arch: str | None, model_cfg) -> dict[str, object]:
    """Tags of a run about one model: ``arch``, ``router`` (``dense`` without MoE), ``num_experts``."""
    moe = model_cfg.moe
    return {
        "arch": arch,
        "router": "dense" if moe is None else moe.router,
        "num_experts": 0 if moe is None else moe.num_experts,
    }


@contextlib.contextmanager
def tracked_run(
    stage: str,
    params: Params,
    sections: list[str],
    tags: dict[str, object] | None = None,
    inputs: Mapping[str | Path, str] | None = None,
    outputs: list[Path] | None = None,
) -> Iterator[object]:
    """An MLflow run for one stage: flattened params of ``sections``; tags ``stage``, ``variant``,
    ``seed`` (the stage's effective seed), ``dvc_exp`` (under ``dvc exp run``), git commit, the DVC
    hashes of the stage's data inputs, and ``tags`` (``arch_tags``, scenario, task, freeze, ...).

    ``inputs`` (local path -> context, e.g. ``{"data/tokenized/pretrain": "training"}``) are logged as
    the run's datasets (name and source: the path; digest: its DVC md5); ``outputs`` (metrics and plots
    files) as artifacts under their workspace folder (``metrics/pretrain/switch.json``) when the stage
    body ends. The stage's wall time is logged as ``stage_seconds``."""
    hashes = input_hashes(stage)
    base_stage = stage.partition("@")[0]
    run_tags = {
        "stage": base_stage,
        "variant": stage.partition("@")[2] or None,
        "seed": effective_seed(params, base_stage),
        "dvc_exp": os.environ.get(DVC_EXP_ENV) or None,
        "git_commit": git_commit(),
        **hashes,
        **(tags or {}),
    }
    run_tags |= {k: v for k, v in machine().items() if k != "torch_threads"}  # reproducible per CPU model
    run = tracking_client.take()  # mlflow runs in a helper process: these calls do not wait
    run.start(stage.replace("@", ":"), params.base.experiment, tags=run_tags)
    status = "FAILED"
    try:
        run.log_params({k: v for s in sections for k, v in flatten(getattr(params, s), f"{s}.").items()})
        datasets = [
            tracking_client.DatasetRef(
                name=str(path),
                path=str(path),
                digest=hashes.get(f"dvc.dep.{path}") or dvc_md5(Path(path)),
                context=context,
            )
            for path, context in (inputs or {}).items()
        ]
        run.log_datasets(datasets)
        t0 = time.perf_counter()
        yield run
        run.log_metrics({"stage_seconds": time.perf_counter() - t0})
        run.set_tags({"torch_threads": torch_threads()})  # known once the stage ran
        for path in outputs or []:
            if Path(path).is_file():
                run.log_artifact(path, Path(path).parent.as_posix())
        status = "FINISHED"
    finally:
        run.finish(status)  # waits until the helper has logged everything
