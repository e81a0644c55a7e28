"""Real-schema loaders: every source from a file and from a hub-like directory, and their errors."""

import json

import datasets
import pytest
from pydantic import ValidationError

from flanmoe.data.sources import SCHEMAS, SourceError, SourceSpec, load_source

BBH_TASKS = ["boolean_expressions", "word_sorting"]
FT_TASKS = ["sentiment", "copy"]

# role -> (spec from plain files, spec from a directory laid out like the hub repo)
FORMS = {
    "pretrain": ({"path": "c4/c4-sample.jsonl"}, {"path": "c4_hub", "name": "en"}),
    "flan": ({"path": "flan/flan-sample.jsonl"}, {"path": "flan_hub"}),
    "mmlu": ({"path": "mmlu/{split}.jsonl"}, {"path": "mmlu_hub", "name": "all"}),
    "bbh": (
        {"path": "bbh/{config}.json", "field": "examples", "configs": BBH_TASKS},
        {"path": "bbh_hub", "configs": BBH_TASKS},
    ),
    "finetune": (
        {"path": "finetune/{config}/{split}.jsonl", "configs": FT_TASKS},
        {"path": "finetune_hub", "configs": FT_TASKS},
    ),
}


def _spec(fixtures, form: dict, **extra) -> SourceSpec:
    return SourceSpec(kind="local", **{**form, "path": str(fixtures / form["path"])}, **extra)


def _rows(obj) -> dict:
    """Every split's rows as plain dicts, keyed by (task, split) paths."""
    if isinstance(obj, datasets.Dataset):
        return {"": obj.to_list()}
    out = {}
    for k in sorted(obj):
        out.update({f"{k}/{kk}": v for kk, v in _rows(obj[k]).items()})
    return out


@pytest.mark.parametrize("role", list(FORMS))
def test_file_and_hub_directory_load_the_same_rows(fixtures, role):
    file_form, hub_form = FORMS[role]
    from_file = load_source(role, _spec(fixtures, file_form), seed=0)
    from_hub = load_source(role, _spec(fixtures, hub_form), seed=0)
    assert _rows(from_file) == _rows(from_hub)
    required = SCHEMAS[role][0]
    for rows in _rows(from_file).values():
        assert rows, "every split has rows"
        assert all(set(required) <= set(r) for r in rows)


def test_schema_details(fixtures):
    mmlu = load_source("mmlu", _spec(fixtures, FORMS["mmlu"][1]), seed=0)
    assert set(mmlu) == {"dev", "validation", "test"}
    row = mmlu["test"][0]
    assert len(row["choices"]) == 4 and row["answer"] in range(4)
    bbh = load_source("bbh", _spec(fixtures, FORMS["bbh"][0]), seed=0)
    assert list(bbh) == BBH_TASKS and bbh["boolean_expressions"][0]["target"] in ("True", "False")
    ft = load_source("finetune", _spec(fixtures, FORMS["finetune"][1]), seed=0)
    assert set(ft) == set(FT_TASKS) and set(ft["copy"]) == {"train", "validation", "test"}
    # task_name is filled in from the config when the single-task files lack it
    assert set(ft["copy"]["train"]["task_name"]) == {"copy"}
    c4 = load_source("pretrain", _spec(fixtures, FORMS["pretrain"][0]), seed=0)
    assert c4.column_names == ["text"] and "BBQ" in c4[0]["text"]


def test_missing_file_names_the_path(fixtures, tmp_path):
    missing = tmp_path / "nowhere" / "c4.jsonl"
    with pytest.raises(SourceError, match=f"source 'pretrain': file not found: {missing}"):
        load_source("pretrain", SourceSpec(kind="local", path=str(missing)), seed=0)
    with pytest.raises(SourceError, match=r"finetune.*file not found: .*nope/train\.jsonl"):
        load_source("finetune", _spec(fixtures, FORMS["finetune"][0] | {"configs": ["nope"]}), seed=0)


@pytest.mark.parametrize("role", list(FORMS))
def test_missing_column_names_source_and_column(tmp_path, role):
    required = SCHEMAS[role][0]
    dropped = required[-1]
    row = {c: ("x" if c != "choices" else ["a", "b", "c", "d"]) for c in required if c != dropped}
    row["extra"] = "y"
    (tmp_path / "d.jsonl").write_text(json.dumps(row) + "\n")
    spec = SourceSpec(
        kind="local", path=str(tmp_path / "d.jsonl"), configs=["t"] if role in ("bbh", "finetune") else None
    )
    with pytest.raises(SourceError, match=f"source '{role}'.*missing required column '{dropped}'"):
        load_source(role, spec, seed=0)


def test_hub_id_offline_is_a_clear_error():
    with pytest.raises(SourceError, match=r"source 'mmlu' \(cais/mmlu.*offline"):
        load_source("mmlu", SourceSpec(kind="hub", path="cais/mmlu", name="all"), seed=0)


def test_unsupported_file_type(tmp_path):
    (tmp_path / "c4.txt").write_text("hello\n")
    with pytest.raises(SourceError, match="unsupported file type"):
        load_source("pretrain", SourceSpec(kind="local", path=str(tmp_path / "c4.txt")), seed=0)


def test_cap_is_a_seeded_sample(fixtures):
    spec = _spec(fixtures, FORMS["flan"][0], max_examples=2)
    a = load_source("flan", spec, seed=3)
    b = load_source("flan", spec, seed=3)
    full = load_source("flan", _spec(fixtures, FORMS["flan"][0]), seed=3)
    assert len(a) == 2 and a.to_list() == b.to_list()
    assert all(r in full.to_list() for r in a.to_list())


@pytest.mark.parametrize(
    ("kw", "key"),
    [
        ({"kind": "hub"}, "path"),
        ({"kind": "local", "path": "x.jsonl", "configs": []}, "configs"),
        ({"kind": "embedded", "path": "x.jsonl"}, "path"),
    ],
)
def test_source_spec_combinations(kw, key):
    with pytest.raises(ValidationError, match=f"{key}: "):
        SourceSpec(**kw)


def test_empty_file_or_split_is_an_error(tmp_path):
    (tmp_path / "flan.jsonl").write_text("")
    with pytest.raises(SourceError, match=r"source 'flan': .*flan\.jsonl: file is empty"):
        load_source("flan", SourceSpec(kind="local", path=str(tmp_path / "flan.jsonl")), seed=0)
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([(c, pa.string()) for c in SCHEMAS["flan"][0]])
    pq.write_table(schema.empty_table(), tmp_path / "flan.parquet")
    # datasets refuses a zero-row parquet itself: the error still names the source and the file
    with pytest.raises(SourceError, match=r"source 'flan' \(.*flan\.parquet"):
        load_source("flan", SourceSpec(kind="local", path=str(tmp_path / "flan.parquet")), seed=0)
