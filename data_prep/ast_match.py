"""The AST match rate of paper §5: how much of a benchmark solution's syntax a piece of code contains, in a way
that survives renaming and light edits (data_prep.decontaminate flags training data by it).

Code is parsed (the whole text, or else its fenced code blocks) and normalized: the names the code binds
(variables, functions, arguments, classes, imports), docstrings and type annotations don't count; literals count
by type; attribute names and free names such as ``len`` count, since renaming leaves them alone. A reference
solution is matched against each region of the code, a function (with what it nests) or another top-level
statement: a statement of the solution whose whole normalized subtree occurs in the region covers all its nodes;
otherwise a compound statement (def, for, if, while, with, try, ...) covers its own header (the node and its
non-statement children: arguments, test, target, iterator ...) if a statement with the same header occurs, and its
body statements are matched one by one; each statement of the region is used once. The match rate is
2M / (|solution| + |region|) for M covered nodes, symmetric like an edit-distance ratio: a renamed copy scores 1,
a copy with s nodes added 2n / (2n + s) (one statement in a 40-node function: about 0.95), where an exact-tree
comparison would score it 0; and a large function that merely contains a small solution's common statements
scores low.

Trees are compared by Python's `hash` of their normalized nodes, which differs between processes: compare units
made in the same process only.
"""

import ast
import re
import warnings
from collections import Counter
from dataclasses import dataclass, field

STATEMENT_LEVEL = (ast.stmt, ast.ExceptHandler, ast.match_case)
DROPPED_FIELDS = {"ctx", "annotation", "returns", "type_comment", "type_params"}
STATEMENT_LISTS = {"body", "orelse", "finalbody", "handlers", "cases"}  # of statement nodes
FENCED = re.compile(r"```[^\n]*\n(.*?)```", re.DOTALL)


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


def parse_quietly(code: str) -> ast.Module:
    with warnings.catch_warnings():  # the code's own invalid escapes and the like are not our business
        warnings.simplefilter("ignore")
        return ast.parse(code)


def _parse_units(code: str, imports: bool = True) -> list[Unit] | None:
    try:
        module = parse_quietly(code)
        bound = bound_names(module)
        statements = _statements(module, "body", module.body)
        if not imports:
            statements = [
                statement for statement in statements if not isinstance(statement, ast.Import | ast.ImportFrom)
            ]
        return [_encode(statement, bound)[2] for statement in statements]
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None


def solution_units(code: str) -> list[Unit] | None:
    """The top-level statements of a reference solution as Units, its imports aside (they are the file's
    business, not the solution's); None if it does not parse."""
    return _parse_units(code, imports=False)


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


def unit_rate(unit: Unit, hashes: Counter, size: int) -> tuple[float, int]:
    """(rate 2M / (|unit| + |region|), M) of a reference statement in one region."""
    nodes = min(covered(unit, Counter(hashes)), size)
    return 2 * nodes / (unit.size + size), nodes


def best_match(unit: Unit, places: list[tuple[Counter, int]]) -> tuple[int, int]:
    """(covered nodes, region size) of the region where `unit` has the highest rate; (0, 0) if none covers any."""
    best, best_rate = (0, 0), 0.0
    for hashes, size in places:
        if 2 * min(unit.size, size) / (unit.size + size) <= best_rate:
            continue  # too different in size to do better, whatever it holds
        rate, nodes = unit_rate(unit, hashes, size)
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
