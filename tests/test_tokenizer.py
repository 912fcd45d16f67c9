"""phi1.tokenizer and data_prep.train_tokenizer: codegen layout, exact round trips, loading, the CLI."""

import json

import pytest
from tokenizers import Tokenizer, models

from data_prep.train_tokenizer import train_tokenizer
from phi1.tokenizer import (
    EOS_TOKEN,
    WHITESPACE_TOKENS,
    TokenizerError,
    check_fits,
    eos_id,
    load_tokenizer,
    tokenizer_hash,
)

ROUND_TRIP_SAMPLES = {
    "python": 'def f(x: int) -> str:\n    """Doc."""\n    return f"{x!r:>8}"  # comment\n',
    "unicode": "naïve café Ελληνικά 日本語 Русский 🐍🚀 e\u0301 \u200b zero-width \u2028 separator\n",
    "tabs": "".join("\t" * n + f"x{n}\n" for n in range(1, 13)),
    "long space runs": "".join(" " * n + "y\n" for n in (1, 2, 3, 31, 32, 33, 62, 64, 100)),
    "mixed whitespace": "a \t \t  b\t  \t\n\n\n   \r\n\x0b\x0c end   ",
    "control bytes": "nul\x00 bell\x07 del\x7f",
    "special token text": f"before {EOS_TOKEN} after",
    "empty": "",
}


@pytest.fixture(scope="module")
def tokenizer(code_tokenizer) -> Tokenizer:
    return load_tokenizer(code_tokenizer)


def test_whitespace_tokens_follow_the_bpe_vocabulary_in_codegen_order(tokenizer):
    eos = eos_id(tokenizer)
    assert eos == 999  # --vocab-size 1000 counts the BPE tokens and <|endoftext|>, as GPT-2's 50,257
    assert len(WHITESPACE_TOKENS) == 38
    assert [tokenizer.token_to_id(run) for run in WHITESPACE_TOKENS] == list(range(eos + 1, eos + 39))
    assert WHITESPACE_TOKENS[0] == " " * 31 and WHITESPACE_TOKENS[29] == "  " and WHITESPACE_TOKENS[-1] == "\t\t"
    assert tokenizer.get_vocab_size(with_added_tokens=True) == eos + 39
    added = tokenizer.get_added_tokens_decoder()
    assert added[eos].special and not added[eos].normalized
    assert not any(added[eos + 1 + i].special or added[eos + 1 + i].normalized for i in range(38))


def test_indentation_is_one_whitespace_token(tokenizer):
    ids = tokenizer.encode("        return x\n\t\tpass").ids
    assert ids[0] == tokenizer.token_to_id(" " * 8)
    assert tokenizer.token_to_id("\t\t") in ids


@pytest.mark.parametrize("name", ROUND_TRIP_SAMPLES)
def test_decode_of_encode_is_exact(tokenizer, name):
    text = ROUND_TRIP_SAMPLES[name]
    assert tokenizer.decode(tokenizer.encode(text).ids, skip_special_tokens=False) == text


def test_round_trip_is_exact_on_python_sources(tokenizer, code_tokenizer):
    import sysconfig
    from pathlib import Path

    root = Path(sysconfig.get_paths()["stdlib"])
    texts = [path.read_bytes().decode("utf-8") for path in sorted(root.glob("[t-z]*.py"))]
    decoded = tokenizer.decode_batch([e.ids for e in tokenizer.encode_batch(texts)], skip_special_tokens=False)
    assert decoded == texts


def test_training_is_deterministic():
    texts = [ROUND_TRIP_SAMPLES["python"] * 3, ROUND_TRIP_SAMPLES["unicode"], "for i in range(10):\n    print(i)\n"]
    first = train_tokenizer(texts, vocab_size=300, show_progress=False)
    second = train_tokenizer(iter(texts), vocab_size=300, show_progress=False)
    assert first.to_str() == second.to_str()
    assert tokenizer_hash(first) == tokenizer_hash(second)


def test_tokenizer_hash_changes_with_the_vocabulary(tokenizer, code_tokenizer):
    assert tokenizer_hash(tokenizer) == tokenizer_hash(load_tokenizer(code_tokenizer))
    changed = load_tokenizer(code_tokenizer)
    changed.add_tokens(["<extra>"])
    assert tokenizer_hash(changed) != tokenizer_hash(tokenizer)


def test_load_tokenizer_accepts_a_folder_and_names_what_is_wrong(tmp_path, code_tokenizer):
    folder = tmp_path / "tok"
    folder.mkdir()
    with pytest.raises(TokenizerError, match="holds no tokenizer.json"):
        load_tokenizer(folder)
    (folder / "tokenizer.json").write_bytes(code_tokenizer.read_bytes())
    assert eos_id(load_tokenizer(folder)) == 999
    with pytest.raises(TokenizerError, match="missing.json not found: no such file or folder"):
        load_tokenizer(tmp_path / "missing.json")
    (tmp_path / "broken.json").write_text("{", encoding="utf-8")
    with pytest.raises(TokenizerError, match="broken.json is not a valid tokenizer.json"):
        load_tokenizer(tmp_path / "broken.json")


def test_eos_id_requires_endoftext():
    with pytest.raises(TokenizerError, match="no <\\|endoftext\\|> token"):
        eos_id(Tokenizer(models.BPE()))


def test_a_tokenizer_that_does_not_fit_the_model_is_refused(tokenizer):
    size = tokenizer.get_vocab_size(with_added_tokens=True)  # 1,038
    check_fits(tokenizer, 1088, "m.ckpt")  # padded to a multiple of 64, as phi-1 pads 50,295 to 51,200
    check_fits(tokenizer, 1088, "m.ckpt", trained_with=tokenizer_hash(tokenizer))
    with pytest.raises(TokenizerError, match=f"has {size} tokens but m.ckpt only 1000 embedding rows"):
        check_fits(tokenizer, 1000, "m.ckpt")
    with pytest.raises(TokenizerError, match="m.ckpt 4160 embedding rows, 3122 more: it was trained with another"):
        check_fits(tokenizer, 4160, "m.ckpt")  # the demo model's rows: its tokenizer has 4,134 tokens
    with pytest.raises(TokenizerError, match="is not the one m.ckpt was trained with"):
        check_fits(tokenizer, 1088, "m.ckpt", trained_with="0" * 64)


def test_train_tokenizer_cli_trains_and_refuses_to_overwrite(tmp_path, run_python):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.py").write_text("def add(a, b):\n    return a + b\n" * 20, encoding="utf-8")
    (corpus / "b.jsonl").write_text(json.dumps({"text": "Textbooks are all you need.\n"}) + "\n", encoding="utf-8")
    out = tmp_path / "tokenizer.json"
    args = ["-m", "data_prep.train_tokenizer", "--out", str(out), "--vocab-size", "300", str(corpus)]
    run_python(*args)
    trained = load_tokenizer(out)
    assert eos_id(trained) <= 299 and trained.get_vocab_size(with_added_tokens=True) == eos_id(trained) + 39

    refused = run_python(*args, check=False)
    assert refused.returncode == 2
    assert "already exists; pass --overwrite" in refused.stderr and "Traceback" not in refused.stderr
    run_python(*args, "--overwrite")

    (corpus / "c.jsonl").write_text('{"text": "ok"}\n{"text": oops}\n', encoding="utf-8")
    bad = run_python(*args, "--overwrite", check=False)
    assert bad.returncode == 2
    assert f"{corpus / 'c.jsonl'}:2: malformed JSON" in bad.stderr and "Traceback" not in bad.stderr
