"""A small code corpus with a real quality signal, for the tests of data_prep's filtering chain.

Documents are functions of the running interpreter's standard library, one per document. The "educational"
rule that stands in for the LLM: a function whose docstring explains it (over 40 characters) rates 4, any
other 1; a hashed n-gram embedder can learn it from the words of the docstrings, so a classifier that beats
chance has learned something real. Planted contamination: HumanEval/0 verbatim, and renamed with a statement
added and its docstring rewritten (so only the syntax test can catch it).
"""

import ast
import gzip
import json
import re
import sysconfig
import warnings
from pathlib import Path

from evals.problems import load_problems

RENAMED_HUMANEVAL_0 = '''def close_pair_exists(values, limit):
    """Tell whether two of the values lie nearer to one another than the limit allows."""
    count = 0
    for i, a in enumerate(values):
        for j, b in enumerate(values):
            if i != j:
                gap = abs(a - b)
                if gap < limit:
                    return True
    return False
'''


_FUNCTIONS: list[str] = []  # found so far, in order, shared by the tests of one process
_MODULES = iter(sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")))


def stdlib_functions(limit: int) -> list[str]:
    """The source of the first `limit` top-level functions of at least 5 lines in the stdlib's modules."""
    while len(_FUNCTIONS) < limit and (path := next(_MODULES, None)) is not None:
        source = path.read_text(encoding="utf-8", errors="replace")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                tree = ast.parse(source)
        except SyntaxError:
            continue
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.end_lineno - node.lineno + 1 >= 5:
                _FUNCTIONS.append(ast.get_source_segment(source, node))
    return _FUNCTIONS[:limit]


def rating(text: str) -> int:
    """The stand-in for the LLM's rating: 4 if the code explains itself in a docstring, else 1."""
    docstrings = re.findall(r'"""(.*?)"""', text, re.DOTALL)
    return 4 if any(len(doc.strip()) > 40 for doc in docstrings) else 1


def rating_reply(body: dict) -> str:
    """An OpenAI-server reply rating the extract in a data_prep.annotate prompt by `rating`."""
    text = "\n".join(str(message["content"]) for message in body["messages"])
    extract = text.split("<extract>", 1)[1].split("</extract>", 1)[0]
    score = rating(extract)
    return json.dumps({"justification": "explained" if score > 1 else "bare code", "score": score})


def write_labels(path: Path, functions: list[str]) -> Path:
    with open(path, "w") as file:
        for i, text in enumerate(functions):
            file.write(json.dumps({"id": f"f{i}", "text": text, "score": rating(text)}) + "\n")
    return path


def humaneval_0() -> str:
    problem = load_problems("humaneval")[0]
    return problem.prompt + problem.reference


def near_copy(text: str) -> str:
    """`text` with one of its lines changed: a near duplicate for MinHash."""
    lines = text.split("\n")
    lines[len(lines) // 2] += "  # changed"
    return "\n".join(lines)


def read_task_files(folder: Path) -> list[dict]:
    """The documents a datatrove stage wrote to `folder` (data_prep.stages' task files), in task order."""
    return [json.loads(line) for path in sorted(folder.glob("*.jsonl.gz")) for line in gzip.open(path, "rt")]
