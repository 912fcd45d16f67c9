"""data_prep.train_tokenizer on input it cannot learn from."""

import json


def test_an_empty_corpus_is_refused_with_exit_2(tmp_path, run_python):
    empty = tmp_path / "empty.jsonl"
    empty.write_text(json.dumps({"text": ""}) + "\n")
    (tmp_path / "blank.py").write_text("")
    for corpus in (empty, tmp_path / "blank.py"):
        out = run_python(
            "-m",
            "data_prep.train_tokenizer",
            "--out",
            str(tmp_path / "t.json"),
            "--vocab-size",
            "300",
            str(corpus),
            check=False,
        )
        assert out.returncode == 2 and "error: the inputs hold no text to train a tokenizer on" in out.stderr
        assert not (tmp_path / "t.json").exists()
