"""The GPU path, measured in one command (``make gpu-check``): training, throughput and MFU, the MoE
layer, evaluation; written part by part to ``bench/results/gpu-check-<device>.json``.

    python3 bench/gpu_check.py                          # on one GPU: cuda, bfloat16, <= 5 min
    python3 bench/gpu_check.py --device cpu --quick     # micro sizes, no compile, <= 60 s (CI)
    [--redo] [--parts train throughput moe_layer eval] [--out PATH] [--time-limit S]

Runs on a bare machine's own ``python3`` (torch, transformers, numpy, pyarrow, tokenizers,
safetensors): no mlflow, prefect, dvc or datasets; pydantic comes from ``bench/wheels/*.whl`` when it
is not installed (bench/README.md). Parts (bench/gpu_check_parts.py):

1. ``train``: the ``Trainer`` on the device (dense and switch), a copy task on synthetic ids: the loss
   falls, a checkpoint resumes to the same weights and optimizer state, the exported model loads and
   evaluates (greedy generation, multiple choice).
2. ``throughput``: training tokens/s, achieved TFLOP/s, MFU against the datasheet peak and against a
   large matmul measured in this run, peak memory; small and base, dense and switch, eager and compiled.
3. ``moe_layer``: our MoE layer vs a dense FFN of equal active FLOPs and vs HF's
   ``SwitchTransformersSparseMLP`` (fwd + bwd); a training step vs HF's
   ``SwitchTransformersForConditionalGeneration`` of the same shapes (one model at a time).
4. ``eval``: examples/s of batched generation and multiple-choice scoring.

Timing: warm-up first, CUDA events (CPU: ``perf_counter``) around each timed chunk, the median of
repeats; each row holds its FLOP count beside its time. Each part has a share of ``--time-limit``:
once spent, the part's remaining configurations are skipped and listed as such. After each part the
JSON is replaced atomically, so a run cut off keeps the parts done; a rerun skips them (``--redo``).
"""

from __future__ import annotations

# ruff: noqa: E402  (imports follow the sys.path fix below)
import sys
from pathlib import Path

# Run as `python3 bench/x.py`: the repo root, not bench/, first on the path (bench/tokenize.py would
# shadow the stdlib module of that name). Imported (tests), the path is left alone.
REPO = Path(__file__).resolve().parents[1]
if sys.path and Path(sys.path[0] or ".").resolve() == REPO / "bench":
    sys.path[0] = str(REPO)

import argparse
import datetime
import json
import os
import platform
import time
import traceback
import zipfile
from typing import Any

PARTS = ("train", "throughput", "moe_layer", "eval")
# share of --time-limit per part (GPU: 270 s of the 5 minutes; imports, CUDA start-up and the last
# configuration of a part, which may overrun its share, take the rest)
PART_SHARE = {"train": 0.22, "throughput": 0.43, "moe_layer": 0.23, "eval": 0.12}
WHEELS = REPO / "bench" / "wheels"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    ap.add_argument("--quick", action="store_true", help="micro sizes, a handful of steps, no compile")
    ap.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    ap.add_argument("--redo", action="store_true", help="rerun parts already in the results file")
    ap.add_argument("--out", type=Path, help="results file (default bench/results/gpu-check-<device>.json)")
    ap.add_argument(
        "--time-limit",
        type=float,
        default=None,
        help="seconds for all parts (default: 270; --quick: 120, ~11 s of work on a quiet 2-core machine)",
    )
    args = ap.parse_args(argv)
    if args.time_limit is None:
        args.time_limit = 120.0 if args.quick else 270.0
    if args.time_limit <= 0:
        ap.error(f"--time-limit: {args.time_limit} must be > 0")
    return args


def unpack_wheels(wheels: Path) -> Path:
    """Unpack every ``wheels/*.whl`` into ``wheels/site`` (once per set of wheels) and return that folder:
    a wheel is a zip of its installed files, so no pip or registry is needed."""
    site = wheels / "site"
    names = "\n".join(w.name for w in sorted(wheels.glob("*.whl"))) + "\n"
    marker = site / ".unpacked"
    if names.strip() and not (marker.is_file() and marker.read_text() == names):
        site.mkdir(parents=True, exist_ok=True)
        for whl in sorted(wheels.glob("*.whl")):
            with zipfile.ZipFile(whl) as z:
                z.extractall(site)
        marker.write_text(names)
    return site


def ensure_pydantic() -> None:
    """Import pydantic; where it is not installed, from the wheels in ``bench/wheels/``."""
    try:
        import pydantic  # noqa: F401

        return
    except ImportError:
        pass
    sys.path.insert(1, str(unpack_wheels(WHEELS)))
    try:
        import pydantic  # noqa: F401
    except ImportError as e:
        sys.exit(
            f"gpu_check: pydantic is not installed and {WHEELS}/ holds no usable wheel ({e}); "
            "see bench/README.md (pip download pydantic for this machine's Python)"
        )


# ---------------------------------------------------------------------------------------- results


def device_slug(name: str) -> str:
    """``NVIDIA H100 80GB HBM3`` -> ``nvidia-h100-80gb-hbm3`` (the results file's name)."""
    return "-".join("".join(c if c.isalnum() else " " for c in name.lower()).split())


def load_results(path: Path, identity: dict[str, Any]) -> dict[str, Any]:
    """The results file if it was written by a run of the same device and mode, else a fresh one."""
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            old = None
        if isinstance(old, dict) and old.get("identity") == identity:
            return old
    return {"identity": identity, "parts": {}}


def save_results(path: Path, results: dict[str, Any]) -> None:
    from flanmoe.atomic import write_json

    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, results)


def machine_info(device) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = dict(
        date=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        torch=torch.__version__,
        python=platform.python_version(),
        cpu_count=os.cpu_count(),
        loadavg=list(os.getloadavg()),
    )
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1))
        info["cuda"] = torch.version.cuda
    return info


# ---------------------------------------------------------------------------------------- table


def _fmt(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def summary(results: dict[str, Any]) -> str:
    """The short table printed last: one line per row of each part."""
    lines = [
        f"gpu-check on {results['identity']['device_name']} ({'quick' if results['identity']['quick'] else 'full'})"
    ]
    parts = results["parts"]
    for name in PARTS:
        p = parts.get(name)
        if p is None:
            continue
        head = f"\n[{name}] {p['status']}, {p.get('wall_s', 0):.0f} s"
        if p.get("skipped"):
            head += f"; skipped (budget): {', '.join(p['skipped'])}"
        lines.append(head)
        if p["status"] == "error":
            lines.append(f"  error: {p['error']}")
        for r in p.get("rows", []):
            lines.append("  " + _row_line(name, r))
    return "\n".join(lines)


def _row_line(part: str, r: dict[str, Any]) -> str:
    if "error" in r:
        return f"{r['name']:28} error: {r['error']}"
    if part == "train":
        return (f"{r['name']:28} loss {r['loss_first']:.3f} -> {r['loss_last']:.3f} (fell: {r['loss_fell']}), "
                f"resume equal: {r['resume_equal']}, export diff {r['export_max_abs_diff']:.1e}, "
                f"gen acc {r['gen_token_accuracy']:.2f}, mc acc {r['mc_accuracy']:.2f}")  # fmt: skip
    if part == "throughput":
        return (f"{r['name']:28} {r['tokens_per_s']:10.0f} tok/s {r['tflops_per_s']:8.3f} TFLOP/s "
                f"MFU {_fmt(r['mfu_datasheet'], '6.1%')} / matmul {_fmt(r['mfu_matmul'], '6.1%')} "
                f"mem {r['peak_memory_bytes'] / 2**30:.2f} GiB")  # fmt: skip
    if part == "moe_layer":
        ratio = ", ".join(f"{k} {v:.2f}" for k, v in r.get("ratios", {}).items())
        return f"{r['name']:28} {r['ms']:9.2f} ms {r['tflops_per_s']:8.3f} TFLOP/s  {ratio}"
    return f"{r['name']:28} {r['examples_per_s']:9.1f} ex/s ({r['ms']:.1f} ms per call of {r['examples']})"


# ---------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for k, v in (("HF_HUB_OFFLINE", "1"), ("HF_DATASETS_OFFLINE", "1"), ("HF_HUB_DISABLE_TELEMETRY", "1")):
        os.environ.setdefault(k, v)
    # one model after another, up to ~71 GiB (base, 64 experts, AdamW): no fragmentation between them
    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    if args.device == "cpu":
        from bench.cpu import prepare_cpu

        prepare_cpu()  # before torch is imported
    ensure_pydantic()
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print(
            "gpu_check: --device cuda: no GPU visible to torch (on CPU: --device cpu --quick)",
            file=sys.stderr,
        )
        return 2
    from bench import gpu_check_parts as parts

    device = torch.device("cuda", 0) if args.device == "cuda" else torch.device("cpu")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    identity = {"device_name": name, "quick": args.quick, "torch": torch.__version__}
    out = (
        args.out
        or REPO / "bench" / "results" / f"gpu-check-{device_slug(name)}{'-quick' if args.quick else ''}.json"
    )
    results = load_results(out, identity)
    results["machine"] = machine_info(device)
    plan = parts.Plan.make(device, args.quick)
    results["plan"] = plan.describe()
    failed = False
    for part in args.parts:
        done = results["parts"].get(part)
        if done is not None and done["status"] in ("done", "partial") and not args.redo:
            print(f"[{part}] already in {out}: skipped (--redo to rerun)", file=sys.stderr)
            continue
        budget = parts.Budget(args.time_limit * PART_SHARE[part])
        print(f"[{part}] running (budget {budget.seconds:.0f} s)", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        try:
            res = parts.RUNNERS[part](plan, budget)
            res["status"] = "partial" if res.get("skipped") else "done"
        except Exception as e:  # noqa: BLE001  recorded, the other parts still run
            traceback.print_exc()
            res = {"status": "error", "error": f"{type(e).__name__}: {e}"[:300]}
            failed = True
        res["wall_s"] = round(time.perf_counter() - t0, 2)
        res["finished"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        res["budget_s"] = budget.seconds
        results["parts"][part] = res
        save_results(out, results)
        parts.free_memory(device)
    print(summary(results))
    print(f"\n(results: {out})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
