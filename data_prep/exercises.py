"""Synthetic CodeExercises, phi-1's finetuning set (paper §2.2): a function signature with a docstring to
complete, then its solution, made diverse by constraining function names and topics.

    python -m data_prep.exercises --model gpt-3.5-turbo --n-samples N --out DIR [--concurrency C] [--seed S]
        [--max-cost-usd X] [--base-url URL] [--backend online|batch] [--sandbox-timeout S] [--unsafe-no-isolation]

Each request draws a topic, a domain, a difficulty, a constraint on the solution and the verb the function's
name must start with (data_prep.taxonomy); the prompt design is in docs/synthetic_data.md. The model answers
with one ```python block: imports, exactly one function (signature, docstring, body), then `assert` lines that
call it. The record's `prompt` is everything up to the end of the docstring, its `completion` the body and its
`tests` the asserts; `prompt + completion + "\\n" + tests` is run in the evals sandbox (evals.sandbox, the one
that grades HumanEval) and only an exercise that passes its own asserts becomes a record in
DIR/exercises.jsonl; one that does not parse, breaks the format or fails goes to the rejects with the reason.
`python -m data_prep.build_shards --field completion --prompt-field prompt` reads the file for finetuning, the
loss on the completion only. The run itself (resume, budget, batch, near-duplicates) is data_prep.synthetic.
"""

import argparse
import ast
import os
import random
import sys

from data_prep import synthetic
from data_prep.taxonomy import CONSTRAINTS, DIFFICULTIES, DOMAINS, NAME_VERBS, pick, topic_pairs
from data_prep.textbooks import PYTHON_BLOCK
from evals.sandbox import Sandbox, SandboxUnavailable

TEMPLATE = "exercise-v1"
MAX_TOKENS = 1024

SYSTEM = (
    "You write Python exercises for a textbook: precise specifications and correct solutions, checked by tests "
    "whose expected values you have worked out by hand."
)
USER = """Write one Python exercise and its solution.

Topic: {topic}.
Setting: {domain}.
Difficulty: {difficulty}, that is {difficulty_description}.
Constraint on the solution: {constraint}.
The function's name must start with "{verb}_".

Answer with exactly one ```python block and nothing outside it. The block holds, in this order:
1. the imports the solution needs, if any (standard library only);
2. one function: a signature with type hints; a docstring that states the task, the arguments, the return value \
and the handling of edge cases precisely enough that the solution is determined; then the body;
3. three to six `assert` lines that call the function on small inputs, at least one of them an edge case.
Nothing else: no other functions or classes, no print calls, no `if __name__ == "__main__":`, no comments outside \
the function."""


def split_exercise(content: str) -> dict | str:
    """{prompt, completion, tests, entry_point} of an answer in the requested format, or why it is not."""
    blocks = PYTHON_BLOCK.findall(content)
    if len(blocks) != 1:
        return f"expected one ```python block, found {len(blocks)}"
    code = blocks[0]
    try:
        statements = ast.parse(code).body
    except SyntaxError as error:
        return f"does not parse: {error.msg} (line {error.lineno})"
    imports = 0
    while imports < len(statements) and isinstance(statements[imports], ast.Import | ast.ImportFrom):
        imports += 1
    if imports == len(statements) or not isinstance(statements[imports], ast.FunctionDef):
        return "expected imports, then one function, then asserts"
    function, asserts = statements[imports], statements[imports + 1 :]
    if not asserts:
        return "no assert follows the function"
    for statement in asserts:
        if not isinstance(statement, ast.Assert):
            return f"line {statement.lineno}: only assert statements may follow the function"
        calls = [node for node in ast.walk(statement) if isinstance(node, ast.Call)]
        if not any(isinstance(call.func, ast.Name) and call.func.id == function.name for call in calls):
            return f"the assert on line {statement.lineno} does not call {function.name}"
    if ast.get_docstring(function) is None:
        return f"{function.name} has no docstring"
    docstring, body = function.body[0], function.body[1:]
    if not body:
        return f"{function.name} has no body after its docstring"
    if body[0].lineno <= docstring.end_lineno:
        return f"the body of {function.name} starts on the line of its docstring"
    if all(_is_stub(statement) for statement in body):
        return f"the body of {function.name} is a stub"
    lines = code.splitlines(keepends=True)
    tests = "".join("".join(lines[statement.lineno - 1 : statement.end_lineno]) for statement in asserts)
    return {
        "prompt": "".join(lines[: docstring.end_lineno]),
        "completion": "".join(lines[docstring.end_lineno : function.end_lineno]),
        "tests": tests if tests.endswith("\n") else tests + "\n",
        "entry_point": function.name,
    }


def _is_stub(statement: ast.stmt) -> bool:
    if isinstance(statement, ast.Pass):
        return True
    if isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant):
        return True  # `...` or a string
    return isinstance(statement, ast.Raise) and "NotImplementedError" in ast.unparse(statement)


def program(fields: dict) -> str:
    """The program an exercise must pass: the solution, then its asserts."""
    return fields["prompt"] + fields["completion"] + "\n" + fields["tests"]


class Exercises:
    kind, template, max_tokens = "exercises", TEMPLATE, MAX_TOKENS

    def __init__(self, sandbox: Sandbox, workers: int | None = None):
        self.sandbox, self.workers = sandbox, workers

    def knobs(self, rng: random.Random) -> dict:
        area, topic = pick(rng, topic_pairs())
        return {
            "area": area,
            "topic": topic,
            "domain": pick(rng, DOMAINS),
            "difficulty": pick(rng, sorted(DIFFICULTIES)),
            "constraint": pick(rng, CONSTRAINTS),
            "verb": pick(rng, NAME_VERBS),
        }

    def messages(self, knobs: dict) -> list[dict]:
        user = USER.format(**knobs, difficulty_description=DIFFICULTIES[knobs["difficulty"]])
        return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]

    def check(self, contents: list[str]) -> list[dict | str]:
        verdicts = [split_exercise(content) for content in contents]
        parsed = [index for index, verdict in enumerate(verdicts) if isinstance(verdict, dict)]
        results = self.sandbox.run_many([program(verdicts[index]) for index in parsed], self.workers, progress=False)
        for index, result in zip(parsed, results, strict=True):
            if not result.passed:
                verdicts[index] = f"fails its own asserts: {result.status}"
        return verdicts

    def dedup_text(self, fields: dict) -> str:
        return fields["prompt"] + fields["completion"]


def add_sandbox_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("sandbox (evals.sandbox) that runs each exercise against its asserts")
    group.add_argument("--sandbox-timeout", type=float, default=10.0, help="seconds per exercise, wall clock")
    group.add_argument("--sandbox-memory-mb", type=int, default=1024, help="address-space limit per exercise")
    group.add_argument("--sandbox-workers", type=int, default=os.cpu_count(), help="exercises run at once")
    group.add_argument(
        "--unsafe-no-isolation",
        action="store_true",
        help="run without namespaces when neither bwrap nor unshare works (model code can harm this machine)",
    )


def recipe_for(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Exercises:
    if args.sandbox_workers is not None and args.sandbox_workers < 1:
        parser.error(f"--sandbox-workers must be at least 1, got {args.sandbox_workers}")
    try:
        sandbox = Sandbox(args.sandbox_timeout, args.sandbox_memory_mb, allow_unsafe=args.unsafe_no_isolation)
    except (ValueError, SandboxUnavailable) as error:
        parser.error(str(error))
    return Exercises(sandbox, args.sandbox_workers)


def main(argv: list[str] | None = None) -> int:
    return synthetic.main(
        recipe_for,
        __doc__.split("\n\n")[0],
        MAX_TOKENS,
        add_arguments=add_sandbox_arguments,
        argv=argv,
        prog="python -m data_prep.exercises",
    )


if __name__ == "__main__":
    sys.exit(main())
