"""Where a stage's wall time goes when `make run` runs it: the work, and the fixed cost around it.

    python bench/stage_overhead.py [--baseline REV] [--json PATH] [--repeats 3] [--keep DIR]

Each measured tree (the working tree, and with ``--baseline`` the commit REV, both copied into scratch
workspaces) runs the same small pipeline as `make run` runs the default one (``python -m
pipelines.repro``: an MLflow parent run around one ``dvc repro``): prepare and tokenize at the default
size, then one MoE arch (switch) pretrained, instruction-tuned and fine-tuned (one task, scenario
direct) for a few steps, evaluated on a few examples per task, and the report. Trees run one after
the other on this machine, so before and after come from one run.

Every stage process carries a probe (``bench/overhead_probe/sitecustomize.py``) that splits its wall
time into parts, exclusive of each other:

- ``start``: interpreter start-up until the probe runs (before any of the project's imports);
- ``imports``: modules loaded (of which torch, mlflow, datasets + pyarrow);
- ``params``: params.yaml validation; ``data``: datasets and samplers; ``model``: model build / load,
  process layout, tokenizer;
- ``work``: the training loop, the scoring, the data building (prepare, tokenize), the report;
- ``export``: the exported model and the metrics files; ``mlflow``: experiment lookup, run
  creation, params, metrics, artifacts, logged model, waiting for them; ``hashing``: the stage's own
  hashes of its inputs (tags, checkpoint fingerprint) and git;
- ``other``: the rest of the process (its own code, interpreter shutdown hooks);
- ``dvc``: DVC's bookkeeping after the command, until the next stage's process starts (hashing and
  caching the outs, dvc.lock, checking the next stage); the time before the first stage (the parent
  run, ``dvc status``, DVC's start) is a row of its own.

``fixed`` = everything but ``work``. Then, by hand-checkable figures, medians of ``--repeats`` runs
interleaved between trees: ``python -c "import stages.pretrain"`` and ``python -m stages.evaluate``
of the fine-tuned model on its task (as dvc.yaml runs it, MLflow included).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Run as `python bench/x.py`: the repo root, not bench/, first on the path (bench/tokenize.py would
# shadow the stdlib module of that name).
REPO = Path(__file__).resolve().parents[1]
if sys.path and Path(sys.path[0] or ".").resolve() == REPO / "bench":  # run as a script, not imported
    sys.path[0] = str(REPO)

import yaml  # noqa: E402

from flanmoe.env import cpu_model  # noqa: E402

PROBE = REPO / "bench" / "overhead_probe"
PARTS = ("start", "imports", "params", "data", "model", "work", "export", "mlflow", "hashing", "other", "dvc")
IMPORT_GROUPS = ("torch", "mlflow", "datasets", "other")
ARCH, TASK = "switch", "list_sum"
# the default params, with short training and scoring: the fixed cost is what is measured
OVERRIDES = {
    "archs": {"run": [ARCH]},
    "pretrain": {"steps": 20, "warmup_steps": 5, "eval_every": 10, "log_every": 10, "checkpoint_every": 10, "val_examples": 32},
    "instruct": {"steps": 20, "warmup_steps": 5, "eval_every": 10, "log_every": 10, "checkpoint_every": 10, "val_examples": 32},
    "finetune": {"tasks": [TASK], "scenarios": ["direct"], "steps": 20, "warmup_steps": 5, "eval_every": 10, "log_every": 10,
                 "checkpoint_every": 10},
    "evaluate": {"max_examples": 8, "heldin_examples": 16},
}  # fmt: skip
MODEL = f"models/finetune/s1234/{ARCH}-{TASK}-direct"


def workspace(root: Path, label: str, rev: str | None) -> Path:
    """A scratch copy of the tree (``rev``, or the working tree with uncommitted changes), as a git
    repository of one commit, with the bench params."""
    ws = root / label
    ws.mkdir(parents=True)
    if rev is None:
        files = subprocess.run(
            ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True, check=True
        ).stdout.split(b"\0")
        for name in filter(None, files):
            src = REPO / name.decode()
            if src.is_file():
                (ws / name.decode()).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, ws / name.decode())
    else:
        archive = subprocess.run(["git", "archive", rev], cwd=REPO, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(ws)], input=archive, check=True)
    for path in ("metrics", "plots", "evals", "dvc.lock"):  # a fresh pipeline, as on a new clone
        p = ws / path
        shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    params = yaml.safe_load((ws / "params.yaml").read_text())
    for section, values in OVERRIDES.items():
        params[section] = {**params.get(section, {}), **values}
    params.setdefault("report", {})["dir"] = "docs/bench-report"
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git = ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost"]
    subprocess.run([*git, "init", "-q"], cwd=ws, check=True)
    subprocess.run([*git, "add", "-A"], cwd=ws, check=True)
    subprocess.run([*git, "commit", "-qm", f"bench {label}"], cwd=ws, check=True)
    return ws


def env_for(records: Path | None) -> dict[str, str]:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("MLFLOW_TRACKING_URI", None)  # the workspace's own store, as make run uses
    env.pop("FLANMOE_PARENT_RUN_ID", None)
    if records is not None:
        env["PYTHONPATH"] = str(PROBE)
        env["FLANMOE_OVERHEAD_DIR"] = str(records)
    return env


def stage_name(argv: list[str]) -> str:
    """``pretrain`` from ``python -m stages.pretrain switch --seed 1234``; evaluate runs by model kind."""
    i = argv.index("-m")
    name = argv[i + 1].removeprefix("stages.")
    if name == "evaluate":
        model = argv[i + 2]
        kind = model.split("/")[1] if model.startswith("models/") else "model"
        return f"evaluate {kind}" + (" --task" if "--task" in argv else "")
    return name


def run_pipeline(ws: Path) -> dict:
    """`make run`'s command in ``ws`` with the probe; per-stage parts and the DVC gaps."""
    records = ws / ".overhead"
    records.mkdir()
    t0 = time.time()
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines.repro"],
        cwd=ws,
        env=env_for(records),
        capture_output=True,
        text=True,
    )
    t1 = time.time()
    if proc.returncode != 0:
        raise SystemExit(
            f"pipeline failed in {ws} ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    recs = sorted((json.loads(p.read_text()) for p in records.glob("*.json")), key=lambda r: r["created"])
    stages = []
    for i, r in enumerate(recs):
        nxt = recs[i + 1]["created"] if i + 1 < len(recs) else t1
        parts = dict.fromkeys(PARTS, 0.0)
        imports = dict.fromkeys(IMPORT_GROUPS, 0.0)
        for key, sec in r["parts"].items():
            if key.startswith("imports/"):
                imports[key.split("/", 1)[1]] += sec
                parts["imports"] += sec
            else:
                parts[key] = parts.get(key, 0.0) + sec
        wall = r["end"] - r["created"]
        parts["start"] = r["probe_start"] - r["created"]
        parts["other"] = max(wall - sum(v for k, v in parts.items() if k not in ("other", "dvc")), 0.0)
        parts["dvc"] = max(nxt - r["end"], 0.0)
        stages.append(
            {
                "stage": stage_name(r["argv"]),
                "wall": wall + parts["dvc"],
                "parts": parts,
                "imports": imports,
                "fixed": wall + parts["dvc"] - parts["work"],
            }
        )
    return {
        "total": t1 - t0,
        "before_first_stage": (recs[0]["created"] - t0) if recs else None,
        "stages": stages,
        "median_fixed": statistics.median(s["fixed"] for s in stages) if stages else None,
    }


def hand_figures(ws: Path) -> dict[str, float]:
    """The two figures the issue asks anyone to check by hand (one run each)."""
    env = env_for(None)
    out = {}
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import stages.pretrain"], cwd=ws, env=env, check=True)
    out["import_stages_pretrain"] = time.perf_counter() - t
    t = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "stages.evaluate", MODEL, "--task", TASK, "--seed", "1234"],
        cwd=ws, env=env, check=True, capture_output=True,
    )  # fmt: skip
    out["evaluate_finetune"] = time.perf_counter() - t
    return out


def fmt(x: float | None) -> str:
    return "" if x is None else f"{x:.2f}"


def print_table(results: dict[str, dict]) -> None:
    head = ["tree", "stage", "wall", *PARTS, "fixed"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for label, res in results.items():
        for s in res["pipeline"]["stages"]:
            cells = [label, s["stage"], fmt(s["wall"]), *(fmt(s["parts"][p]) for p in PARTS), fmt(s["fixed"])]
            print("| " + " | ".join(cells) + " |")
    print()
    print("| tree | stages | median fixed (s) | imports: torch / mlflow / datasets / other (median s) |"
          " before first stage (s) | pipeline total (s) | import stages.pretrain (s) | evaluate --task (s) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for label, res in results.items():
        p = res["pipeline"]
        imp = " / ".join(fmt(statistics.median(s["imports"][g] for s in p["stages"])) for g in IMPORT_GROUPS)
        hand = res["hand"]
        print(
            f"| {label} | {len(p['stages'])} | {fmt(p['median_fixed'])} | {imp} | {fmt(p['before_first_stage'])}"
            f" | {fmt(p['total'])} | {fmt(hand['import_stages_pretrain'])} | {fmt(hand['evaluate_finetune'])} |"
        )
    if len(results) == 2:
        (a, ra), (b, rb) = results.items()
        ratio = rb["pipeline"]["median_fixed"] / ra["pipeline"]["median_fixed"]
        print(f"\nmedian fixed cost {b} / {a}: {ratio:.2f}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--baseline", metavar="REV", help="also measure this commit (e.g. HEAD~3), first")
    ap.add_argument("--repeats", type=int, default=3, help="runs of each hand-checkable figure (median)")
    ap.add_argument("--json", type=Path, help="write every figure here")
    ap.add_argument("--keep", type=Path, help="build the workspaces here and keep them (default: a temp dir)")
    args = ap.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="stage-overhead-")) if args.keep is None else args.keep
    root.mkdir(parents=True, exist_ok=True)
    trees = ([("baseline", args.baseline)] if args.baseline else []) + [("current", None)]
    try:
        spaces = {label: workspace(root, label, rev) for label, rev in trees}
        results = {label: {"rev": rev or "working tree", "pipeline": run_pipeline(ws)} for (label, rev), ws in
                   zip(trees, spaces.values(), strict=True)}  # fmt: skip
        hand: dict[str, dict[str, list[float]]] = {label: {} for label in spaces}
        for _ in range(args.repeats):  # interleaved, so drift hits both trees alike
            for label, ws in spaces.items():
                for k, v in hand_figures(ws).items():
                    hand[label].setdefault(k, []).append(v)
        for label in spaces:
            results[label]["hand"] = {k: statistics.median(v) for k, v in hand[label].items()}
            results[label]["hand_runs"] = hand[label]
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    print_table(results)
    if args.json:
        meta = {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version()}
        import torch  # noqa: PLC0415 - only for the version in the JSON

        meta["torch"] = torch.__version__
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"machine": meta, "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
