"""data_prep.ast_match: the AST match rate of paper §5 survives renaming and light edits, and nothing else matches."""

from test_decontaminate import SORT

from data_prep.ast_match import code_units, match_rate, regions


def rate(reference: str, record: str) -> float:
    return match_rate(code_units(reference), regions(code_units(record)))


def test_renaming_docstrings_and_annotations_do_not_count():
    renamed = """def ordered(xs: list[int]) -> list[int]:
    size = len(xs)
    for a in range(size):
        for b in range(size - 1 - a):
            if xs[b] > xs[b + 1]:
                xs[b], xs[b + 1] = xs[b + 1], xs[b]
    return xs
"""
    assert rate(SORT, renamed) == 1.0
    assert code_units(SORT)[0].full == code_units(renamed)[0].full  # the very same normalized tree


def test_a_statement_added_lowers_the_rate_a_little_where_the_exact_tree_differs():
    added = SORT.replace("    return items", "    print(items)\n    return items")
    assert code_units(SORT)[0].full != code_units(added)[0].full  # an exact-tree comparison misses it
    assert 0.9 < rate(SORT, added) < 1.0
    nested = SORT.replace("            if items", "            count = 0\n            if items")
    assert 0.9 < rate(SORT, nested) < 1.0


def test_other_code_does_not_match():
    assert rate(SORT, SORT.replace(">", "<")) < 1.0  # the comparison is part of the tree
    assert rate(SORT, SORT.replace("len(items)", "max(items)")) < 1.0  # free names (builtins) count
    assert rate(SORT, "def f(x):\n    return x + 1\n") < 0.3
    # the same statements scattered over unrelated functions are not a copy
    scattered = "def a(items):\n    n = len(items)\n    return items\n\ndef b(x):\n    print(x)\n"
    assert rate(SORT, scattered) < 0.5
