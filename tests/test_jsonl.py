import gzip
import json

import pytest

from phi1.jsonl import JsonlAppender, JsonlError, read_jsonl


def test_reads_plain_and_gzip_with_line_numbers(tmp_path):
    rows = [{"a": 1}, {"b": "x\ny"}]
    text = json.dumps(rows[0]) + "\n\n" + json.dumps(rows[1]) + "\n"
    (tmp_path / "r.jsonl").write_text(text)
    with gzip.open(tmp_path / "r.jsonl.gz", "wt") as f:
        f.write(text)
    for name in ("r.jsonl", "r.jsonl.gz"):
        assert list(read_jsonl(tmp_path / name)) == [(1, rows[0]), (3, rows[1])]


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"a": 1}\n{"a": \n{"a": 2}\n', r"bad.jsonl:2: malformed JSON"),
        ('{"a": 1}\n[1, 2]\n', r"bad.jsonl:2: expected a JSON object, got list"),
        ('{"a": 1}\n{"a": 2', r"bad.jsonl:2: malformed JSON"),  # a torn tail is corruption unless skipped
    ],
)
def test_bad_lines_name_the_file_and_line(tmp_path, text, message):
    (tmp_path / "bad.jsonl").write_text(text)
    with pytest.raises(JsonlError, match=message):
        list(read_jsonl(tmp_path / "bad.jsonl"))
    with pytest.raises(JsonlError, match="absent.jsonl: no such file"):
        list(read_jsonl(tmp_path / "absent.jsonl"))


def test_a_torn_tail_is_skipped_on_read_and_cut_before_appending(tmp_path):
    path = tmp_path / "journal.jsonl"
    path.write_bytes(b'{"i": 0}\n{"i": 1}\n{"i": 2, "te')  # killed mid-write
    assert [row["i"] for _, row in read_jsonl(path, torn_tail="skip")] == [0, 1]
    with JsonlAppender(path) as out:
        out.append({"i": 2})
    assert [row["i"] for _, row in read_jsonl(path)] == [0, 1, 2]


def test_a_whole_last_record_without_newline_is_kept_not_glued(tmp_path):
    path = tmp_path / "samples.jsonl"
    path.write_bytes(b'{"i": 0}\n{"i": 1}')  # written by hand, no final newline
    with JsonlAppender(path) as out:
        out.append({"i": 2})
    assert [row["i"] for _, row in read_jsonl(path)] == [0, 1, 2]
