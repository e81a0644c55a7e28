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
