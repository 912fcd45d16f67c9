"""Near-duplicate removal for the synthetic data (§2.2): a model asked 100k times for the same kind of text repeats
itself, and the repeats add tokens but no diversity.

MinHash (datasketch) over 5-grams of lowercased words (`code_words`) with LSH at Jaccard 0.7, incremental: texts
are added one at a time, each checked against all kept so far, so a resumed run rebuilds the index from the records
it already holds and carries on. The shingle hash is CRC-32 (C speed; MinHash's affine32 scheme wants 32-bit
hashes), which makes a rebuild a matter of about a millisecond per thousand-word text.
"""

import zlib

from datasketch import MinHash, MinHashLSH

from data_prep.code_words import code_words


class NearDuplicates:
    def __init__(self, threshold: float = 0.7, num_perm: int = 64, ngram: int = 5):
        self.ngram, self.num_perm = ngram, num_perm
        self.template = MinHash(num_perm=num_perm, hashfunc=zlib.crc32)
        self.index = MinHashLSH(threshold=threshold, num_perm=num_perm)

    def minhash(self, text: str) -> MinHash:
        words = code_words(text.lower())
        count = max(1, len(words) - self.ngram + 1)
        shingles = {" ".join(words[start : start + self.ngram]).encode() for start in range(count)}
        minhash = MinHash(
            num_perm=self.num_perm,
            permutations=self.template.permutations,
            scheme=self.template.scheme,
            hashfunc=zlib.crc32,
        )
        minhash.update_batch(shingles)
        return minhash

    def add(self, key: str, text: str) -> str | None:
        """The key of a kept text that `text` nearly duplicates, or None, in which case `text` is kept (indexed)."""
        minhash = self.minhash(text)
        similar = self.index.query(minhash)
        if similar:
            return min(similar)
        self.index.insert(key, minhash, check_duplication=False)
        return None
