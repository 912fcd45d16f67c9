"""Synthetic Python textbooks, the second part of CodeTextbook (paper §2.2): prose interleaved with code, written
by an LLM for reasoning and basic algorithms, made diverse by constraining topic and audience.

    python -m data_prep.textbooks --model gpt-3.5-turbo --n-samples N --out DIR [--concurrency C] [--seed S]
        [--max-cost-usd X] [--base-url URL] [--backend online|batch]

Each request draws an area and topic, an audience (with instructions of its own), a style, two domains for the
examples and a length from data_prep.taxonomy; the prompt design is in docs/synthetic_data.md. An answer becomes a
record {id, text, knobs, ...} in DIR/textbooks.jsonl when, after the cleanup below, it has at least MIN_WORDS
words, balanced code fences (an unclosed one means the passage was cut) and at least one ```python block, every
one of which parses. The cleanup removes the stock openings and closings the prompt forbids but a model still
writes ("Sure! Here is ...", "Welcome to ...", "In conclusion, ..."); a record whose text was changed keeps the
answer as `raw_text`. The run itself (resume, budget, batch, near-duplicates, exit status) is data_prep.synthetic.
"""

import ast
import random
import re
import sys

from data_prep import synthetic
from data_prep.taxonomy import AUDIENCES, DOMAINS, STYLES, pick, pick_several, topic_pairs

TEMPLATE = "textbook-v1"
MAX_TOKENS = 2048
MIN_WORDS = 150
LENGTHS = (400, 600, 900)  # words asked for

SYSTEM = (
    "You write clear, correct teaching material about Python programming. You never pad, never address the "
    "person who asked, and every piece of code you show runs."
)
USER = """Write a passage of a Python textbook on this topic: {topic} (part of "{area}").

Reader: {audience_instructions}

Form: {style_description}.

Set the examples in {domains}.

Rules:
- Prose interleaved with code. Every ```python block is complete, valid Python 3 that runs on its own using only \
the standard library. Show what code prints in comments, not as bare text inside a block.
- Start directly with the first idea. No greeting, no restating of this request, and none of the stock openings \
"Welcome to", "In this section", "In this chapter", "Sure", "Certainly", "Have you ever wondered".
- Stop when the last idea is done: no "In conclusion", no recap of what was covered, no offer of further help.
- About {length} words."""

FENCE = re.compile(r"^```[ \t]*([\w+-]*)[ \t]*$", re.MULTILINE)
PYTHON_BLOCK = re.compile(
    r"^```[ \t]*(?:python3?|py)[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL | re.IGNORECASE
)
CHATTY_FIRST_LINE = re.compile(
    r"\A\s*(?:sure|certainly|of course|absolutely|great question|here(?:'s| is| are))\b[^\n]*\n+", re.IGNORECASE
)
STOCK_FIRST_SENTENCE = re.compile(
    r"\A\s*(?:welcome to|in this (?:section|chapter|lesson|passage|tutorial|textbook|article)|"
    r"have you ever (?:wondered|thought))\b[^.!?\n]*[.!?][ \t]*\n*",
    re.IGNORECASE,
)
STOCK_LAST_PARAGRAPH = re.compile(
    r"\n\s*\n(?:in conclusion|to summarize|to sum up|in summary|i hope|happy coding|let me know|feel free)\b"
    r"(?:(?!```)[\s\S])*\Z",
    re.IGNORECASE,
)


def clean(text: str) -> str:
    """`text` without the stock openings and closings of chat models (see the module docstring)."""
    text = CHATTY_FIRST_LINE.sub("", text, count=1)
    text = STOCK_FIRST_SENTENCE.sub("", text, count=1)
    text = STOCK_LAST_PARAGRAPH.sub("", text, count=1)
    return text.strip() + "\n"


def passage_problem(text: str) -> str | None:
    """Why `text` is not a usable textbook passage, or None."""
    words = len(FENCE.sub("", text).split())
    if words < MIN_WORDS:
        return f"too short: {words} words (at least {MIN_WORDS})"
    if len(FENCE.findall(text)) % 2:
        return "a code fence is not closed: the passage was cut"
    blocks = PYTHON_BLOCK.findall(text)
    if not blocks:
        return "no ```python code block"
    for number, block in enumerate(blocks, 1):
        try:
            ast.parse(block)
        except SyntaxError as error:
            return f"python block {number} does not parse: {error.msg} (its line {error.lineno})"
    return None


class Textbooks:
    kind, template, max_tokens = "textbooks", TEMPLATE, MAX_TOKENS

    def knobs(self, rng: random.Random) -> dict:
        area, topic = pick(rng, topic_pairs())
        return {
            "area": area,
            "topic": topic,
            "audience": pick(rng, sorted(AUDIENCES)),
            "style": pick(rng, sorted(STYLES)),
            "domains": pick_several(rng, DOMAINS, 2),
            "length": pick(rng, LENGTHS),
        }

    def messages(self, knobs: dict) -> list[dict]:
        user = USER.format(
            topic=knobs["topic"],
            area=knobs["area"],
            audience_instructions=AUDIENCES[knobs["audience"]],
            style_description=STYLES[knobs["style"]],
            domains=" and in ".join(knobs["domains"]),
            length=knobs["length"],
        )
        return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]

    def check(self, contents: list[str]) -> list[dict | str]:
        verdicts = []
        for content in contents:
            text = clean(content)
            problem = passage_problem(text)
            if problem is not None:
                verdicts.append(problem)
            else:
                changed = text.strip() != content.strip()
                verdicts.append({"text": text, "raw_text": content} if changed else {"text": text})
        return verdicts

    def dedup_text(self, fields: dict) -> str:
        return fields["text"]


def main(argv: list[str] | None = None) -> int:
    return synthetic.main(
        lambda args, parser: Textbooks(),
        __doc__.split("\n\n")[0],
        MAX_TOKENS,
        argv=argv,
        prog="python -m data_prep.textbooks",
    )


if __name__ == "__main__":
    sys.exit(main())
