"""Presets (presets/<name>.yaml): each is a valid set of overrides of the shipped params.yaml, and a
bad preset stops the flow's command line with exit 2 before anything runs."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from pipelines.overrides import apply_overrides, load_preset, presets, validate_overrides
from tests.stage_helpers import REPO


def test_the_shipped_presets():
    assert presets(REPO) == ["default", "gpu", "gpu_hf", "study"]


@pytest.mark.parametrize("name", ["default", "study", "gpu", "gpu_hf"])
def test_every_preset_validates_against_params_yaml(name):
    data = yaml.safe_load((REPO / "params.yaml").read_text())
    overrides = load_preset(REPO, name)
    params = validate_overrides(data, overrides)
    if name == "study":  # what the README promises of it
        assert params.archs.run == ["dense", "switch", "gshard", "expert_choice", "st_moe"]
        # the headline pair gets the seeds (8: a +-3-point CI at the measured seed SD), the rest one
        assert all(len(params.seeds_of(a)) == 8 for a in ("dense", "switch"))
        assert all(len(params.seeds_of(a)) == 1 for a in ("gshard", "expert_choice", "st_moe"))
        assert params.freeze_ablation.freeze == ["gate", "experts", "non_moe"]
        assert params.report.dir == "docs/study"
    if name == "gpu":
        assert params.pretrain.parallel.dtype == "bfloat16" and params.pretrain.parallel.nproc > 1
        assert params.prepare.pretrain.kind == "hub" and params.model.preset == "small"
    if name == "gpu_hf":  # the released checkpoints, instruction-tuned as they are
        assert params.archs.variants["switch"].hf_init == "google/switch-base-8"
        assert params.archs.variants["dense"].hf_init == "google/t5-v1_1-base"
        assert params.pretrain.steps == 0 and params.tokenize.tokenizer_path
    assert apply_overrides(data, overrides).keys() == data.keys() | {k.split(".")[0] for k in overrides}


def test_bad_presets_are_refused_before_anything_runs(tmp_path):
    (tmp_path / "presets").mkdir()
    (tmp_path / "presets" / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(ValueError, match=r"presets/list.yaml: must map dotted params keys to values"):
        load_preset(tmp_path, "list")
    with pytest.raises(ValueError, match=r"preset: no presets/nope.yaml \(presets: list\)"):
        load_preset(tmp_path, "nope")
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines.flow", "--preset", "nope"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert proc.returncode == 2, proc.stderr
    assert "error: preset: no presets/nope.yaml (presets: list)" in proc.stderr
    written = sorted(p.name for p in tmp_path.iterdir() if p.name != ".prefect")  # HOME: prefect's own
    assert written == ["presets"]  # nothing written


def test_a_presets_report_is_copied_back_unless_it_is_the_workspaces_own(tmp_path):
    from pipelines.publish import export_report

    root, work = tmp_path / "root", tmp_path / "work"
    (root).mkdir()
    (root / "params.yaml").write_text((REPO / "params.yaml").read_text())  # report.dir: docs/report
    for d in ("docs/study", "docs/report"):
        (work / d / "figures").mkdir(parents=True)
        (work / d / "report.md").write_text(f"# {d}\n")
        (work / d / "figures" / "headline.png").write_bytes(b"png")
    (root / "docs" / "study").mkdir(parents=True)
    (root / "docs" / "study" / "stale.md").write_text("an older study")
    assert export_report(work, root, "docs/study") == root / "docs" / "study"
    assert (root / "docs" / "study" / "report.md").read_text() == "# docs/study\n"
    assert (root / "docs" / "study" / "figures" / "headline.png").read_bytes() == b"png"
    assert not (root / "docs" / "study" / "stale.md").exists()  # replaced as a whole
    # the workspace's own report stage output is DVC's business (dvc exp apply), not copied over
    assert export_report(work, root, "docs/report") is None and not (root / "docs" / "report").exists()
    assert export_report(work, root, "docs/none") is None  # no report written: nothing to copy
