import pytest
import torch

from phi1.generate import generate, next_token, truncate_at_stop
from phi1.model import Phi, PhiConfig

EOS = 0


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = Phi(PhiConfig.from_name("tiny", vocab_size=97, block_size=64)).eval()
    with torch.no_grad():  # larger weights: a random model with peaked, varied next-token choices
        for p in m.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.3)
    return m


def greedy_without_cache(model, prompt, n):
    idx = torch.tensor([prompt])
    for _ in range(n):
        with torch.no_grad():
            idx = torch.cat([idx, model(idx)[:, -1].argmax(-1, keepdim=True)], dim=1)
    return idx[0, len(prompt) :].tolist()


def test_greedy_with_cache_equals_recomputing_everything(model):
    prompt = [5, 17, 42, 8, 61]
    assert generate(model, [prompt], 12, eos_id=None) == [greedy_without_cache(model, prompt, 12)]


def test_a_padded_batch_decodes_each_row_as_it_would_alone(model):
    prompts = [[3], [5, 17, 42, 8, 61, 9, 11], [20, 21, 22]]
    batched = generate(model, prompts, 15, eos_id=None)
    alone = [generate(model, [p], 15, eos_id=None)[0] for p in prompts]
    assert batched == alone
    assert len({tuple(row) for row in batched}) == 3


def test_eos_ends_a_row_and_is_not_returned(model):
    prompt = [5, 17, 42, 8, 61]
    free = generate(model, [prompt], 12, eos_id=None)[0]
    ended = generate(model, [prompt], 12, eos_id=free[3])[0]
    assert ended == free[: free.index(free[3])]


def test_stop_strings_are_looked_for_in_generated_text_only(model):
    def decode(ids):
        return "".join(chr(ord("a") + i % 26) for i in ids)

    prompt = [5, 17, 42, 8, 61]
    free = generate(model, [prompt], 12, eos_id=None)[0]
    stop = decode(free[4:6])
    out = generate(model, [prompt], 12, eos_id=None, stop=[stop, decode(prompt)], decode=decode)[0]
    text = decode(out)
    assert out == free[: len(out)] and stop in text and stop not in text[:-1]
    assert truncate_at_stop(text, [stop]) == decode(free)[: decode(free).find(stop)]


def test_sampling_is_seeded_and_top_p_narrows_to_the_argmax(model):
    prompts = [[5, 17, 42], [8, 61]]
    a = generate(model, prompts, 10, eos_id=None, temperature=1.0, generator=torch.Generator().manual_seed(1))
    b = generate(model, prompts, 10, eos_id=None, temperature=1.0, generator=torch.Generator().manual_seed(1))
    assert a == b
    assert generate(model, prompts, 10, eos_id=None, temperature=1.0, top_p=1e-6) == generate(
        model, prompts, 10, eos_id=None
    )
    logits = torch.tensor([[0.0, 3.0, 2.9, -5.0]])
    picks = {int(next_token(logits, 1.0, 0.6, torch.Generator().manual_seed(s))) for s in range(50)}
    assert picks == {1, 2}


def test_greedy_matches_transformers_generate(model):
    pytest.importorskip("transformers")
    from phi1.hf import to_transformers

    hf = to_transformers(model, eos_id=EOS).eval()
    prompt = [5, 17, 42, 8, 61]
    ref = hf.generate(torch.tensor([prompt]), max_new_tokens=10, do_sample=False, eos_token_id=None, pad_token_id=EOS)
    assert generate(model, [prompt], 10, eos_id=None)[0] == ref[0, len(prompt) :].tolist()


def test_each_row_gets_the_room_its_own_prompt_leaves(model):
    prompts = [[3, 4], [7] * 58]
    batched = generate(model, prompts, 20, eos_id=None)
    assert [len(row) for row in batched] == [20, 6]
    assert batched == [generate(model, [p], 20, eos_id=None)[0] for p in prompts]


def test_top_p_keeps_the_smallest_set_reaching_p():
    logits = torch.zeros(1, 4)  # four equally likely tokens: top_p 0.5 keeps two of them
    picks = {int(next_token(logits, 1.0, 0.5, torch.Generator().manual_seed(s))) for s in range(60)}
    assert len(picks) == 2


def test_prompts_too_long_for_the_context_are_refused(model):
    with pytest.raises(ValueError, match="block_size=64"):
        generate(model, [[1] * 64], 5, eos_id=EOS)
