"""Throughput of the filtering chain's CPU stages (paper §2.1 filtering, §5 decontamination), documents/s.

    python -m bench.filter [--max-mb 16] [--repeats 2]

The corpus is a deterministic sample of the running interpreter's standard library (`--max-mb` of .py files,
one document each), written as JSONL. Each section measures side by side in one run and prints ratios; the best
of `--repeats` runs, interleaved so a busy machine slows all alike. The datatrove stages' figures include their
fixed costs (task start, loading the classifier or the benchmarks, 25 bucket tasks), which a larger corpus
amortizes.

- "embed + classify": the offline hashed embedder alone, then embedder + random forest (100 trees, trained on
  600 rated stdlib functions; not timed) as `data_prep.filter` runs them in memory, then the whole datatrove
  filter stage (one task: JSONL read, embed, classify, write kept and dropped) through LocalPipelineExecutor.
- "near dedup": datatrove's four MinHash stages for code (25 bands x 10 hashes, 5-word shingles; signatures,
  buckets, clusters, filter, with their disk I/O), against datasketch's MinHash + MinHashLSH with the same bands,
  rows and shingles, all in memory, as a reference point.
- "decontamination": matching against all 664 HumanEval + MBPP problems in memory, the 13-gram test alone and
  with the AST test, then the datatrove decontamination stage end to end (one task).
"""

import argparse
import ast
import contextlib
import gzip
import io
import json
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from data_prep.classifier import save_classifier, train_classifier
from data_prep.code_words import code_words
from data_prep.decontaminate import BenchmarkIndex, DecontaminationFilter, load_references
from data_prep.dedup import code_minhash_config, near_dedup_stages
from data_prep.demo_corpus import standard_library_files
from data_prep.embed import EmbedderSpec, embed_documents
from data_prep.filter import filter_stage
from data_prep.sources import document_id
from data_prep.stages import ExecutionOptions, Stage, TaskOutputReader, run_stages, task_writer


def write_task_file(texts: list[str], folder: Path) -> Path:
    """The corpus as task 0's file of a stage (datatrove JSONL: text, id, metadata)."""
    folder.mkdir(parents=True, exist_ok=True)
    with gzip.open(folder / "00000.jsonl.gz", "wt", encoding="utf-8") as out:
        for i, text in enumerate(texts):
            out.write(json.dumps({"text": text, "id": document_id(text), "metadata": {"path": f"doc{i}"}}) + "\n")
    return folder


def run_quietly(stages: list[Stage], work: Path) -> None:
    """Run the stages in this process, one task each; datatrove's logs and the report go to a buffer."""
    with contextlib.redirect_stderr(io.StringIO()):
        run_stages(stages, ExecutionOptions(tasks=1, workers=1), work / "logs", work / "report.json")


def best_rate(documents: int, runs: list[float]) -> float:
    return documents / min(runs)


def line(name: str, texts: list[str], times: list[float], reference: float, versus: str) -> str:
    rate = best_rate(len(texts), times)
    megabytes = sum(map(len, texts)) / 1e6 / min(times)
    return f"  {name:<24}{rate:9,.0f} documents/s {megabytes:7.2f} MB/s   {rate / reference:5.2f} x {versus}"


def timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def rated_functions(texts: list[str], limit: int = 600) -> tuple[list[str], np.ndarray]:
    """Functions of the corpus rated as the tests' stand-in for the LLM does: 4 if a docstring explains them."""
    functions = []
    for text in texts:
        try:
            tree = ast.parse(text)
        except SyntaxError:
            continue
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and len(functions) < limit:
                functions.append(ast.get_source_segment(text, node))
    scores = np.array([4 if len(ast.get_docstring(ast.parse(f).body[0]) or "") > 40 else 1 for f in functions])
    return functions, scores


def bench_classify(texts: list[str], workdir: Path, repeats: int) -> None:
    functions, scores = rated_functions(texts)
    spec = EmbedderSpec(kind="hashed", dim=1024)
    embedder = spec.build()
    tokens = np.array([len(code_words(text)) for text in functions])
    classifier = train_classifier(embedder.embed(functions), scores, tokens, spec, embedder.identity)
    save_classifier(classifier, workdir / "classifier")
    ids = [document_id(text) for text in texts]
    source = write_task_file(texts, workdir / "corpus")
    runs = {"embed": [], "embed + classify": [], "datatrove stage": []}
    for repeat in range(repeats):
        runs["embed"].append(timed(lambda: embed_documents(embedder, ids, texts, None, 256)))
        runs["embed + classify"].append(
            timed(lambda: classifier.scores(embed_documents(embedder, ids, texts, None, 256)))
        )
        work = workdir / f"filter{repeat}"
        stage = filter_stage(
            [TaskOutputReader(source)], work / "kept", work / "dropped", workdir / "classifier", work / "embeddings"
        )
        stage.pipeline[1].progress = False
        runs["datatrove stage"].append(timed(lambda stage=stage, work=work: run_quietly([stage], work)))
    embed = best_rate(len(texts), runs["embed"])
    print(f"\nembed + classify ({len(texts)} documents, hashed embedder 1024 dims, random forest 100 trees)")
    for name, times in runs.items():
        print(line(name, texts, times, embed, "embedding alone"))


def bench_near_dedup(texts: list[str], workdir: Path, repeats: int) -> None:
    from datasketch import MinHash, MinHashLSH

    from data_prep.code_words import CodeWordTokenizer

    config = code_minhash_config()
    source = write_task_file(texts, workdir / "dedup-corpus")
    runs = {"datatrove, 4 stages": [], "datasketch, in memory": []}

    def datasketch_run():
        lsh = MinHashLSH(num_perm=250, params=(config.num_buckets, config.hashes_per_bucket))
        tokenizer = CodeWordTokenizer()
        for i, text in enumerate(texts):
            words = tokenizer.word_tokenize(text)
            shingles = {" ".join(words[j : j + 5]).encode() for j in range(max(len(words) - 4, 0))}
            signature = MinHash(num_perm=250, seed=1)
            signature.update_batch(list(shingles))
            lsh.query(signature)
            lsh.insert(str(i), signature)

    for repeat in range(repeats):
        work = workdir / f"dedup{repeat}"
        stages = near_dedup_stages(source, work / "out", work, config)
        runs["datatrove, 4 stages"].append(timed(lambda stages=stages, work=work: run_quietly(stages, work)))
        runs["datasketch, in memory"].append(timed(datasketch_run))
    reference = best_rate(len(texts), runs["datasketch, in memory"])
    print(f"\nnear dedup ({len(texts)} documents, 25 bands x 10 hashes, 5-word shingles)")
    for name, times in runs.items():
        print(line(name, texts, times, reference, "datasketch"))


def bench_decontamination(texts: list[str], workdir: Path, repeats: int) -> None:
    references = load_references(["humaneval", "mbpp"], {})
    index = BenchmarkIndex(references)
    source = write_task_file(texts, workdir / "decont-corpus")
    runs = {"13-grams": [], "13-grams + AST": [], "datatrove stage": []}
    for repeat in range(repeats):
        runs["13-grams"].append(timed(lambda: [index.ngram_matches(text) for text in texts]))
        runs["13-grams + AST"].append(
            timed(lambda: [(index.ngram_matches(text), index.ast_matches(text, 0.8)) for text in texts])
        )
        work = workdir / f"decont{repeat}"
        step = DecontaminationFilter(work / "parts")
        stage = Stage("decontaminate", [TaskOutputReader(source), step, task_writer(work / "clean")])
        runs["datatrove stage"].append(timed(lambda stage=stage, work=work: run_quietly([stage], work)))
    ngrams = best_rate(len(texts), runs["13-grams"])
    print(f"\ndecontamination ({len(texts)} documents against {len(references)} HumanEval + MBPP problems)")
    for name, times in runs.items():
        print(line(name, texts, times, ngrams, "13-grams alone"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-mb", type=float, default=16.0, help="megabytes of stdlib sources")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    files = standard_library_files(int(args.max_mb * 1e6))
    texts = [text for file in files if (text := file.read_text(encoding="utf-8")).strip()]
    warnings.simplefilter("ignore", SyntaxWarning)  # the stdlib's own test data
    print(f"corpus: {len(texts)} stdlib files, {sum(map(len, texts)) / 1e6:.1f} MB")
    workdir = Path(tempfile.mkdtemp(prefix="bench-filter-"))
    try:
        bench_classify(texts, workdir, args.repeats)
        bench_near_dedup(texts, workdir, args.repeats)
        bench_decontamination(texts, workdir, args.repeats)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
