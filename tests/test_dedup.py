"""data_prep.dedup: exact then MinHash near-duplicate removal of code, through datatrove's executors."""

import json
import os

import numpy as np
import pytest
from datatrove.pipeline.dedup import MinhashDedupSignature
from filtering_corpus import near_copy, read_task_files, stdlib_functions

from data_prep.code_words import CodeWordTokenizer, code_words
from data_prep.dedup import RAW_TEXT, candidate_probability, code_minhash_config, main
from data_prep.sources import document_id


def test_code_words_keep_identifiers_whole():
    assert code_words("self.max_len=10  # Über") == ["self", "max_len", "10", "Über"]
    tokenizer = CodeWordTokenizer()
    assert tokenizer.word_tokenize("a.b(c_d)") == ["a", "b", "c_d"]
    assert tokenizer.sent_tokenize("x = 1\n\n  y = 2\n") == ["x = 1", "  y = 2"]
    assert tokenizer == CodeWordTokenizer() and hash(tokenizer) == hash(CodeWordTokenizer())


def test_minhash_is_tuned_for_jaccard_0_7():
    config = code_minhash_config()
    assert (config.n_grams, config.num_buckets, config.hashes_per_bucket) == (5, 25, 10)
    assert 0.45 < candidate_probability(0.7, config) < 0.55  # the threshold: even odds
    assert candidate_probability(0.5, config) < 0.03 and candidate_probability(0.9, config) > 0.999
    assert not (RAW_TEXT.lowercase or RAW_TEXT.remove_punctuation or RAW_TEXT.norm_numbers)


def shingles(text: str) -> set[int]:
    step = MinhashDedupSignature("/tmp/unused-signatures", code_minhash_config(), language=CodeWordTokenizer())
    return set(step.get_shingles(text).ravel().tolist())


def test_signatures_estimate_the_jaccard_similarity_of_code_shingles():
    """datatrove's signature stage with our tokenizer: identical shingles for renamed-free copies, and the share
    of equal MinHash values tracks the true Jaccard similarity of the 5-word shingles."""
    text = max(stdlib_functions(60), key=len)
    edited = near_copy(near_copy(text).replace("return", "return  "))  # whitespace changes no code word
    a, b = shingles(text), shingles(edited)
    jaccard = len(a & b) / len(a | b)
    step = MinhashDedupSignature("/tmp/unused-signatures", code_minhash_config(), language=CodeWordTokenizer())
    sig_a = np.concatenate(step.get_signature(step.get_shingles(text)))
    sig_b = np.concatenate(step.get_signature(step.get_shingles(edited)))
    assert 0.8 < jaccard < 1.0
    assert abs((sig_a == sig_b).mean() - jaccard) < 0.1
    assert shingles("max_len = compute(a, b)") != shingles("max len = compute(a, b)")  # `_` is not a separator


@pytest.fixture
def corpus(tmp_path):
    """40 functions, an exact copy (other line ends and trailing spaces), a near copy of the longest one."""
    folder = tmp_path / "corpus"
    folder.mkdir()
    functions = stdlib_functions(40)
    for i, text in enumerate(functions):
        (folder / f"f{i:02d}.py").write_text(text)
    (folder / "exact_copy.py").write_bytes((functions[3].replace("\n", "  \r\n") + "\r\n").encode())
    longest = max(range(len(functions)), key=lambda i: len(functions[i]))
    (folder / "near_copy.py").write_text(near_copy(functions[longest]))
    return folder, functions, longest


def test_exact_then_near_duplicates_are_removed_with_two_tasks(tmp_path, corpus, capsys):
    folder, functions, longest = corpus
    work = tmp_path / "work"
    assert main(["--out", str(work), "--input", str(folder), "--tasks", "2", "--workers", "1"]) == 0

    kept = read_task_files(work / "deduplicated")
    assert len(kept) == len({doc["id"] for doc in kept}) == 40  # 42 files, one copy of each kept
    ids, pair = (
        {doc["id"] for doc in kept},
        {document_id(functions[longest]), document_id(near_copy(functions[longest]))},
    )
    assert len(ids & pair) == 1 and ids - pair == {document_id(text) for text in functions} - pair
    [exact] = read_task_files(work / "exact" / "removed")
    assert exact["id"] == document_id(functions[3])
    [near] = read_task_files(work / "minhash" / "removed")
    assert near["id"] in {document_id(functions[longest]), document_id(near_copy(functions[longest]))}
    assert near["metadata"]["minhash_cluster_size"] == 2

    sizes = json.loads((work / "cluster_sizes.json").read_text())
    assert sizes == {
        "clusters": 1,
        "documents_in_clusters": 2,
        "removed": 1,
        "largest": 2,
        "clusters_by_size": {"2": 1},
    }
    report = {
        (entry["stage"], entry["step"]): entry["stats"] for entry in json.loads((work / "report.json").read_text())
    }
    assert report[("exact-dedup", "🫂 - DEDUPS: 💥 exact-deduplication stage 3")] | {"doc_len": 0} == {
        "total": 42,
        "forwarded": 41,
        "dropped": 1,
        "doc_len": 0,
    }
    filter_stats = report[("minhash-dedup", "🫂 - DEDUP: 🎯 MinHash stage 4")]
    assert (filter_stats["total"], filter_stats["forwarded"], filter_stats["dropped"]) == (41, 40, 1)
    assert "exact-dedup" in capsys.readouterr().err  # the table is printed

    # a rerun of the same job does nothing and changes nothing; another job in the same folder is refused
    before = sorted(path.stat().st_mtime_ns for path in (work / "deduplicated").iterdir())
    named_otherwise = os.path.relpath(work)  # the same folder by another path
    assert main(["--out", str(named_otherwise), "--input", str(folder), "--tasks", "2", "--workers", "1"]) == 0
    assert sorted(path.stat().st_mtime_ns for path in (work / "deduplicated").iterdir()) == before
    assert main(["--out", str(work), "--input", str(folder), "--tasks", "3"]) == 2
    assert "holds a job with other settings (tasks differ)" in capsys.readouterr().err


def test_bad_input_exits_2_without_claiming_the_folder(tmp_path, capsys):
    work = tmp_path / "work"
    assert main(["--out", str(work), "--input", str(tmp_path / "nowhere")]) == 2
    assert "nowhere does not exist" in capsys.readouterr().err
    assert not (work / "job.json").exists()
    assert main(["--out", str(work)]) == 2
    assert "no input" in capsys.readouterr().err
