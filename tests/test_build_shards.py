"""data_prep.build_shards and phi1.shards: the packed stream round-trips, is the same for any worker count,
resumes after an interruption, masks prompts, and reports bad input by file and line (exit status 2)."""

import gzip
import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from data_prep import build_shards as build_shards_module
from data_prep.build_shards import STATE_NAME, build_shards
from data_prep.documents import HubDataset
from phi1.errors import ConfigError
from phi1.shards import ShardFormatError, open_loss_masks, open_shards, read_manifest, shard_file_name
from phi1.tokenizer import EOS_TOKEN, eos_id, load_tokenizer

DOCUMENTS = [
    'def greet(name):\n    """Say hello."""\n    return f"Hello, {name}!"\n',
    "Ελληνικά, 日本語 and 🐍: unicode survives.\r\nWindows line ends too.\r\n",
    "",  # an empty document is just its EOS
    f"a literal {EOS_TOKEN} inside a document is plain text\n",
    "\t\tdeep tabs\n" + " " * 45 + "long space run\n",
] + [f"x_{i} = [{', '.join(str(j) for j in range(i % 40))}]\n" * (1 + i % 7) for i in range(300)]


def write_jsonl(path, documents, field="text"):
    with open(path, "w", encoding="utf-8") as file:
        for document in documents:
            file.write(json.dumps({field: document, "id": len(document)}, ensure_ascii=False) + "\n")
    return path


def read_stream(folder) -> np.ndarray:
    return np.concatenate([np.asarray(shard) for shard in open_shards(folder)])


def decode_documents(tokens: np.ndarray, tokenizer) -> list[str]:
    """Split the stream at EOS and decode each document."""
    eos = eos_id(tokenizer)
    ends = np.flatnonzero(tokens == eos)
    assert ends[-1] == len(tokens) - 1, "the stream ends with EOS"
    starts = np.concatenate([[0], ends[:-1] + 1])
    return [
        tokenizer.decode(tokens[s:e].tolist(), skip_special_tokens=False) for s, e in zip(starts, ends, strict=True)
    ]


def folder_bytes(folder) -> dict[str, bytes]:
    """The files of a folder (not its subfolders: an interrupted --overwrite build stages in one)."""
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir()) if path.is_file()}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_jsonl(tmp_path_factory.mktemp("corpus") / "docs.jsonl", DOCUMENTS)


@pytest.fixture(scope="module")
def tokenizer(code_tokenizer):
    return load_tokenizer(code_tokenizer)


@pytest.fixture(scope="module")
def wide_tokenizer(tmp_path_factory, code_tokenizer):
    """The test tokenizer plus 65,000 added tokens: its ids no longer fit uint16."""
    wide = load_tokenizer(code_tokenizer)
    wide.add_tokens([f"<extra_{i}>" for i in range(65_000)])
    path = tmp_path_factory.mktemp("wide") / "tokenizer.json"
    wide.save(str(path))
    return path


def test_text_round_trips_through_the_shards(tmp_path, corpus, code_tokenizer, tokenizer):
    manifest = build_shards(code_tokenizer, tmp_path / "out", [corpus], shard_tokens=1000)
    assert manifest == read_manifest(tmp_path / "out")
    assert manifest["dtype"] == "uint16" and manifest["eos_id"] == eos_id(tokenizer)
    assert manifest["num_documents"] == len(DOCUMENTS) and not manifest["loss_mask"]
    assert manifest["vocab_size"] == tokenizer.get_vocab_size(with_added_tokens=True)
    assert len(manifest["shards"]) > 3
    for shard in open_shards(tmp_path / "out"):
        assert shard[-1] == manifest["eos_id"]  # shards hold whole documents
    assert all(shard["num_tokens"] >= 1000 for shard in manifest["shards"][:-1])
    tokens = read_stream(tmp_path / "out")
    assert len(tokens) == manifest["num_tokens"]
    assert int((tokens == manifest["eos_id"]).sum()) == len(DOCUMENTS)  # EOS only between documents
    assert decode_documents(tokens, tokenizer) == DOCUMENTS
    assert manifest["sources"] == [
        {
            "path": str(corpus),
            "sha256": build_shards_module.file_sha256(corpus),
            "sha256_of": "file",
            "documents": len(DOCUMENTS),
        }
    ]


def test_worker_count_does_not_change_the_output(tmp_path, corpus, code_tokenizer, monkeypatch):
    monkeypatch.setattr(build_shards_module, "CHUNK_DOCUMENTS", 16)  # many chunks in flight
    build_shards(code_tokenizer, tmp_path / "one", [corpus], shard_tokens=1000, workers=1)
    build_shards(code_tokenizer, tmp_path / "two", [corpus], shard_tokens=1000, workers=2)
    assert folder_bytes(tmp_path / "one") == folder_bytes(tmp_path / "two")


def test_jsonl_gz_parquet_and_text_files_read_alike(tmp_path, corpus, code_tokenizer):
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    inputs = tmp_path / "inputs"
    inputs.mkdir()
    with gzip.open(inputs / "a.jsonl.gz", "wt", encoding="utf-8") as file:
        file.write(corpus.read_text(encoding="utf-8"))
    pq.write_table(pa.table({"text": DOCUMENTS}), inputs / "b.parquet", row_group_size=64)
    (inputs / "c.py").write_bytes(DOCUMENTS[1].encode("utf-8"))  # read as bytes: \r\n is kept
    (inputs / "notes.bin").write_bytes(b"\xff")  # not a corpus suffix: skipped in folders
    manifest = build_shards(code_tokenizer, tmp_path / "out", [inputs])
    tokens = read_stream(tmp_path / "out")
    assert decode_documents(tokens, load_tokenizer(code_tokenizer)) == DOCUMENTS + DOCUMENTS + [DOCUMENTS[1]]
    assert [source["path"] for source in manifest["sources"]] == [
        str(inputs / name) for name in ("a.jsonl.gz", "b.parquet", "c.py")
    ]


def test_loss_mask_covers_completions_and_eos_only(tmp_path, code_tokenizer, tokenizer):
    exercises = [
        ('def add(a, b):\n    """Add a and b."""\n', "    return a + b\n"),
        ("def empty():\n", ""),
        ('def café() -> str:\n    """Unicode name."""\n', '    return "☕"\n'),
    ]
    path = tmp_path / "exercises.jsonl"
    path.write_text("".join(json.dumps({"prompt": p, "completion": c}) + "\n" for p, c in exercises), encoding="utf-8")
    manifest = build_shards(code_tokenizer, tmp_path / "out", [path], field="completion", prompt_field="prompt")
    assert manifest["loss_mask"] and manifest["shards"][0]["mask_file"] == "shard_00000.mask.bin"
    tokens, mask = read_stream(tmp_path / "out"), np.concatenate(open_loss_masks(tmp_path / "out"))
    assert mask.dtype == np.uint8 and len(mask) == len(tokens)
    position = 0
    for prompt, completion in exercises:
        prompt_ids = tokenizer.encode(prompt).ids
        completion_ids = tokenizer.encode(completion).ids + [manifest["eos_id"]]
        end = position + len(prompt_ids) + len(completion_ids)
        assert tokens[position:end].tolist() == prompt_ids + completion_ids
        assert mask[position:end].tolist() == [0] * len(prompt_ids) + [1] * len(completion_ids)
        position = end
    assert position == len(tokens)
    assert decode_documents(tokens, tokenizer) == [p + c for p, c in exercises]
    build_shards(code_tokenizer, tmp_path / "unmasked", [path], field="completion")
    with pytest.raises(ShardFormatError, match="built without --prompt-field"):
        open_loss_masks(tmp_path / "unmasked")


def test_vocabulary_over_65536_tokens_is_stored_as_uint32(tmp_path, wide_tokenizer):
    text = "ids <extra_64999> and <extra_0> above uint16\n"
    manifest = build_shards(wide_tokenizer, tmp_path / "out", [write_jsonl(tmp_path / "d.jsonl", [text])])
    assert manifest["dtype"] == "uint32" and manifest["vocab_size"] == 66_038
    tokens = read_stream(tmp_path / "out")
    assert tokens.dtype == np.uint32 and tokens.max() > 65_535
    assert decode_documents(tokens, load_tokenizer(wide_tokenizer)) == [text]
    assert (tmp_path / "out" / "shard_00000.bin").stat().st_size == 4 * manifest["num_tokens"]


BAD_INPUTS = {
    "malformed JSON": ('{"text": "fine"}\n\n{"text": "broken\n', "bad.jsonl:3: malformed JSON"),
    "missing field": ('{"text": "fine"}\n{"body": "no text"}\n', "bad.jsonl:2: missing field 'text'"),
    "non-string field": ('{"text": 12}\n', "bad.jsonl:1: field 'text' should be a string, got int"),
    "not an object": ('["text"]\n', "bad.jsonl:1: expected a JSON object, got list"),
    "empty corpus": ("\n\n", "the inputs hold no documents"),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_is_named_by_file_and_line_with_exit_status_2(tmp_path, run_python, code_tokenizer, case):
    content, message = BAD_INPUTS[case]
    (tmp_path / "bad.jsonl").write_text(content, encoding="utf-8")
    result = run_python(
        "-m", "data_prep.build_shards", "--tokenizer", str(code_tokenizer), "--out", str(tmp_path / "out"),
        str(tmp_path / "bad.jsonl"), check=False,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out" / "manifest.json").exists()


PLAIN_TEXT = build_shards_module.__file__


def test_bad_flags_and_tokenizers_exit_2(tmp_path, run_python, code_tokenizer, wide_tokenizer, corpus):
    def build(*args, env=None):
        command = ["-m", "data_prep.build_shards", "--out", str(tmp_path / "out"), *map(str, args)]
        return run_python(*command, check=False, env=env)

    cases = [
        (build("--tokenizer", wide_tokenizer, "--dtype", "uint16", corpus), "--dtype uint16 cannot hold"),
        (build("--tokenizer", code_tokenizer, tmp_path / "nowhere.jsonl"), "nowhere.jsonl does not exist"),
        (build("--tokenizer", code_tokenizer), "no inputs"),
        (build("--tokenizer", tmp_path / "none.json", corpus), "none.json not found"),
        (build("--tokenizer", "microsoft/phi-1", corpus, env={"HF_HUB_OFFLINE": "1"}), "Hugging Face Hub"),
        (build("--tokenizer", code_tokenizer, "--prompt-field", "prompt", PLAIN_TEXT), "--prompt-field needs JSONL"),
    ]
    for result, message in cases:
        assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_parquet_without_the_field_names_file_and_columns(tmp_path, code_tokenizer):
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    pq.write_table(pa.table({"content": ["x"]}), tmp_path / "d.parquet")
    with pytest.raises(ConfigError, match=r"d.parquet: no column 'text' \(columns: \['content'\]\); set --field"):
        build_shards(code_tokenizer, tmp_path / "out", [tmp_path / "d.parquet"])


def test_complete_build_is_kept_unless_overwrite(tmp_path, run_python, code_tokenizer, corpus):
    out = tmp_path / "out"
    args = ["-m", "data_prep.build_shards", "--tokenizer", str(code_tokenizer), "--out", str(out), str(corpus)]
    run_python(*args)
    (out / "README.txt").write_text("the user's own file", encoding="utf-8")
    before = folder_bytes(out)
    refused = run_python(*args, "--shard-tokens", "500", check=False)
    assert refused.returncode == 2 and "already holds a complete shard build" in refused.stderr
    assert folder_bytes(out) == before
    run_python(*args, "--shard-tokens", "500", "--overwrite")
    assert len(read_manifest(out)["shards"]) > 1
    assert (out / "README.txt").read_text(encoding="utf-8") == "the user's own file"


def test_shard_files_the_builder_did_not_write_are_never_deleted(tmp_path, code_tokenizer, corpus):
    out = tmp_path / "out"
    out.mkdir()
    (out / "shard_00000.bin").write_bytes(b"the user's own file")
    with pytest.raises(ConfigError, match=r"holds shard files this build did not write \(shard_00000.bin\)"):
        build_shards(code_tokenizer, out, [corpus])
    assert (out / "shard_00000.bin").read_bytes() == b"the user's own file"


def test_overwrite_keeps_the_previous_build_until_the_new_one_is_complete(tmp_path, code_tokenizer, monkeypatch):
    good = write_jsonl(tmp_path / "good.jsonl", DOCUMENTS)
    out = tmp_path / "out"
    build_shards(code_tokenizer, out, [good], shard_tokens=500)
    (out / "README.txt").write_text("the user's own file")
    before = folder_bytes(out)
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(json.dumps({"text": d}) + "\n" for d in DOCUMENTS) + "{not json\n")
    with pytest.raises(ConfigError, match=r"bad.jsonl:\d+: malformed JSON"):
        build_shards(code_tokenizer, out, [bad], shard_tokens=500, overwrite=True)
    assert folder_bytes(out) == before and read_manifest(out)["sources"][0]["path"] == str(good)
    # an overwrite interrupted between shards resumes in the staging folder, then replaces the old build
    other = write_jsonl(tmp_path / "other.jsonl", DOCUMENTS[::-1])
    _build_interrupted_after(2, monkeypatch, code_tokenizer, out, [other], shard_tokens=300, overwrite=True)
    assert folder_bytes(out) == before
    build_shards(code_tokenizer, out, [other], shard_tokens=300, overwrite=True)
    build_shards(code_tokenizer, tmp_path / "clean", [other], shard_tokens=300)
    assert folder_bytes(out) == {**folder_bytes(tmp_path / "clean"), "README.txt": before["README.txt"]}
    assert not (out / ".overwrite").exists()


def test_killed_build_resumes_to_the_same_bytes(tmp_path, code_tokenizer, repo_root):
    big = write_jsonl(tmp_path / "big.jsonl", DOCUMENTS * 4)
    out = tmp_path / "out"
    args = [sys.executable, "-m", "data_prep.build_shards", "--tokenizer", str(code_tokenizer), "--out", str(out)]
    args += ["--shard-tokens", "2000", str(big)]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=repo_root)
    try:
        while not (out / STATE_NAME).exists() or len(_state_shards(out)) < 3:
            assert process.poll() is None, "the build ended before it could be interrupted"
            time.sleep(0.005)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert not (out / "manifest.json").exists()
    with pytest.raises(ShardFormatError, match="no manifest.json"):
        read_manifest(out)
    recorded = {shard["file"] for shard in _state_shards(out)}
    unrecorded = {path.name for path in out.glob("shard_*.bin")} - recorded
    # a shard gets its final name only once complete; the kill may land between that and its record
    assert unrecorded <= {shard_file_name(len(recorded))}

    resumed = subprocess.run(args + ["--workers", "2"], capture_output=True, text=True, cwd=repo_root)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming after" in resumed.stderr
    build_shards(code_tokenizer, tmp_path / "clean", [big], shard_tokens=2000)
    assert folder_bytes(out) == folder_bytes(tmp_path / "clean")


def _state_shards(out):
    """The shards build_state.jsonl records as complete (its first line holds the settings)."""
    try:
        lines = (out / STATE_NAME).read_text(encoding="utf-8").splitlines()[1:]
        return [json.loads(line) for line in lines]
    except (OSError, ValueError):
        return []


class Interrupted(Exception):
    pass


def _build_interrupted_after(shards, monkeypatch, *args, **kwargs):
    close = build_shards_module.ShardWriter._close_shard
    calls = []

    def close_then_stop(writer):
        close(writer)
        calls.append(1)
        if len(calls) == shards:
            raise Interrupted

    with monkeypatch.context() as patch:
        patch.setattr(build_shards_module.ShardWriter, "_close_shard", close_then_stop)
        with pytest.raises(Interrupted):
            build_shards(*args, **kwargs)


def test_resume_starts_clean_when_inputs_or_settings_changed(tmp_path, code_tokenizer, monkeypatch, capsys):
    corpus = write_jsonl(tmp_path / "docs.jsonl", DOCUMENTS)
    out = tmp_path / "out"
    _build_interrupted_after(2, monkeypatch, code_tokenizer, out, [corpus], shard_tokens=500)
    write_jsonl(corpus, ["changed\n"] + DOCUMENTS[1:])
    build_shards(code_tokenizer, out, [corpus], shard_tokens=500)
    assert "inputs changed since the interrupted build; starting clean" in capsys.readouterr().err
    build_shards(code_tokenizer, tmp_path / "clean", [corpus], shard_tokens=500)
    assert folder_bytes(out) == folder_bytes(tmp_path / "clean")

    _build_interrupted_after(2, monkeypatch, code_tokenizer, out, [corpus], shard_tokens=300, overwrite=True)
    build_shards(code_tokenizer, out, [corpus], shard_tokens=400, overwrite=True)
    assert "settings or shard files differ; starting clean" in capsys.readouterr().err
    assert read_manifest(out)["shard_tokens"] == 400


def test_hub_dataset_streams_records(tmp_path, code_tokenizer, tokenizer, monkeypatch):
    pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    dataset = tmp_path / "dataset"
    dataset.mkdir()
    write_jsonl(dataset / "train.jsonl", DOCUMENTS[:20])
    manifest = build_shards(code_tokenizer, tmp_path / "out", hub=HubDataset(str(dataset)))
    assert decode_documents(read_stream(tmp_path / "out"), tokenizer) == DOCUMENTS[:20]
    source = manifest["sources"][0]
    assert source["path"] == f"hf:{dataset}" and source["sha256_of"] == "text" and source["documents"] == 20


def test_read_manifest_names_the_folder_and_field(tmp_path, code_tokenizer, corpus):
    out = tmp_path / "out"
    build_shards(code_tokenizer, out, [corpus], shard_tokens=1000)
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))

    def broken(change, message):
        damaged = json.loads(json.dumps(manifest))
        change(damaged)
        (out / "manifest.json").write_text(json.dumps(damaged), encoding="utf-8")
        with pytest.raises(ShardFormatError, match=message):
            open_shards(out)

    broken(lambda m: m.pop("eos_id"), "manifest.json: missing field 'eos_id'")
    broken(lambda m: m.update(format="other/1"), "format is 'other/1'")
    broken(lambda m: m.update(dtype="int8"), "dtype is 'int8'")
    broken(lambda m: m["shards"][1].update(num_tokens=1), r"shards\[1\]: .*shard_00001.bin holds \d+ bytes, expected 2")
    broken(lambda m: m.update(num_documents=1), "num_documents is not the sum")
    broken(lambda m: m.update(loss_mask=True), "mask_file is None but loss_mask is True")
    with pytest.raises(ShardFormatError, match="does not exist"):
        read_manifest(tmp_path / "nowhere")
