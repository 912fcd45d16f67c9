"""Grade completions with an LLM judge instead of unit tests, as the paper graded its 50 unconventional problems
with GPT-4 to check understanding beyond HumanEval (§4, Table 2).

    python -m evals.judge --model gpt-4 --samples samples.jsonl --out results.jsonl
        [--benchmark unconventional|humaneval|mbpp|PROBLEMS.jsonl] [--pass-score 7] [--ledger DIR]
        [--max-cost-usd X] [--base-url URL] [--backend online|batch] [--concurrency C] ...

The judge model reads the problem (the prompt a model was given) and the solution (for HumanEval-format problems,
the prompt followed by the completion), grades it on the written rubric below, and answers with a short
justification and a machine-readable "Score: N" line (0-10); an answer without one is asked again (up to three
paid answers). `unconventional`, the default benchmark, is this project's own set of problems in
HumanEval's format (evals/data/unconventional.jsonl, written for it: none of HumanEval's or MBPP's), each with
a reference solution and tests: `evals.generate` samples it and `evals.evaluate` grades it too.

Samples and output are those of `evals.evaluate`: samples are {task_id, completion} lines; each output row has
task_id, completion, passed (score >= --pass-score), result ("score N/10: justification"), plus score and
justification; the summary on stdout's last line has pass@k, problems, samples and passed, plus `score`, the
mean grade over 10 (the paper's "score" column: phi-1 52%), and the judge model. The judge runs on the LLM
engine of the synthetic data (data_prep.llm): requests are keyed by their content, so identical samples are
graded once and a killed run, rerun, pays only for what was in flight; its ledger is --ledger (default: the
--out path + ".ledger"). Exit status: 0, 1 if some samples could not be graded (rerun to retry them), 2 for bad
input, 3 if --max-cost-usd stopped it.
"""

import argparse
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from data_prep.llm import Engine, EngineError, Request, add_engine_arguments, engine_settings
from evals.evaluate import read_samples
from evals.pass_at_k import summarize
from evals.problems import MBPP_PROMPTS, Problem, load_problems
from phi1.errors import ConfigError

TEMPLATE = "judge-v1"
MAX_TOKENS = 400

SYSTEM = "You are a strict, fair grader of Python solutions. You check what code does; you are not swayed by comments."
RUBRIC = """Grade a solution to a programming problem.

Problem:
```python
{problem}
```

Solution:
```python
{solution}
```

Rubric, from 0 to 10:
- 10: correct for every input the problem allows, edge cases included.
- 8-9: correct, with only cosmetic flaws (naming, redundant steps, a needless import).
- 5-7: the right approach, correct on typical inputs, but wrong on an edge case or on one stated requirement.
- 2-4: shows it understood the task, but is wrong on typical inputs or does not run.
- 0-1: empty, unrelated, or a restatement of the problem.
Judge correctness first: trace the solution by hand on one typical input and one edge case from the problem. \
Ignore style unless it hides a bug. Do not reward length or comments.

Answer in exactly this form:
Justification: <two to four sentences>
Score: <an integer from 0 to 10>"""

SCORE = re.compile(r"^\W*score\W*(\d{1,2})(?:\s*/\s*10)?\W*$", re.IGNORECASE | re.MULTILINE)  # "**Score:** 8/10"
JUSTIFICATION = re.compile(r"^\W*justification\W*", re.IGNORECASE | re.MULTILINE)


class Incomplete(RuntimeError):
    """Some samples have no grade: their requests failed, or the cost cap was reached (`budget`)."""

    def __init__(self, message: str, budget: bool):
        super().__init__(message)
        self.budget = budget


def read_grade(answer: str) -> tuple[int, str] | None:
    """(score, justification) of a judge's answer; None if its last score line is missing or not from 0 to 10."""
    scores = list(SCORE.finditer(answer))
    if not scores or int(scores[-1].group(1)) > 10:
        return None
    before = answer[: scores[-1].start()]
    label = JUSTIFICATION.search(before)
    return int(scores[-1].group(1)), before[label.end() if label else 0 :].strip()


def grading_request(problem: Problem, completion: str, model: str) -> Request:
    """The request that grades `completion`; its id depends only on the model, the problem and the solution."""
    solution = problem.prefix + completion
    user = RUBRIC.format(problem=problem.prompt.strip("\n"), solution=solution.strip("\n"))
    body = {
        "model": model,
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}],
        "temperature": 0.0,
        "max_tokens": MAX_TOKENS,
    }
    return Request.make(body, TEMPLATE, seed=0)


def judge(
    problems: Sequence[Problem], samples: Sequence[dict], engine: Engine, model: str, pass_score: int = 7
) -> tuple[list[dict], dict]:
    """Grade every sample with the judge `model`; (one row per sample, a summary), as evals.evaluate returns.
    Raises Incomplete if some sample has no grade after the run."""
    by_id = {problem.task_id: problem for problem in problems}
    requests = [grading_request(by_id[sample["task_id"]], sample["completion"], model) for sample in samples]
    unique = list({request.id: request for request in requests}.values())
    summary = engine.run(
        unique, check=lambda answer: None if read_grade(answer) else "no 'Score: N' line", total=len(unique)
    )
    answers = engine.ledger.answers({request.id for request in requests})
    missing = len({request.id for request in requests} - set(answers))
    if missing:
        budget = summary.stopped == "budget"
        why = "the cost cap was reached" if budget else "their requests failed (see errors.jsonl in the ledger)"
        raise Incomplete(f"{missing} of {len(unique)} gradings are missing: {why}; rerun to carry on", budget)
    rows = []
    for sample, request in zip(samples, requests, strict=True):
        score, justification = read_grade(answers[request.id].content)
        rows.append(
            {
                "task_id": sample["task_id"],
                "completion": sample["completion"],
                "passed": score >= pass_score,
                "result": f"score {score}/10: {justification}",
                "score": score,
                "justification": justification,
            }
        )
    return rows, {
        **summarize(rows),
        "score": round(sum(row["score"] for row in rows) / (10 * len(rows)), 4),
        "judge": model,
        "cost_usd": round(summary.total_cost_usd, 6),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evals.judge", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--benchmark",
        default="unconventional",
        help="unconventional (this project's set), humaneval, mbpp, or a problem file in HumanEval's format",
    )
    parser.add_argument("--data", help="a local copy of humaneval or mbpp")
    parser.add_argument("--mbpp-prompt", choices=MBPP_PROMPTS, default="zero-shot", help="MBPP's prompt style")
    parser.add_argument("--samples", required=True, help="JSONL of {task_id, completion}")
    parser.add_argument("--out", required=True, type=Path, help="JSONL to write, one row per sample")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    parser.add_argument("--pass-score", type=int, default=7, help="the score (0-10) from which a sample passes")
    parser.add_argument("--ledger", type=Path, help="the engine's folder (default: OUT.ledger)")
    add_engine_arguments(parser)
    args = parser.parse_args(argv)
    if args.out.exists() and not args.overwrite:
        parser.error(f"--out {args.out} exists; pass --overwrite to replace it")
    if not args.out.parent.is_dir():
        parser.error(f"--out {args.out}: directory {args.out.parent} does not exist")
    if not 0 <= args.pass_score <= 10:
        parser.error(f"--pass-score must be from 0 to 10, got {args.pass_score}")
    settings = engine_settings(args, parser)
    try:
        problems = load_problems(args.benchmark, args.data, mbpp_prompt=args.mbpp_prompt)
        samples = read_samples(args.samples, problems)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        with Engine(args.ledger or args.out.with_name(args.out.name + ".ledger"), settings) as engine:
            rows, summary = judge(problems, samples, engine, args.model, args.pass_score)
    except EngineError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except Incomplete as error:
        print(f"error: {error}", file=sys.stderr)
        return 3 if error.budget else 1
    with open(args.out, "w", encoding="utf-8") as file:
        file.writelines(json.dumps(row) + "\n" for row in rows)
    print(json.dumps({**summary, "benchmark": args.benchmark}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
