"""Presets (presets/<name>.yaml): each is a valid set of overrides of the shipped params.yaml, and a
bad preset stops the flow's command line with exit 2 before anything runs."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from pipelines.flow import apply_overrides, load_preset, presets, validate_overrides
from tests.stage_helpers import REPO


def test_the_shipped_presets():
    assert presets(REPO) == ["default", "gpu", "study"]


@pytest.mark.parametrize("name", ["default", "study", "gpu"])
def test_every_preset_validates_against_params_yaml(name):
    data = yaml.safe_load((REPO / "params.yaml").read_text())
    overrides = load_preset(REPO, name)
    params = validate_overrides(data, overrides)
    if name == "study":  # what the README promises of it
        assert params.archs.run == ["dense", "switch", "gshard", "expert_choice", "st_moe"]
        assert len(params.base.seeds) == 3
        assert params.freeze_ablation.freeze == ["gate", "experts", "non_moe"]
        assert params.report.dir == "docs/study"
    if name == "gpu":
        assert params.pretrain.parallel.dtype == "bfloat16" and params.pretrain.parallel.nproc > 1
        assert params.prepare.pretrain.kind == "hub" and params.model.preset == "small"
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
