"""data_prep.embed: mean-pooled embeddings of a Hugging Face causal LM and of a phi1 checkpoint (tiny random
models built here), the offline hashed embedder, and the cache."""

import numpy as np
import pytest
import torch
from filtering_corpus import stdlib_functions

from data_prep.embed import EmbedderSpec, EmbeddingCache, embed_documents

TEXTS = stdlib_functions(12)


@pytest.fixture(scope="module")
def tiny_hf_model(tmp_path_factory, code_tokenizer) -> str:
    """A random 2-layer GPT-2 with the test tokenizer, saved as a Hugging Face folder."""
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

    folder = tmp_path_factory.mktemp("tiny-gpt2")
    tokenizer = GPT2TokenizerFast(tokenizer_file=str(code_tokenizer), eos_token="<|endoftext|>")
    tokenizer.save_pretrained(folder)
    eos = tokenizer.eos_token_id
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=128, n_embd=32, n_layer=2, n_head=2, bos_token_id=eos, eos_token_id=eos
    )
    GPT2LMHeadModel(config).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def tiny_phi1_checkpoint(tmp_path_factory) -> str:
    from phi1.checkpoint import save_model
    from phi1.model import Phi, PhiConfig

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny-phi1") / "tiny.ckpt"
    save_model(Phi(PhiConfig.from_name("tiny", vocab_size=1100, block_size=128)), path)
    return str(path)


def test_hf_embedding_is_the_masked_mean_of_the_last_hidden_state(tiny_hf_model):
    from transformers import AutoModel, AutoTokenizer

    embedder = EmbedderSpec(kind="hf", model=tiny_hf_model, batch_size=5).build()
    vectors = embedder.embed(TEXTS)  # batches of 5 of different lengths, padded
    assert vectors.shape == (12, 32) and embedder.max_length == 128
    model, tokenizer = AutoModel.from_pretrained(tiny_hf_model).eval(), AutoTokenizer.from_pretrained(tiny_hf_model)
    for i in (0, 7):
        ids = tokenizer(TEXTS[i], add_special_tokens=False)["input_ids"][:128]
        with torch.no_grad():
            hidden = model(input_ids=torch.tensor([ids])).last_hidden_state[0]  # (T, C), alone: no padding
        np.testing.assert_allclose(vectors[i], hidden.mean(0).numpy(), atol=1e-5)
    identity = embedder.identity
    assert identity["kind"] == "hf" and identity["max_length"] == 128 and len(identity["weights"]) == 64


def test_phi1_embedding_is_the_mean_of_the_final_layernorm_output(tiny_phi1_checkpoint, code_tokenizer):
    from phi1.checkpoint import load_model
    from phi1.tokenizer import load_tokenizer

    embedder = EmbedderSpec(
        kind="phi1", model=tiny_phi1_checkpoint, tokenizer=str(code_tokenizer), batch_size=4
    ).build()
    vectors = embedder.embed(TEXTS)
    model, tokenizer = load_model(tiny_phi1_checkpoint).eval(), load_tokenizer(code_tokenizer)
    tokenizer.no_truncation()
    hidden = {}
    model.final_layernorm.register_forward_hook(lambda module, args, out: hidden.update(out=out))
    for i in (2, 9):
        ids = tokenizer.encode(TEXTS[i], add_special_tokens=False).ids[:128]
        with torch.no_grad():
            model(torch.tensor([ids]))
        np.testing.assert_allclose(vectors[i], hidden["out"][0].mean(0).numpy(), atol=1e-5)
    assert embedder.identity["tokenizer"] and embedder.identity["kind"] == "phi1"


def test_phi1_embedder_refuses_a_tokenizer_larger_than_the_model(tmp_path, code_tokenizer):
    from phi1.checkpoint import save_model
    from phi1.model import Phi, PhiConfig

    save_model(Phi(PhiConfig.from_name("tiny", vocab_size=512)), tmp_path / "small.ckpt")
    with pytest.raises(ValueError, match="not the model's tokenizer"):
        EmbedderSpec(kind="phi1", model=str(tmp_path / "small.ckpt"), tokenizer=str(code_tokenizer)).build()


def test_identity_follows_the_weights(tmp_path, tiny_phi1_checkpoint, code_tokenizer):
    from phi1.checkpoint import load_model, save_model

    model = load_model(tiny_phi1_checkpoint)
    with torch.no_grad():
        model.lm_head.bias.add_(1.0)  # a head change: embeddings are the same, but the weights are not
    save_model(model, tmp_path / "changed.ckpt")
    spec = dict(tokenizer=str(code_tokenizer), kind="phi1")
    first = EmbedderSpec(model=tiny_phi1_checkpoint, **spec).build()
    second = EmbedderSpec(model=str(tmp_path / "changed.ckpt"), **spec).build()
    assert first.identity["weights"] != second.identity["weights"] and first.fingerprint != second.fingerprint
    assert EmbedderSpec(model=tiny_phi1_checkpoint, **spec, dtype="bfloat16").build().identity != first.identity


def test_hashed_embedder_is_deterministic_normalized_and_offline():
    embedder = EmbedderSpec(kind="hashed", dim=256).build()
    vectors = embedder.embed(TEXTS + [""])
    assert vectors.shape == (13, 256) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors[:12], axis=1), 1.0, rtol=1e-5)
    assert not vectors[12].any()  # nothing to count
    np.testing.assert_array_equal(vectors, EmbedderSpec(kind="hashed", dim=256).build().embed(TEXTS + [""]))
    assert EmbedderSpec(kind="hashed", dim=512).build().fingerprint != embedder.fingerprint


def test_cache_embeds_each_document_once_across_runs(tmp_path):
    embedder = EmbedderSpec(kind="hashed", dim=64).build()
    calls = []
    embed = embedder.embed
    embedder.embed = lambda texts: calls.append(len(texts)) or embed(texts)  # count what is really embedded
    ids = [f"d{i}" for i in range(12)]
    cache = EmbeddingCache(tmp_path, embedder, part="task-00000")
    first = embed_documents(embedder, ids[:8], TEXTS[:8], cache, batch_size=3)
    cache.flush()
    assert calls == [3, 3, 2]
    cache = EmbeddingCache(tmp_path, embedder, part="task-00000")  # a new process: read from disk
    second = embed_documents(embedder, ids, TEXTS, cache, batch_size=3)
    assert calls == [3, 3, 2, 3, 1]  # only the 4 new documents
    np.testing.assert_array_equal(second[:8], first)
    np.testing.assert_array_equal(second, embed(TEXTS))
    assert (tmp_path / embedder.fingerprint / "identity.json").is_file()
    assert len(EmbeddingCache(tmp_path, embedder, part="task-00001").vectors) == 0  # parts are separate


def test_a_phi1_embedder_needs_its_tokenizer():
    with pytest.raises(ValueError, match="needs --embedder-model CHECKPOINT and --embedder-tokenizer"):
        EmbedderSpec(kind="phi1", model="x.ckpt")
    with pytest.raises(ValueError, match="embedder must be one of"):
        EmbedderSpec(kind="word2vec")
