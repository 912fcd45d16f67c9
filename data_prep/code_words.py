"""Words of source code: the unit of MinHash shingles, n-gram decontamination and token counts in data_prep.

datatrove's word tokenizers are built for natural language (English needs spaCy) and its text normalization
removes punctuation and lowercases, which is right for prose and wrong for nothing in code: what matters in a
Python file is its identifiers, keywords and literals. As BigCode did for The Stack's near-deduplication, a
word here is a maximal run of word characters (letters, digits, underscore, in any script), so
``self.max_len=10`` is ``self max_len 10``; operators and brackets separate words and are not words.
"""

import re

from datatrove.utils.word_tokenizers import WordTokenizer

WORD = re.compile(r"\w+")
LINE = re.compile(r"[^\n]*\S[^\n]*")  # a line with something on it


def code_words(text: str) -> list[str]:
    """The words of `text`, in order."""
    return WORD.findall(text)


class CodeWordTokenizer(WordTokenizer):
    """datatrove's WordTokenizer for code: words as `code_words`, a "sentence" is a non-blank line."""

    def __init__(self):
        super().__init__(language="code")

    def word_tokenize(self, text: str) -> list[str]:
        return code_words(text)

    def sent_tokenize(self, text: str) -> list[str]:
        return [match.group() for match in LINE.finditer(text)]

    def span_tokenize(self, text: str) -> list[tuple[int, int]]:
        return [match.span() for match in LINE.finditer(text)]

    def __eq__(self, other) -> bool:  # stateless: any two are the same tokenizer (datatrove caches by tokenizer)
        return isinstance(other, CodeWordTokenizer)

    def __hash__(self) -> int:
        return hash(CodeWordTokenizer)
