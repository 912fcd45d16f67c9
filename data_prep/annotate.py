"""LLM annotation of a stratified sample of the code-language data (paper §2.1: GPT-4 rated ~100k samples
for "educational value for a student whose goal is to learn basic coding concepts"; those labels train the
quality classifier, `data_prep.classifier`).

    python -m data_prep.annotate --out DIR --model gpt-4 --n-samples 100000 [--input PATH ...] [--stack]
        [--stackoverflow] [--seed 0] [--max-chars 6000] [engine flags: --base-url --concurrency --max-cost-usd
        --backend ...] [--executor local|slurm] [--tasks N] ...

The input is meant to be deduplicated data (``data_prep.dedup``'s ``WORK/deduplicated``): a copy of a document
costs no second request (the request id hashes the text), but near copies would. It writes
``DIR/labels.jsonl``: per document its `id`, `text` (as sent, see --max-chars), origin, `stratum`,
`score` (0-5), `justification`, the `model` that answered, `prompt_version` and the `request_id`; and
``DIR/annotation_report.json``: per stratum, documents in the corpus, sampled, labelled and the mean score.

The sample is stratified by source, length (code words: < 100, < 1,000, more) and a cheap heuristic, the share
of lines that are comments or docstrings (< 5%, < 20%, more), so that short and long files, commented and bare
code, Stack files and StackOverflow posts are all rated, however rare in the corpus. Each stratum gets an
equal share of --n-samples (a stratum with fewer documents gives its unused share to the others); within a
stratum the sample is uniform: the documents with the smallest keyed hash of their id (BLAKE2b keyed by
--seed), the same sample whatever the number of tasks. Stages (datatrove): `sample-keys` (each task keeps its
smallest keys per stratum and counts the stratum sizes), `sample-choose` (one task allocates the shares and
picks the ids), `sample-fetch` (each task writes the chosen documents), `annotate` (one task asks the LLM).

The prompt (PROMPT_VERSION) asks for a short justification and then a score on an additive 5-point rubric, as
FineWeb-Edu and Stack-Edu found more reliable than a bare rating, as one JSON object
``{"justification": "...", "score": N}``. An answer that is not exactly that is unusable: the engine
(`data_prep.llm`) asks again a bounded number of times, then reports it in ``DIR/llm/errors.jsonl``; it is
never guessed. The engine owns resumability, retries, the cost cap and the API key (from OPENAI_API_KEY,
written nowhere). A rerun of this command pays only for the documents not yet rated (those that failed, or
that a budget stop left out) and rebuilds `labels.jsonl` from the engine's ledger. Exit status: 0 when the rating
ran through (documents whose requests failed are left unlabelled, see the report), 1 when the engine cannot go on
(a refused key, an unknown model), 2 for bad flags or input, 3 when --max-cost-usd stopped it: the rating stage
then stays unfinished, so a rerun with a higher cap carries on (in data_prep.pipeline too, before anything is
trained on part of the labels).
"""

import argparse
import hashlib
import heapq
import json
import os
import re
import sys
from pathlib import Path

from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from data_prep.code_words import code_words
from data_prep.sources import add_source_arguments, start_source_job
from data_prep.stages import Stage, TaskOutputReader, add_execution_arguments, job_settings, run_job, task_writer
from phi1.errors import ConfigError

PROMPT_VERSION = "edu-rubric-v1"
MAX_SCORE = 5
LENGTH_BUCKETS = ((100, "short"), (1000, "medium"), (None, "long"))  # code words
COMMENT_BUCKETS = ((0.05, "bare"), (0.20, "commented"), (None, "explained"))  # share of comment/docstring lines

SYSTEM_PROMPT = "You are an experienced teacher of programming who rates material for a Python course."
RUBRIC = """Below is an extract from a code file or a programming Q&A post. Rate its educational value for a \
student whose goal is to learn basic coding concepts, using the additive 5-point scoring system below. Points \
accumulate: award each point only if the extract meets its criterion.

- Add 1 point if the extract contains valid Python code (or a post built around such code), even if it is \
boilerplate, configuration, generated code or data with little to learn from.
- Add another point if the code puts practical programming concepts to work (functions, loops, conditions, \
data structures, error handling), even without explaining them.
- Award a third point if the extract is suitable for learning: readable names, comments or docstrings that say \
what the code does, and self-contained rather than tied to a large codebase the reader cannot see.
- Give a fourth point if it is clearly relevant to learning basic coding concepts (algorithms, data structures, \
control flow, functions): well structured and explained step by step, like a good exercise or tutorial.
- Grant a fifth point if it is outstanding teaching material: it explains the reasoning behind the code and is \
a complete, clear lesson a student could learn from with nothing else.

Score 0 if no criterion is met (no code, garbled text, pure data).

The extract:
<extract>
{text}
</extract>

First justify your rating in at most 80 words, then give the total. Answer with exactly one JSON object and \
nothing else: {{"justification": "<at most 80 words>", "score": <integer from 0 to 5>}}"""


# ----------------------------------------------------------------------------- strata and the sample


def comment_share(text: str) -> float:
    """The share of non-blank lines that are comments or inside triple-quoted strings (docstrings): a cheap
    stand-in for "explains itself"."""
    explained = total = 0
    in_string = None
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        total += 1
        if in_string:
            explained += 1
            if stripped.count(in_string) % 2 == 1:
                in_string = None
        elif stripped.startswith("#"):
            explained += 1
        else:
            for quote in ('"""', "'''"):
                if stripped.count(quote) % 2 == 1:
                    in_string = quote
                    explained += 1
                    break
                if stripped.startswith(quote):
                    explained += 1  # a one-line docstring
                    break
    return explained / total if total else 0.0


def _bucket(value: float, buckets) -> str:
    return next(name for limit, name in buckets if limit is None or value < limit)


def stratum(document: Document) -> str:
    """``source/length/comments``, e.g. ``the-stack/medium/bare``."""
    source = document.metadata.get("source", "local")
    length = _bucket(len(code_words(document.text)), LENGTH_BUCKETS)
    return f"{source}/{length}/{_bucket(comment_share(document.text), COMMENT_BUCKETS)}"


def sample_key(document_id: str, seed: int) -> str:
    """The order of the sample: a keyed hash of the id, uniform and the same on every task."""
    return hashlib.blake2b(document_id.encode(), digest_size=16, key=str(seed).encode()).hexdigest()


def allocate(sizes: dict[str, int], n: int) -> dict[str, int]:
    """Equal shares of `n` over the strata; a stratum smaller than its share gives the rest to the others."""
    shares, remaining = {}, n
    ordered = sorted(sizes, key=lambda name: (sizes[name], name))
    for i, name in enumerate(ordered):
        shares[name] = min(sizes[name], remaining // (len(ordered) - i))
        remaining -= shares[name]
    for name in sorted(ordered, key=lambda name: (-sizes[name], name)):  # the remainder, one each, largest first
        extra = min(remaining, sizes[name] - shares[name], 1)
        shares[name] += extra
        remaining -= extra
    return shares


class StratumKeys(PipelineStep):
    """Per task: the size of each stratum and its `limit` smallest sample keys, to ``folder/<task>.json``."""

    type = "🎲 - SAMPLE"
    name = "stratum keys"

    def __init__(self, folder: str | Path, limit: int, seed: int):
        super().__init__()
        self.folder, self.limit, self.seed = str(folder), limit, seed

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        sizes: dict[str, int] = {}
        heaps: dict[str, list[tuple[str, str]]] = {}  # stratum -> max-heap (negated) of (key, id)
        for document in data:
            name = stratum(document)
            sizes[name] = sizes.get(name, 0) + 1
            item = (_negate(sample_key(document.id, self.seed)), document.id)
            heap = heaps.setdefault(name, [])
            if len(heap) < self.limit:
                heapq.heappush(heap, item)
            elif item > heap[0]:
                heapq.heapreplace(heap, item)
            self.stat_update("documents")
            yield document
        keys = {name: sorted((_negate(key), doc_id) for key, doc_id in heap) for name, heap in heaps.items()}
        Path(self.folder).mkdir(parents=True, exist_ok=True)
        (Path(self.folder) / f"{rank:05d}.json").write_text(json.dumps({"sizes": sizes, "keys": keys}))


def _negate(key: str) -> str:
    """A hex key whose order is reversed (heapq is a min-heap; the heap must drop the largest key)."""
    return key.translate(str.maketrans("0123456789abcdef", "fedcba9876543210"))


class ChooseSample(PipelineStep):
    """One task: merge the tasks' keys, allocate the shares and write the chosen ids and the strata sizes."""

    type = "🎲 - SAMPLE"
    name = "choose sample"

    def __init__(self, keys: str | Path, out: str | Path, n: int):
        super().__init__()
        self.keys, self.out, self.n = str(keys), str(out), n

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        sizes: dict[str, int] = {}
        keys: dict[str, list] = {}
        for part in sorted(Path(self.keys).glob("*.json")):
            content = json.loads(part.read_text())
            for name, size in content["sizes"].items():
                sizes[name] = sizes.get(name, 0) + size
            for name, items in content["keys"].items():
                keys.setdefault(name, []).extend(map(tuple, items))
        available = {name: len(set(doc_id for _, doc_id in items)) for name, items in keys.items()}
        shares = allocate(available, self.n)
        chosen = {}
        for name, items in keys.items():
            ids = list(dict.fromkeys(doc_id for _, doc_id in sorted(items)))  # a document once, smallest key first
            for doc_id in ids[: shares[name]]:
                chosen[doc_id] = name
            self.stat_update("chosen", value=min(shares[name], len(ids)))
        strata = {name: {"documents": sizes[name], "sampled": shares.get(name, 0)} for name in sorted(sizes)}
        Path(self.out).write_text(json.dumps({"strata": strata, "ids": chosen}))
        yield from data or ()


class FetchSample(PipelineStep):
    """Per task: pass on the chosen documents, each once, tagged with its stratum."""

    type = "🎲 - SAMPLE"
    name = "fetch sample"

    def __init__(self, choice: str | Path):
        super().__init__()
        self.choice = str(choice)

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        chosen = json.loads(Path(self.choice).read_text())["ids"]
        seen = set()
        for document in data:
            self.stat_update("total")
            if document.id in chosen and document.id not in seen:
                seen.add(document.id)
                document.metadata["stratum"] = chosen[document.id]
                self.stat_update("forwarded")
                yield document


# ----------------------------------------------------------------------------- the LLM


def rating_request(document: Document, model: str, max_chars: int):
    """The engine request rating one document (its first `max_chars` characters)."""
    from data_prep.llm import Request

    body = {
        "model": model,
        "messages": [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": RUBRIC.format(text=document.text[:max_chars])},
        ],
        "temperature": 0.0,
        "max_tokens": 300,
    }
    return Request.make(body, PROMPT_VERSION, seed=0)


ANSWER = re.compile(r"\A\s*(?:```(?:json)?\s*)?(\{.*\})\s*(?:```)?\s*\Z", re.DOTALL)


def parse_rating(content: str) -> tuple[int, str]:
    """(score, justification) of an answer that is one JSON object as the prompt asks (a ```json fence
    around it is tolerated); ValueError saying what is wrong otherwise."""
    match = ANSWER.match(content or "")
    if match is None:
        raise ValueError("not a single JSON object")
    try:
        answer = json.loads(match.group(1))
    except ValueError:
        raise ValueError("not valid JSON") from None
    if not isinstance(answer, dict) or set(answer) != {"justification", "score"}:
        raise ValueError(
            f"expected the keys justification and score, got {sorted(answer) if isinstance(answer, dict) else answer!r}"
        )
    score, justification = answer["score"], answer["justification"]
    if not isinstance(score, int) or isinstance(score, bool) or not 0 <= score <= MAX_SCORE:
        raise ValueError(f"score must be an integer from 0 to {MAX_SCORE}, got {score!r}")
    if not isinstance(justification, str) or not justification.strip():
        raise ValueError("justification must be a non-empty string")
    return score, justification.strip()


def rating_problem(content: str) -> str | None:
    """The engine's `check`: why an answer is unusable, or None."""
    try:
        parse_rating(content)
    except ValueError as error:
        return f"unusable rating: {error}"
    return None


class StoppedAtBudget(Exception):
    """--max-cost-usd stopped the rating before the whole sample was rated (exit status 3)."""


class Annotate(PipelineStep):
    """One task: rate the sample's documents through the LLM engine, then write the labels and the report."""

    type = "🏷️ - ANNOTATE"
    name = "LLM rating"

    def __init__(self, sample: str | Path, choice: str | Path, out: str | Path, model: str, engine, max_chars: int):
        super().__init__()
        self.sample, self.choice, self.out = str(sample), str(choice), str(out)
        self.model, self.engine_settings, self.max_chars = model, engine, max_chars

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        from data_prep.llm import Engine

        documents = list(self._sample())
        requests = [rating_request(document, self.model, self.max_chars) for document in documents]
        out = Path(self.out)
        engine = Engine(out / "llm", self.engine_settings)
        try:
            summary = engine.run(requests, check=rating_problem, total=len(requests), description="rating")
            answers = engine.answers({request.id for request in requests})  # this run's and earlier ones
        finally:
            engine.close()
        labelled = [
            self._label(document, answers[request.id], request.id)
            for document, request in zip(documents, requests, strict=True)
            if request.id in answers
        ]
        _write_lines(out / "labels.jsonl", labelled)
        report = self._report(labelled, len(documents), summary)
        (out / "annotation_report.json").write_text(json.dumps(report, indent=2) + "\n")
        self.stat_update("labelled", value=len(labelled))
        self.stat_update("unlabelled", value=len(documents) - len(labelled))
        rated = f"{out / 'labels.jsonl'}: {len(labelled):,} of {len(documents):,} documents rated"
        print(f"{rated}; ${summary.cost_usd:.4f} this run, ${summary.total_cost_usd:.4f} in all", file=sys.stderr)
        if summary.stopped == "budget":  # the stage stays unfinished: a rerun asks for the rest
            raise StoppedAtBudget(f"{rated}: stopped at the cost cap; rerun with a higher --max-cost-usd to carry on")
        yield from data or ()

    def _sample(self):
        from datatrove.pipeline.readers import JsonlReader

        folder = Path(self.sample)
        if not any(folder.glob("*.jsonl.gz")):
            return
        seen = set()
        for document in JsonlReader(str(folder), glob_pattern="*.jsonl.gz").run():
            if document.id not in seen:  # copies of one text in several tasks' files: rated once
                seen.add(document.id)
                yield document

    def _label(self, document: Document, answer, request_id: str) -> dict:
        score, justification = parse_rating(answer.content)  # the engine kept only answers that parse
        origin = {key: document.metadata.get(key) for key in ("source", "repo", "path", "license", "post")}
        return {
            "id": document.id,
            "text": document.text[: self.max_chars],
            "truncated": len(document.text) > self.max_chars,
            **{key: value for key, value in origin.items() if value is not None},
            "stratum": document.metadata.get("stratum"),
            "score": score,
            "justification": justification,
            "model": answer.model or self.model,
            "prompt_version": PROMPT_VERSION,
            "request_id": request_id,
        }

    def _report(self, labels: list[dict], sampled: int, summary) -> dict:
        strata = json.loads(Path(self.choice).read_text())["strata"]
        for name, entry in strata.items():
            scores = [label["score"] for label in labels if label["stratum"] == name]
            entry.update(labelled=len(scores), mean_score=sum(scores) / len(scores) if scores else None)
        return {
            "model": self.model,
            "prompt_version": PROMPT_VERSION,
            "sampled": sampled,
            "labelled": len(labels),
            "failed": sampled - len(labels),
            "cost_usd_total": summary.total_cost_usd,
            "stopped": summary.stopped,
            "strata": strata,
        }


def _write_lines(path: Path, records: list[dict]) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "w", encoding="utf-8") as file:
        for record in records:
            file.write(json.dumps(record, ensure_ascii=False) + "\n")
    os.replace(temporary, path)


def annotation_stages(
    source: Path, work: Path, n: int, seed: int, model: str, engine, max_chars: int, ask_again: bool = False
) -> list[Stage]:
    """Sample from the task files in `source` and rate the sample; labels in ``work/labels.jsonl``. With
    `ask_again`, a rerun runs the rating stage again, which asks only for the ratings still missing."""
    keys, choice, sample = work / "sample" / "keys", work / "sample" / "choice.json", work / "sample" / "documents"
    return [
        Stage("sample-keys", [TaskOutputReader(source), StratumKeys(keys, n, seed)]),
        Stage("sample-choose", [ChooseSample(keys, choice, n)], tasks=1),
        Stage("sample-fetch", [TaskOutputReader(source), FetchSample(choice), task_writer(sample)]),
        Stage(
            "annotate",
            [Annotate(sample, choice, work, model, engine, max_chars)],
            tasks=1,
            skip_completed=not ask_again,
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    from data_prep.llm import ENGINE_RUNTIME_FLAGS, EngineError, add_engine_arguments, engine_settings

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="work folder (resumed if it holds this job)")
    parser.add_argument("--n-samples", type=int, required=True, help="documents to rate")
    parser.add_argument("--seed", type=int, default=0, help="which sample")
    parser.add_argument("--max-chars", type=int, default=6000, help="characters of a document sent to the LLM")
    add_source_arguments(parser)
    add_engine_arguments(parser)
    add_execution_arguments(parser)
    args = parser.parse_args(argv)
    settings = engine_settings(args, parser)
    try:
        if args.n_samples < 1 or args.max_chars < 1:
            raise ConfigError("--n-samples and --max-chars must be at least 1")
        options, readers = start_source_job(args, job_settings(args, ENGINE_RUNTIME_FLAGS))
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    work = args.out
    stages = [Stage("read", [*readers, task_writer(work / "documents")])]
    stages += annotation_stages(
        work / "documents", work, args.n_samples, args.seed, args.model, settings, args.max_chars, ask_again=True
    )
    try:
        return run_job(stages, options, work / "logs", work / "report.json")
    except EngineError as error:  # a refused key, an unknown model: nothing to retry
        print(f"error: {error}", file=sys.stderr)
        return 1
    except StoppedAtBudget as error:
        print(error, file=sys.stderr)
        return 3


if __name__ == "__main__":
    raise SystemExit(main())
