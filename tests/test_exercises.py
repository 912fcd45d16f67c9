"""data_prep.exercises against the local server: only exercises that pass their own asserts in the sandbox are
kept, in the prompt/completion/tests format that data_prep.build_shards reads for finetuning."""

import json
import threading

import numpy as np
import pytest

from data_prep import exercises
from data_prep.build_shards import build_shards
from data_prep.exercises import program, split_exercise
from data_prep.llm import read_records
from evals.sandbox import Sandbox
from phi1.shards import read_manifest

KEY = "sk-test-exercises-1a2b3c4d"

GOOD = [
    '''import math


def count_perfect_squares(numbers: list[int]) -> int:
    """Return how many of the numbers are perfect squares (0 and 1 included; negatives never are)."""
    return sum(1 for n in numbers if n >= 0 and math.isqrt(n) ** 2 == n)


assert count_perfect_squares([0, 1, 2, 4, 10, 16]) == 4
assert count_perfect_squares([]) == 0
assert count_perfect_squares([-4, 3]) == 0
''',
    '''def merge_intervals(intervals: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Merge overlapping closed intervals and return them sorted by start.

    Intervals that touch, like (1, 2) and (2, 3), are merged too.
    """
    merged: list[tuple[int, int]] = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


assert merge_intervals([(5, 6), (1, 3), (2, 4)]) == [(1, 4), (5, 6)]
assert merge_intervals([(1, 2), (2, 3)]) == [(1, 3)]
assert merge_intervals([]) == []
''',
    '''def is_balanced_brackets(text: str) -> bool:
    """Tell whether the (), [] and {} in text are balanced; other characters are ignored."""
    pairs = {")": "(", "]": "[", "}": "{"}
    stack = []
    for char in text:
        if char in "([{":
            stack.append(char)
        elif char in pairs:
            if not stack or stack.pop() != pairs[char]:
                return False
    return not stack


assert is_balanced_brackets("f(a[1], {b: 2})")
assert not is_balanced_brackets("(]")
assert is_balanced_brackets("")
''',
    '''def longest_run_of_equal_readings(readings: list[float]) -> int:
    """Length of the longest stretch of consecutive equal readings from a weather station; 0 for no readings."""
    best = current = 0
    previous = None
    for value in readings:
        current = current + 1 if value == previous else 1
        previous = value
        best = max(best, current)
    return best


assert longest_run_of_equal_readings([1.0, 1.0, 2.5, 2.5, 2.5, 1.0]) == 3
assert longest_run_of_equal_readings([]) == 0
assert longest_run_of_equal_readings([7.0]) == 1
''',
    '''from collections import defaultdict


def group_loans_by_member(loans: list[tuple[str, str]]) -> dict[str, list[str]]:
    """Group (member, book) loans into member -> books, books in loan order; members with no loans are absent."""
    books = defaultdict(list)
    for member, book in loans:
        books[member].append(book)
    return dict(books)


assert group_loans_by_member([("ana", "Dune"), ("bo", "Emma"), ("ana", "Ulysses")]) == {
    "ana": ["Dune", "Ulysses"],
    "bo": ["Emma"],
}
assert group_loans_by_member([]) == {}
''',
]
FAILING = '''def total_minutes(times: list[str]) -> int:
    """Sum durations written as "H:MM"."""
    return sum(int(h) * 60 + int(m) for h, m in (t.split(":") for t in times))


assert total_minutes(["1:30", "0:45"]) == 135
assert total_minutes(["2:00"]) == 100
'''
BROKEN = '''def split_words(text: str) -> list[str]:
    """Split text on whitespace."""
    return text.split(


assert split_words("a b") == ["a", "b"]
'''
EXTRA_STATEMENT = '''def first_even(numbers: list[int]) -> int | None:
    """The first even number, or None."""
    return next((n for n in numbers if n % 2 == 0), None)


print(first_even([1, 2]))
assert first_even([1, 3]) is None
'''


def fenced(code: str) -> str:
    return f"```python\n{code}```\n"


@pytest.fixture
def scripted_server(openai_server):
    """Answers, in arrival order, the five good exercises and the three bad ones."""
    answers = iter([fenced(code) for code in GOOD[:2]] + [fenced(FAILING), fenced(BROKEN)])
    later = iter([fenced(code) for code in GOOD[2:]] + [fenced(EXTRA_STATEMENT)])
    lock = threading.Lock()

    def reply(body):
        with lock:
            return next(answers, None) or next(later)

    openai_server.reply = reply
    return openai_server


def run(out, n, server, monkeypatch, *extra) -> int:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    arguments = ["--model", "gpt-4o-mini", "--n-samples", str(n), "--out", str(out), "--base-url", server.url]
    return exercises.main([*arguments, "--no-progress", "--sandbox-workers", "2", *extra])


def test_only_exercises_that_pass_their_own_asserts_are_kept(tmp_path, scripted_server, monkeypatch, capsys):
    assert run(tmp_path, 8, scripted_server, monkeypatch) == 0
    summary = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert (summary["records"], summary["rejected"], summary["near_duplicates"]) == (5, 3, 0)
    kept = list(read_records(tmp_path / "exercises.jsonl"))
    assert sorted(record["entry_point"] for record in kept) == sorted(
        ["count_perfect_squares", "merge_intervals", "is_balanced_brackets", "longest_run_of_equal_readings",
         "group_loans_by_member"]
    )  # fmt: skip
    reasons = sorted(record["reason"] for record in read_records(tmp_path / ".run" / "rejects.jsonl"))
    assert reasons[0].startswith("does not parse")
    assert reasons[1].startswith("fails its own asserts: failed") and "AssertionError" in reasons[1]
    assert reasons[2] == "line 6: only assert statements may follow the function"
    sandbox = Sandbox(timeout=10, memory_mb=1024)
    for record in kept:
        assert record["prompt"].rstrip().endswith('"""') and record["prompt"].lstrip().startswith(
            ("def", "import", "from")
        )
        assert record["completion"].startswith("    ") and record["tests"].startswith("assert")
        assert set(record["knobs"]) == {"area", "topic", "domain", "difficulty", "constraint", "verb"}
        assert sandbox.run(program(record)).passed
        assert not sandbox.run(record["prompt"] + "    pass\n" + "\n" + record["tests"]).passed  # the tests bite


def test_exercise_answers_are_split_at_the_docstring():
    fields = split_exercise(fenced(GOOD[0]))
    assert fields["prompt"] == GOOD[0].split("    return")[0]
    assert fields["completion"] == "    return sum(1 for n in numbers if n >= 0 and math.isqrt(n) ** 2 == n)\n"
    assert fields["tests"].count("assert ") == 3 and fields["entry_point"] == "count_perfect_squares"
    assert split_exercise("no code here") == "expected one ```python block, found 0"
    assert split_exercise(fenced(GOOD[0]) + fenced(GOOD[1])) == "expected one ```python block, found 2"
    stub = 'def f(x: int) -> int:\n    """Double x."""\n    ...\n\n\nassert f(1) == 2\n'
    assert split_exercise(fenced(stub)) == "the body of f is a stub"
    undocumented = "def f(x: int) -> int:\n    return 2 * x\n\n\nassert f(1) == 2\n"
    assert split_exercise(fenced(undocumented)) == "f has no docstring"
    unrelated = 'def f(x: int) -> int:\n    """Double x."""\n    return 2 * x\n\n\nassert 1 + 1 == 2\n'
    assert split_exercise(fenced(unrelated)) == "the assert on line 6 does not call f"
    assert split_exercise(fenced(unrelated.split("\n\n\n")[0] + "\n")) == "no assert follows the function"


def test_build_shards_reads_generated_exercises_and_textbooks(tmp_path, scripted_server, monkeypatch, code_tokenizer):
    from test_textbooks import passage

    from data_prep import textbooks

    assert run(tmp_path / "exercises", 8, scripted_server, monkeypatch) == 0
    scripted_server.reply = passage
    textbook_arguments = ["--model", "gpt-4o-mini", "--n-samples", "4", "--out", str(tmp_path / "textbooks")]
    assert textbooks.main([*textbook_arguments, "--base-url", scripted_server.url, "--no-progress"]) == 0
    # the folders themselves: their .run ledgers are hidden from the shard builder
    build_shards(code_tokenizer, tmp_path / "shards" / "textbooks", [tmp_path / "textbooks"])
    manifest = read_manifest(tmp_path / "shards" / "textbooks")
    assert manifest["num_documents"] == 4 and not manifest["loss_mask"]
    out = tmp_path / "shards" / "exercises"
    build_shards(code_tokenizer, out, [tmp_path / "exercises"], field="completion", prompt_field="prompt")
    manifest = read_manifest(out)
    assert manifest["num_documents"] == 5 and manifest["loss_mask"]
    masks = np.concatenate([np.fromfile(out / shard["mask_file"], dtype=np.uint8) for shard in manifest["shards"]])
    assert 0 < masks.mean() < 1  # prompts masked out, completions kept
