"""data_prep.sources: content ids, origins, local readers sharded over tasks, the Hub readers' adapters."""

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datatrove.pipeline.readers import HuggingFaceDatasetReader

from data_prep.sources import (
    document_id,
    local_readers,
    require_hub_token,
    stack_adapter,
    stack_reader,
    stackoverflow_adapter,
)
from phi1.errors import ConfigError


def read_all(readers, rank: int = 0, world_size: int = 1) -> list:
    documents = []
    for reader in readers:
        documents += list(reader.run(None, rank, world_size))
    return documents


def test_document_id_is_a_hash_of_normalized_content():
    code = "def f(x):\n    return x\n"
    assert document_id(code) == document_id(code.replace("\n", "\r\n"))  # line ends
    assert document_id(code) == document_id("\n\n" + code.replace("\n", "   \n") + "\n\n")  # trailing spaces
    assert document_id(code) == document_id("def f(x):\n    return x")
    assert document_id(code) != document_id(code.replace("return x", "return  x"))  # content differs
    assert document_id(code) != document_id(code.replace("    ", "\t"))
    assert len(document_id(code)) == 32


def test_local_readers_read_jsonl_parquet_and_python_files_with_their_origin(tmp_path):
    data = tmp_path / "data"
    (data / "nested").mkdir(parents=True)
    records = [
        {"text": "print(1)\n", "id": "mine-1", "repo": "a/b", "path": "x.py", "license": ["MIT"]},
        {"text": "print(2)\n", "stars": 5},
    ]
    (data / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    pq.write_table(pa.table({"content": ["x = 3\n"], "lang": ["python"]}), data / "nested" / "table.parquet")
    (data / "nested" / "module.py").write_text("def g():\n    pass\n")
    (data / "nested" / "latin1.py").write_bytes("s = 'caf\xe9'\n".encode("latin-1"))
    (data / ".hidden.py").write_text("hidden = True\n")
    (data / "notes.txt").write_text("not an input")

    documents = read_all(local_readers([data], tmp_path / "listing", field="text"))
    by_text = {doc.text: doc for doc in documents}
    assert set(by_text) == {"print(1)\n", "print(2)\n", "def g():\n    pass\n"}  # parquet has no `text` field
    first = by_text["print(1)\n"]
    assert first.id == document_id("print(1)\n")
    assert first.metadata | {"path": None} == {
        "source": "local",
        "source_id": "mine-1",
        "repo": "a/b",
        "path": None,
        "license": ["MIT"],
    }
    assert first.metadata["path"] == "x.py"  # the record's own path is its origin
    assert by_text["print(2)\n"].metadata["path"] == f"{data / 'records.jsonl'}:1"
    assert by_text["print(2)\n"].metadata["stars"] == 5
    assert by_text["def g():\n    pass\n"].metadata == {"source": "local", "path": str(data / "nested" / "module.py")}

    parquet = read_all(local_readers([data / "nested" / "table.parquet"], tmp_path / "listing2", field="content"))
    assert [(doc.text, doc.metadata["lang"]) for doc in parquet] == [("x = 3\n", "python")]


def test_local_files_are_split_between_tasks_without_overlap(tmp_path):
    for i in range(5):
        (tmp_path / f"m{i}.py").write_text(f"value = {i}\n")
    readers = local_readers([tmp_path], tmp_path / "listing")
    shards = [{doc.text for doc in read_all(readers, rank, 2)} for rank in range(2)]
    assert shards[0].isdisjoint(shards[1]) and len(shards[0]) == 3 and len(shards[1]) == 2
    assert shards[0] | shards[1] == {f"value = {i}\n" for i in range(5)}


def test_bad_inputs_are_named(tmp_path):
    with pytest.raises(ConfigError, match="missing.py does not exist"):
        local_readers([tmp_path / "missing.py"], tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="empty holds no .jsonl"):
        local_readers([tmp_path / "empty"], tmp_path)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ConfigError, match="notes.txt: expected a .jsonl"):
        local_readers([tmp_path / "notes.txt"], tmp_path)


def test_the_stack_adapter_keeps_repo_path_and_licence(tmp_path):
    """The Stack's schema through datatrove's Hub reader (a local Parquet copy standing in for the Hub)."""
    row = {
        "content": "import os\n",
        "max_stars_repo_name": "org/repo",
        "max_stars_repo_path": "src/a.py",
        "max_stars_repo_licenses": ["Apache-2.0"],
        "hexsha": "abc",
        "lang": "Python",
    }
    pq.write_table(pa.Table.from_pylist([row]), tmp_path / "train.parquet")
    reader = HuggingFaceDatasetReader(
        "parquet",
        {"data_files": str(tmp_path / "train.parquet"), "split": "train"},
        streaming=True,
        adapter=stack_adapter,
    )
    [document] = list(reader.run())
    assert document.text == "import os\n" and document.id == document_id("import os\n")
    assert document.metadata | {"dataset": None} == {
        "source": "the-stack",
        "repo": "org/repo",
        "path": "src/a.py",
        "license": ["Apache-2.0"],
        "dataset": None,
    }
    hub = stack_reader()
    assert (hub.dataset, hub.dataset_options, hub.streaming) == (
        "bigcode/the-stack-dedup",
        {"data_dir": "data/python", "split": "train"},
        True,
    )


def test_stackoverflow_adapter():
    class Reader:
        text_key = "content"

    record = {"content": "Q: how?\nA: like this", "title": "How", "tags": ["python"], "name": "42"}
    document = stackoverflow_adapter(Reader(), record, "hub", 0)
    assert document["metadata"] == {"source": "stackoverflow", "post": "42", "title": "How", "tags": ["python"]}
    assert document["id"] == document_id(record["content"])


def test_the_gated_stack_needs_a_token(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # no saved login either
    with pytest.raises(ConfigError, match="gated: accept its terms"):
        require_hub_token("bigcode/the-stack-dedup")
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    require_hub_token("bigcode/the-stack-dedup")  # no error, and the token is not kept anywhere
    assert "hf_secret" not in repr(stack_reader().__dict__)


def test_paths_are_recorded_without_a_doubled_root(tmp_path):
    (tmp_path / "a.py").write_text("a = 1\n")
    [document] = read_all(local_readers([tmp_path / "a.py"], tmp_path / "listing"))
    assert document.metadata["path"] == str(tmp_path / "a.py") and Path(document.metadata["path"]).is_file()
