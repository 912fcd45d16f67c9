"""A synthetic-data run (paper §2.2): requests drawn from the taxonomy, answered through the LLM engine, checked,
and kept as records; resumable at any point and extendable by asking for more. data_prep.textbooks and
data_prep.exercises are its two recipes and share its command line.

    DIR/<kind>.jsonl          the data, one record per line (textbooks.jsonl, exercises.jsonl)
    DIR/.run/settings.json    what fixes the requests: kind, template version, model, seed, sampling (no secrets)
    DIR/.run/rejects.jsonl    answers paid for that are not data: id, reason, stage, knobs, the raw answer
    DIR/.run/responses.jsonl  the engine's ledger (data_prep.llm): every raw answer, with errors.jsonl and
                              batches.jsonl beside it

`.run` is hidden, so `python -m data_prep.build_shards ... DIR` reads the data and nothing else.

Request i is fixed by (--seed, i): its knobs are drawn from random.Random(sha256("seed/i")), so the same command
asks the same requests and a larger --n-samples asks the same first ones, then more. Each answer, as soon as the
ledger holds it, goes to a checker thread: the recipe's checks (code that parses; exercises that pass their own
asserts in the sandbox), then the near-duplicate filter (data_prep.near_duplicates), then the data file or the
rejects file. An answer ends in exactly one of them; a rerun first checks the answers the ledger holds but neither
file does (a kill came in between), then asks only for ids that have no answer. So a run killed at any moment and
rerun ends with every request answered once: N records when no answer is rejected.

Exit status: 0 when every request is settled (a record or a reject), 1 when some failed (errors.jsonl; rerun to
try them again), 2 for bad flags or settings, 3 when --max-cost-usd stopped the run (rerun with a higher cap).
"""

import argparse
import hashlib
import json
import queue
import random
import sys
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

from tqdm import tqdm

from data_prep.llm import (
    Answer,
    Engine,
    EngineError,
    EngineSettings,
    Request,
    add_engine_arguments,
    engine_settings,
    read_records,
)
from phi1.errors import ConfigError
from phi1.jsonl import JsonlAppender

RUN_FOLDER = ".run"
CHECK_BATCH = 64  # answers checked together (the sandbox runs an exercise batch in parallel)
DIVERSITY_WARNING = 0.05  # warn when more than this share of checked answers are near-duplicates


class Recipe(Protocol):
    kind: str  # names the data file
    template: str  # version of the prompt template: part of every request id
    max_tokens: int  # default --max-tokens

    def knobs(self, rng: random.Random) -> dict: ...

    def messages(self, knobs: dict) -> list[dict]: ...

    def check(self, contents: list[str]) -> list[dict | str]:
        """For each answer, the record's fields (text, or prompt/completion/tests), or why it is rejected."""

    def dedup_text(self, fields: dict) -> str: ...


@dataclass(frozen=True)
class Sampling:
    model: str
    seed: int
    temperature: float
    max_tokens: int


def sample_request(recipe: Recipe, sampling: Sampling, index: int) -> tuple[Request, dict]:
    """Request `index` of the run and its knobs."""
    digest = hashlib.sha256(f"{sampling.seed}/{index}".encode()).digest()
    knobs = recipe.knobs(random.Random(int.from_bytes(digest[:8], "big")))
    body = {
        "model": sampling.model,
        "messages": recipe.messages(knobs),
        "temperature": sampling.temperature,
        "max_tokens": sampling.max_tokens,
    }
    return Request.make(body, recipe.template, f"{sampling.seed}/{index}"), knobs


def check_settings(folder: Path, settings: dict) -> None:
    """Record the settings that fix the requests, or check that they match the folder's; ConfigError if not."""
    path = folder / "settings.json"
    if path.exists():
        kept = json.loads(path.read_text())
        for name, value in settings.items():
            if kept.get(name) != value:
                raise ConfigError(
                    f"{folder.parent} was made with {name}={kept.get(name)!r}, this run asks for {value!r}: its "
                    "requests would differ; use the same settings to resume or extend it, or another --out"
                )
    else:
        folder.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(settings, indent=1) + "\n")


class Checker:
    """A thread that checks answers as they arrive and appends each to the data or the rejects."""

    def __init__(self, recipe: Recipe, sampling: Sampling, out: Path, progress: bool):
        self.recipe, self.sampling = recipe, sampling
        self.data_path, self.rejects_path = out / f"{recipe.kind}.jsonl", out / RUN_FOLDER / "rejects.jsonl"
        from data_prep.near_duplicates import NearDuplicates  # datasketch imports scipy: not for --help

        self.near_duplicates = NearDuplicates()
        self.settled: set[str] = set()
        self.records = self.rejected = self.duplicates = 0
        for record in tqdm(read_records(self.data_path), desc="near-duplicate index", unit="rec", disable=not progress):
            self.settled.add(record["id"])
            self.near_duplicates.add(record["id"], recipe.dedup_text(record))
            self.records += 1
        for record in read_records(self.rejects_path):
            self.settled.add(record["id"])
            self.rejected += 1
            self.duplicates += record["stage"] == "near-duplicate"
        self.data, self.rejects = JsonlAppender(self.data_path), JsonlAppender(self.rejects_path)
        self.queue: queue.Queue = queue.Queue()
        self.error: BaseException | None = None
        self.bar = tqdm(desc="checked", unit="ans", position=1, disable=not progress)
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def put(self, answer: Answer, index: int, knobs: dict) -> None:
        if self.error is not None:
            raise RuntimeError("the answer checker failed") from self.error
        self.queue.put((answer, index, knobs))

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join()
        self.bar.close()
        self.data.close()
        self.rejects.close()
        if self.error is not None:
            raise RuntimeError("the answer checker failed") from self.error

    def _loop(self) -> None:
        try:
            while (item := self.queue.get()) is not None:
                batch = [item]
                while len(batch) < CHECK_BATCH and not self.queue.empty():
                    if (item := self.queue.get()) is None:
                        self._settle(batch)
                        return
                    batch.append(item)
                self._settle(batch)
        except BaseException as error:  # surfaced by put and close
            self.error = error

    def _settle(self, batch: list[tuple[Answer, int, dict]]) -> None:
        verdicts = self.recipe.check([answer.content for answer, _, _ in batch])
        for (answer, index, knobs), verdict in zip(batch, verdicts, strict=True):
            stage = "check"
            if isinstance(verdict, dict):
                duplicate = self.near_duplicates.add(answer.id, self.recipe.dedup_text(verdict))
                if duplicate is None:
                    self.data.append(self._record(answer, index, knobs, verdict))
                    self.records += 1
                    self.settled.add(answer.id)
                    continue
                verdict, stage = f"near-duplicate of {duplicate}", "near-duplicate"
                self.duplicates += 1
            self.rejects.append(
                {"id": answer.id, "reason": verdict, "stage": stage, "knobs": knobs, "content": answer.content}
            )
            self.rejected += 1
            self.settled.add(answer.id)
        self.bar.update(len(batch))
        self.bar.set_postfix_str(f"{self.records} kept, {self.rejected} rejected", refresh=False)

    def _record(self, answer: Answer, index: int, knobs: dict, fields: dict) -> dict:
        return {
            "id": answer.id,
            **fields,
            "knobs": knobs,
            "template": self.recipe.template,
            "model": answer.model or self.sampling.model,
            "seed": self.sampling.seed,
            "index": index,
            "usage": answer.usage,
            "cost_usd": answer.cost_usd,
        }


def generate(recipe: Recipe, out: Path, sampling: Sampling, n_samples: int, settings: EngineSettings) -> dict:
    """Settle requests 0 .. n_samples-1 into `out` (see the module docstring); the run's summary."""
    run_folder = out / RUN_FOLDER
    check_settings(run_folder, {"kind": recipe.kind, "template": recipe.template, **asdict(sampling)})
    with Engine(run_folder, settings) as engine:
        checker = Checker(recipe, sampling, out, settings.progress)
        try:
            ids = [sample_request(recipe, sampling, index)[0].id for index in range(n_samples)]
            index_of = {request_id: index for index, request_id in enumerate(ids)}

            def on_answer(answer: Answer) -> None:
                if answer.id in index_of:  # else an answer to a request beyond this run's n_samples
                    index = index_of[answer.id]
                    checker.put(answer, index, sample_request(recipe, sampling, index)[1])

            for answer in engine.answers(set(ids) - checker.settled).values():  # answered, not yet checked
                on_answer(answer)
            unsettled = [index for index, request_id in enumerate(ids) if request_id not in checker.settled]
            summary = engine.run(
                (sample_request(recipe, sampling, index)[0] for index in unsettled),
                on_answer=on_answer,
                total=len(unsettled),
                description=recipe.kind,
            )
        finally:
            checker.close()
    checked = checker.records + checker.rejected
    return {
        "kind": recipe.kind,
        "data": str(checker.data_path),
        "requested": n_samples,
        "records": checker.records,
        "rejected": checker.rejected,
        "near_duplicates": checker.duplicates,
        "duplicate_rate": round(checker.duplicates / checked, 4) if checked else 0.0,
        "failed": summary.failed,
        "answered_now": summary.answered,
        "prompt_tokens": summary.prompt_tokens,
        "cached_tokens": summary.cached_tokens,
        "completion_tokens": summary.completion_tokens,
        "tokens_per_second": round(summary.tokens_per_second, 1),
        "cost_usd": round(summary.cost_usd, 6),
        "total_cost_usd": round(summary.total_cost_usd, 6),
        "priced": summary.priced,
        "stopped": summary.stopped,
    }


def main(
    recipe_for: Callable[[argparse.Namespace, argparse.ArgumentParser], Recipe],
    description: str,
    default_max_tokens: int,
    add_arguments: Callable[[argparse.ArgumentParser], None] = lambda parser: None,
    argv: list[str] | None = None,
    prog: str | None = None,
) -> int:
    """The command line of a recipe (data_prep.textbooks, data_prep.exercises); returns the exit status."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--n-samples", type=int, required=True, help="requests to settle (a larger N extends)")
    parser.add_argument("--out", type=Path, required=True, help="folder of the data and of the run's ledger")
    parser.add_argument("--seed", type=int, default=0, help="fixes the knobs of every request")
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature")
    parser.add_argument("--max-tokens", type=int, default=default_max_tokens, help="longest answer, in tokens")
    add_engine_arguments(parser)
    add_arguments(parser)
    args = parser.parse_args(argv)
    if args.n_samples < 0:
        parser.error(f"--n-samples must not be negative, got {args.n_samples}")
    if args.max_tokens < 1:
        parser.error(f"--max-tokens must be at least 1, got {args.max_tokens}")
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"--out {args.out} is a file; it must be a folder")
    settings = engine_settings(args, parser)
    recipe = recipe_for(args, parser)
    sampling = Sampling(args.model, args.seed, args.temperature, args.max_tokens)
    try:
        summary = generate(recipe, args.out, sampling, args.n_samples, settings)
    except (ConfigError, EngineError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to carry on", file=sys.stderr)
        return 130
    print(json.dumps(summary))
    if summary["duplicate_rate"] > DIVERSITY_WARNING:
        print(
            f"diversity warning: {summary['duplicate_rate']:.1%} of checked answers were near-duplicates "
            f"({summary['near_duplicates']}); widen the taxonomy or raise --temperature",
            file=sys.stderr,
        )
    if not summary["priced"]:
        print(f"note: {args.model} has no price in the table; its cost counts as 0 (--prices FILE)", file=sys.stderr)
    if summary["stopped"] == "budget":
        print(f"stopped at --max-cost-usd {args.max_cost_usd}: rerun with a higher cap to carry on", file=sys.stderr)
        return 3
    if summary["failed"]:
        rerun = f"see {args.out / RUN_FOLDER / 'errors.jsonl'}; rerun the same command to try them again"
        print(f"{summary['failed']} requests failed: {rerun}", file=sys.stderr)
        return 1
    return 0
