"""What the synthetic data is about: the knobs whose product makes the textbooks and CodeExercises diverse (§2.2).

phi-1 made its GPT-3.5 data diverse "by constraining topics and target audience" (textbooks) and "by constraining
function names" (exercises). As Cosmopedia, TinyStories and SciPhi found, a prompt is diverse only if the knobs
change what the model must write, so here each audience carries its own instructions (vocabulary, depth, what to
show and what to leave out), not just a name; seed settings ground every example in a different domain; and
exercises draw a name prefix, a domain and a constraint on the solution.

Knobs are drawn with `pick`, which uses only `random.Random.random()`: its stream is the one Python promises to
keep across versions, and a drawn knob changes a request's id (data_prep.llm), so a resumed run must draw the same.
Changing these lists changes the requests: bump the template versions in textbooks.py and exercises.py.
"""

import random
from collections.abc import Sequence


def pick(rng: random.Random, options: Sequence):
    return options[int(rng.random() * len(options))]


def pick_several(rng: random.Random, options: Sequence, count: int) -> list:
    chosen: list = []
    while len(chosen) < count:
        option = pick(rng, options)
        if option not in chosen:
            chosen.append(option)
    return chosen


# Basic to intermediate Python and computer science, the ground phi-1's textbooks cover ("reasoning and basic
# algorithmic skills"); grouped by area so coverage can be audited per area.
TOPICS = {
    "values and control flow": (
        "variables, names and assignment",
        "integer and floating-point arithmetic and its surprises",
        "booleans, comparisons and short-circuit evaluation",
        "if, elif and else chains",
        "while loops and loop invariants",
        "for loops over ranges and collections",
        "break, continue and loop else clauses",
        "nested loops and their cost",
        "string indexing and slicing",
        "string methods for cleaning text",
        "formatting output with f-strings",
        "truthiness and None",
    ),
    "functions": (
        "defining functions, parameters and return values",
        "default and keyword arguments",
        "variable scope and the LEGB rule",
        "pure functions versus side effects",
        "functions as values and higher-order functions",
        "lambda expressions and when not to use them",
        "closures",
        "decorators from first principles",
        "recursion and base cases",
        "recursion versus iteration",
        "docstrings and type hints as specifications",
        "generators and lazy evaluation with yield",
    ),
    "data structures": (
        "lists: appending, inserting and removing",
        "list comprehensions",
        "tuples and unpacking",
        "dictionaries for counting and grouping",
        "sets and membership tests",
        "mutable versus immutable objects and aliasing",
        "copying: shallow and deep",
        "stacks with Python lists",
        "queues with collections.deque",
        "heaps with heapq",
        "two-dimensional grids as lists of lists",
        "linked lists built from classes",
        "binary trees and their traversals",
        "graphs as adjacency lists",
        "collections.Counter and defaultdict",
        "namedtuples and dataclasses for records",
    ),
    "algorithms": (
        "linear search and its worst case",
        "binary search and off-by-one errors",
        "selection sort and insertion sort",
        "merge sort",
        "quicksort and choosing a pivot",
        "sorting with key functions",
        "two pointers technique",
        "sliding window technique",
        "prefix sums",
        "hashing to find pairs and duplicates",
        "greedy algorithms and when they fail",
        "divide and conquer",
        "memoization",
        "dynamic programming on sequences",
        "dynamic programming on grids",
        "backtracking: permutations and subsets",
        "breadth-first search",
        "depth-first search",
        "shortest paths with Dijkstra's algorithm",
        "topological sorting",
        "union-find for connected components",
        "interval problems: merging and overlaps",
        "string matching and palindromes",
        "bit manipulation tricks",
        "prime numbers and the sieve of Eratosthenes",
        "greatest common divisor and modular arithmetic",
        "simulating a process step by step",
    ),
    "reasoning about programs": (
        "Big-O notation by counting operations",
        "time versus memory trade-offs",
        "tracing code by hand",
        "edge cases: empty, single and huge inputs",
        "writing assert-based tests",
        "reading tracebacks and debugging",
        "exceptions: raising and handling",
        "input validation",
        "floating-point comparison",
        "refactoring repeated code into functions",
        "invariants and preconditions",
    ),
    "objects and the standard library": (
        "classes, attributes and methods",
        "__init__, __repr__ and __eq__",
        "inheritance versus composition",
        "iterators and the iterator protocol",
        "context managers and the with statement",
        "reading and writing text files",
        "parsing CSV data with the csv module",
        "dates and times with datetime",
        "itertools for combinations and grouping",
        "functools: reduce, partial and lru_cache",
        "regular expressions for simple patterns",
        "random numbers and reproducible simulations",
        "JSON serialization",
    ),
}

# Each audience changes what a good text must contain, not only its tone.
AUDIENCES = {
    "first-time programmer": (
        "The reader has never written a program. Define every technical term the first time it appears, in plain "
        "words. Use one everyday analogy, then drop it. Keep each code block under 12 lines, use only built-in "
        "functions, print intermediate values and show what is printed in a comment. Never assume knowledge of "
        "mathematics beyond arithmetic."
    ),
    "high-school student": (
        "The reader is a high-school student who knows basic Python syntax and school algebra. Motivate the idea "
        "with a small puzzle or game, solve it step by step, and end with a short exercise and its worked "
        "solution. Mention the number of steps an algorithm takes in words, not in Big-O notation."
    ),
    "computer-science undergraduate": (
        "The reader is a second-year computer-science student. State the invariant, recurrence or key property "
        "behind each algorithm and argue briefly why it holds. Give time and space complexity in Big-O with a "
        "one-line justification. Show a tempting but wrong version and the input that breaks it."
    ),
    "self-taught working developer": (
        "The reader writes Python at work but never studied computer science. Start from a realistic bug or slow "
        "script, then fix it. Prefer idiomatic standard-library tools (collections, itertools, functools, "
        "dataclasses) and say why they are better than the hand-written loop. Point out one pitfall that bites in "
        "production code."
    ),
    "scientist learning to program": (
        "The reader is a scientist who analyses data in spreadsheets and is learning Python. Use small tables of "
        "measurements (lists of tuples or dicts) as running examples, explain how to check results against a "
        "hand calculation, and show how to make a computation reproducible. No third-party libraries."
    ),
    "competitive programmer": (
        "The reader solves contest problems. Be terse. State input limits and the complexity they call for, "
        "derive the efficient algorithm from a brute force, and list the edge cases that fail submissions. Code "
        "should be compact but readable, with descriptive names."
    ),
}

STYLES = {
    "textbook section": (
        "a textbook section that builds the idea in small steps, each a short paragraph followed by code that uses it"
    ),
    "worked problem": "a worked problem: state it, solve it naively, find the flaw, then improve the solution",
    "exercise set": "three graded exercises, each with a full solution and an explanation of why it works",
    "debugging walkthrough": (
        "a debugging walkthrough: a plausible buggy function, the symptom, how to find the cause, and the fix"
    ),
    "comparison": "a comparison of two or three ways to do the same task, with when to choose each",
    "hand trace": (
        "a hand trace: run a function on a small input and show the state after every step in comments, then "
        "generalise from what the trace shows"
    ),
}

# Settings for the examples, drawn two at a time for textbooks and one at a time for exercises.
DOMAINS = (
    "a bakery's daily orders",
    "train timetables",
    "a chess board",
    "weather station readings",
    "library loans",
    "DNA sequences",
    "music playlists",
    "a parking garage",
    "election ballots",
    "a warehouse inventory",
    "cooking recipes",
    "football league tables",
    "bank transactions",
    "a maze",
    "heart-rate sensor data",
    "student grades",
    "a bus route network",
    "social network friendships",
    "an online shop's cart",
    "a hospital waiting list",
    "planetary orbits",
    "a vending machine",
    "text messages",
    "a crossword grid",
    "flight bookings",
    "a garden's watering schedule",
    "a card game",
    "stock prices",
    "a thermostat",
    "a spreadsheet of expenses",
    "hiking trails",
    "a to-do list app",
    "elevator requests",
    "a recipe's shopping list",
    "a board game's dice rolls",
    "traffic lights",
    "a museum's visitor counts",
    "a file system's folders",
    "a music festival's stages",
    "bird sightings",
    "a restaurant's table reservations",
    "a tournament bracket",
    "a river's water levels",
    "a bike-sharing system",
    "an email inbox",
    "a solar panel's output",
    "a quiz game",
    "a zoo's feeding schedule",
    "a cinema's seat map",
    "a marathon's split times",
    "package deliveries",
    "a calendar of meetings",
    "a pixel image",
    "a cash register",
    "a word-guessing game",
    "a fitness tracker",
    "a queue at a post office",
    "a chemistry lab's samples",
    "a city's population census",
    "a robot on a grid",
    "a phone contact list",
    "a library's catalogue numbers",
    "a coffee shop's loyalty cards",
    "an ant colony",
    "a school timetable",
    "a power grid",
    "a conveyor belt of parcels",
    "a poem's rhymes",
    "a sudoku puzzle",
)

# Exercises: the function name must start with one of these verbs (phi-1's constraint on function names).
NAME_VERBS = (
    "count",
    "find",
    "merge",
    "split",
    "group",
    "rank",
    "normalize",
    "validate",
    "encode",
    "decode",
    "simulate",
    "schedule",
    "summarize",
    "compress",
    "flatten",
    "rotate",
    "match",
    "parse",
    "format",
    "filter",
    "sort",
    "partition",
    "interleave",
    "reverse",
    "balance",
    "estimate",
    "detect",
    "convert",
    "collect",
    "pair",
    "shortest",
    "longest",
    "minimum",
    "maximum",
    "total",
    "average",
    "first",
    "last",
    "is",
    "can",
    "build",
    "route",
    "fill",
    "trim",
    "deduplicate",
    "window",
    "score",
    "check",
)

DIFFICULTIES = {
    "easy": "one idea, a loop or a comprehension, solvable in under 10 lines",
    "medium": "two ideas combined (for example a dictionary and sorting), with at least one edge case to handle",
    "hard": "several steps of reasoning, with a named technique where it fits the topic (dynamic programming, a "
    "graph search, two pointers ...), so that the obvious brute force is too slow or wrong",
}

CONSTRAINTS = (
    "use only built-in functions and types",
    "do not use any import",
    "the solution must be recursive",
    "the solution must run in linear time",
    "the solution must not modify its arguments",
    "handle empty inputs explicitly",
    "use a dictionary in the solution",
    "use a generator expression or comprehension",
    "use the standard library where it helps (collections, itertools, heapq, bisect)",
    "validate the arguments and raise ValueError with a clear message for invalid ones",
)


def topic_pairs() -> list[tuple[str, str]]:
    """(area, topic) for every topic, in a fixed order."""
    return [(area, topic) for area, topics in TOPICS.items() for topic in topics]
