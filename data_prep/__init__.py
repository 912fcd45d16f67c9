"""Standalone scripts that build phi-1 training data (paper §2): tokenizer, shards, filtering, synthesis."""
