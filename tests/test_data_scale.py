"""bench/data_scale.py --quick: prepare + tokenize on generated C4- and FLAN-schema jsonl, measured."""

import importlib.util
import json

import pytest

from tests.stage_helpers import REPO


def _bench():
    spec = importlib.util.spec_from_file_location("data_scale", REPO / "bench" / "data_scale.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_files_have_the_real_schemas(tmp_path):
    bench = _bench()
    bench.write_c4(tmp_path / "c4.jsonl", 0.05, seed=0)
    bench.write_flan(tmp_path / "flan.jsonl", 0.05, seed=0)
    c4 = [json.loads(line) for line in (tmp_path / "c4.jsonl").read_text().splitlines()]
    flan = [json.loads(line) for line in (tmp_path / "flan.jsonl").read_text().splitlines()]
    assert set(c4[0]) == {"text", "timestamp", "url"} and len({r["url"] for r in c4}) == len(c4)
    assert set(flan[0]) == {"inputs", "targets", "task_source", "task_name", "template_type"}
    assert 50_000 <= (tmp_path / "c4.jsonl").stat().st_size < 80_000  # about the size asked for
    bench.write_c4(tmp_path / "again.jsonl", 0.05, seed=0)
    assert (tmp_path / "again.jsonl").read_bytes() == (tmp_path / "c4.jsonl").read_bytes()


@pytest.mark.slow
def test_quick_run_measures_both_stages_and_repeats_bytes(tmp_path, capsys):
    result = _bench().main(["--quick", "--json", str(tmp_path / "scale.json")])
    assert json.loads((tmp_path / "scale.json").read_text()) == json.loads(json.dumps(result))
    small, large = result["rows"]
    assert 0.3 < small["input_mb"] < large["input_mb"] < 2.0
    for row in (small, large):
        for stage in ("prepare", "tokenize"):
            r = row[stage]
            assert r["seconds"] > 0 and r["mb_per_s"] > 0 and r["peak_rss_mb"] >= r["peak_anon_mb"] > 50
        assert row["tokenize"]["tokens"] > 0
    assert large["tokenize"]["tokens"] > small["tokenize"]["tokens"]
    assert small["digest"] != large["digest"]  # other data, other files
    assert result["identical"]  # the smallest size twice: data/prepared and data/tokenized, byte for byte
    assert "peak RSS" in capsys.readouterr().out


def _cgroup_writable() -> bool:
    try:
        _bench()._own_memory_cgroup()
    except SystemExit:
        return False
    return True


@pytest.mark.slow
@pytest.mark.skipif(not _cgroup_writable(), reason="no writable memory cgroup (needs root or delegation)")
def test_memory_cap_runs_stages_in_a_cgroup_and_reports_a_kill(tmp_path, capsys):
    """Under a roomy cap both stages run as without one; under a cap below what Python and torch
    need to start, the stage is reported killed, the run goes on, and the cgroup is removed."""
    bench = _bench()
    roomy = bench.main(["--quick", "--memory-cap", "4096"])
    assert roomy["memory_cap_mb"] == 4096 and roomy["identical"]
    assert all("peak_rss_mb" in r[s] for r in roomy["rows"] for s in ("prepare", "tokenize"))
    tight = bench.main(["--quick", "--memory-cap", "40"])
    assert all(
        r["prepare"] == {"seconds": r["prepare"]["seconds"], "oom_killed": True} for r in tight["rows"]
    )
    assert "tokenize" not in tight["rows"][0] and not tight["identical"]
    assert "killed by the memory cap" in capsys.readouterr().out
    parent, _ = bench._own_memory_cgroup()
    assert not list(parent.glob("flanmoe-bench-*"))
