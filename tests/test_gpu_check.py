"""bench/gpu_check.py in its CPU quick mode: every part runs at micro size and writes sane figures; a
rerun skips the parts already written; the time guard skips configurations; bad input fails first."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "bench" / "gpu_check.py"
PARTS = ("train", "throughput", "moe_layer", "eval")


def run(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, cwd=REPO
    )


def positive(x) -> bool:
    return isinstance(x, int | float) and math.isfinite(x) and x > 0


@pytest.fixture(scope="module")
def quick(tmp_path_factory) -> tuple[Path, dict, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("gpu_check") / "cpu.json"
    # a generous time limit: on a busy CI machine the guard must not skip what this test checks
    proc = run("--device", "cpu", "--quick", "--out", str(out), "--time-limit", "600")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, json.loads(out.read_text()), proc


@pytest.mark.slow
def test_quick_mode_writes_every_part_with_sane_figures(quick):
    _, res, proc = quick
    assert res["identity"] == {"device_name": "cpu", "quick": True, "torch": torch.__version__}
    parts = res["parts"]
    assert set(parts) == set(PARTS)
    for name, p in parts.items():
        assert p["status"] == "done", (name, p)
        assert p["skipped"] == [] and p["rows"], name
        assert all("error" not in r for r in p["rows"]), (name, p["rows"])
        assert p["wall_s"] > 0 and p["budget_s"] > 0

    train = {r["name"]: r for r in parts["train"]["rows"]}
    assert set(train) == {"dense", "switch"}
    for r in train.values():
        assert r["steps"] == res["plan"]["train_steps"] and r["size"] == "micro"
        assert r["loss_fell"] and r["loss_last"] < 0.9 * r["loss_first"]
        assert r["resume_equal"] and r["resumed_step"] == r["steps"]
        assert r["export_max_abs_diff"] == 0.0
        assert 0 <= r["gen_token_accuracy"] <= 1 and 0 <= r["mc_accuracy"] <= 1
        assert positive(r["flops_per_step"]) and positive(r["tokens_per_s"])

    tp = parts["throughput"]
    assert positive(tp["matmul"]["best_flops_per_s"]) and tp["datasheet_peak_flops"] is None  # CPU
    assert [r["name"] for r in tp["rows"]] == ["micro/dense/eager", "micro/switch/eager"]
    for r in tp["rows"]:
        for k in ("tokens_per_s", "tflops_per_s", "flops_per_step", "step_s", "peak_memory_bytes"):
            assert positive(r[k]), (r["name"], k)
        assert r["mfu_datasheet"] is None and 0 < r["mfu_matmul"] < 2
        # achieved FLOP/s = FLOPs per step / step time
        assert r["tflops_per_s"] * 1e12 == pytest.approx(r["flops_per_step"] / r["step_s"])
    assert tp["rows"][1]["flops_per_token"] > tp["rows"][0]["flops_per_token"]  # + router

    layer = {r["name"]: r for r in parts["moe_layer"]["rows"]}
    kinds = ("dense", "ours", "ours_relu", "hf")
    assert set(layer) == {f"{k}/E{e}" for k in kinds for e in (8, 64)} | {"step/micro/ours", "step/micro/hf"}
    for r in layer.values():
        assert positive(r["ms"]) and positive(r.get("flops", r.get("flops_per_step")))
    for e in (8, 64):
        assert positive(layer[f"ours/E{e}"]["ratios"]["ours/dense"])
        assert positive(layer[f"hf/E{e}"]["ratios"]["hf/ours_relu"])
        assert layer[f"ours_relu/E{e}"]["flops"] == layer[f"hf/E{e}"]["flops"]  # the same math
    assert positive(layer["step/micro/hf"]["ratios"]["hf/ours"])

    ev = {r["name"]: r for r in parts["eval"]["rows"]}
    assert set(ev) == {"dense/gen", "dense/mc", "switch/gen", "switch/mc"}
    for r in ev.values():
        assert positive(r["examples_per_s"]) and positive(r["flops_per_example_approx"])
        assert r["examples"] == res["plan"]["eval_examples"]

    table = proc.stdout
    assert "gpu-check on cpu (quick)" in table and all(f"[{p}] done" in table for p in PARTS)


@pytest.mark.slow
def test_rerun_skips_written_parts_and_redo_reruns_one(quick, tmp_path):
    out, res, _ = quick
    copy = tmp_path / "cpu.json"
    copy.write_text(out.read_text())
    proc = run("--device", "cpu", "--quick", "--out", str(copy), "--parts", "train", "moe_layer")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "[train] already in" in proc.stderr and "[moe_layer] already in" in proc.stderr
    again = json.loads(copy.read_text())
    assert again["parts"] == res["parts"]  # nothing rerun
    proc = run(
        "--device", "cpu", "--quick", "--out", str(copy), "--parts", "eval", "--redo", "--time-limit", "600"
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    redone = json.loads(copy.read_text())["parts"]
    assert redone["train"] == res["parts"]["train"] and redone["eval"]["status"] == "done"
    assert redone["eval"]["wall_s"] != res["parts"]["eval"]["wall_s"]


@pytest.mark.slow
def test_time_guard_skips_configurations_and_records_them(tmp_path):
    out = tmp_path / "cut.json"
    proc = run(
        "--device",
        "cpu",
        "--quick",
        "--out",
        str(out),
        "--parts",
        "moe_layer",
        "eval",
        "--time-limit",
        "0.001",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    parts = json.loads(out.read_text())["parts"]
    assert set(parts) == {"moe_layer", "eval"}
    assert parts["eval"]["status"] == "partial" and parts["eval"]["rows"] == []
    assert parts["eval"]["skipped"] == ["dense/gen", "dense/mc", "switch/gen", "switch/mc"]
    assert "step/micro/hf" in parts["moe_layer"]["skipped"]
    assert "skipped (budget)" in proc.stdout


def test_results_of_another_device_or_mode_are_not_reused(tmp_path):
    sys.path.insert(0, str(REPO))
    from bench.gpu_check import device_slug, load_results

    path = tmp_path / "r.json"
    ident = {"device_name": "cpu", "quick": True, "torch": "x"}
    path.write_text(json.dumps({"identity": ident, "parts": {"train": {"status": "done"}}}))
    assert load_results(path, ident)["parts"] == {"train": {"status": "done"}}
    assert load_results(path, {**ident, "quick": False}) == {
        "identity": {**ident, "quick": False},
        "parts": {},
    }
    path.write_text("{not json")
    assert load_results(path, ident)["parts"] == {}
    assert device_slug("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible")
def test_cuda_without_a_gpu_fails_before_any_work(tmp_path):
    out = tmp_path / "none.json"
    proc = run("--out", str(out), timeout=120)
    assert proc.returncode == 2 and "--device cuda: no GPU visible" in proc.stderr
    assert not out.exists()


def test_bad_time_limit_is_refused(tmp_path):
    proc = run(
        "--device", "cpu", "--quick", "--time-limit", "-1", "--out", str(tmp_path / "x.json"), timeout=60
    )
    assert proc.returncode == 2 and "--time-limit: -1.0 must be > 0" in proc.stderr


def test_wheels_are_unpacked_once_into_an_importable_folder(tmp_path):
    import zipfile

    sys.path.insert(0, str(REPO))
    from bench.gpu_check import unpack_wheels

    whl = tmp_path / "wheelpkg_probe-1.0-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w") as z:
        z.writestr("wheelpkg_probe/__init__.py", "VALUE = 42\n")
    site = unpack_wheels(tmp_path)
    assert (site / "wheelpkg_probe" / "__init__.py").is_file()
    (site / "wheelpkg_probe" / "__init__.py").write_text("VALUE = 43\n")
    assert unpack_wheels(tmp_path) == site  # the same wheels: not unpacked again
    code = (
        f"import sys; sys.path.insert(1, {str(site)!r}); import wheelpkg_probe; print(wheelpkg_probe.VALUE)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "43"
    assert unpack_wheels(tmp_path / "empty") == tmp_path / "empty" / "site"  # no wheels: nothing made
    assert not (tmp_path / "empty").exists()


def test_the_gpu_plan_is_the_issues_and_fits_an_h100():
    """The full (GPU) plan, built without a GPU: the sizes the issue asks for, and base with 64 experts
    trains in 78 GiB: params, grads, AdamW's two moments and foreach AdamW's sqrt temporary, 4 bytes each."""
    sys.path.insert(0, str(REPO))
    from bench.gpu_check_parts import Plan, model_cfg
    from flanmoe.model.flops import accounting

    plan = Plan.make(torch.device("cuda"), quick=False)
    assert plan.dtype == "bfloat16" and plan.train_size == "small" and plan.train_steps >= 200
    assert (
        plan.tp_sizes == ["base", "small"]
        and plan.tp_experts == 64
        and plan.tp_modes == ["eager", "compiled"]
    )
    assert plan.layer_d_model == 768 and plan.layer_experts == [8, 64]
    assert plan.step_sizes == ["small", "base"] and plan.step_experts == 8
    params = accounting(model_cfg("base", "switch", plan.tp_experts), plan.vocab).params
    assert 3.5e9 < params < 4e9
    assert params * 4 * 5 < 78 * 2**30
