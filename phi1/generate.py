"""Batched decoding with the model's KV cache: greedy, or sampled with temperature and top-p.

Prompts of unequal length are left-padded; each row gets its own rotary positions (counted from its first
real token) and an attention mask that hides the padding, so a row decodes exactly as it would alone.
A row ends at EOS, at a stop string found in its generated text (never in the prompt), or after
`max_new_tokens`; the batch ends when every row has.
"""

from collections.abc import Callable, Sequence

import torch

from phi1.model import Phi


def truncate_at_stop(text: str, stop: Sequence[str]) -> str:
    """`text` up to the first occurrence of any stop string."""
    cut = min((i for s in stop if (i := text.find(s)) >= 0), default=len(text))
    return text[:cut]


def next_token(logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator | None):
    """logits (B, V) -> token ids (B,): argmax at temperature 0, else a nucleus sample."""
    if temperature == 0.0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        outside = sorted_probs.cumsum(dim=-1) - sorted_probs >= top_p  # keep the smallest set reaching top_p
        sorted_probs = sorted_probs.masked_fill(outside, 0.0)
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@torch.inference_mode()
def generate(
    model: Phi,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    eos_id: int | None,
    temperature: float = 0.0,
    top_p: float = 1.0,
    stop: Sequence[str] = (),
    decode: Callable[[list[int]], str] | None = None,
    generator: torch.Generator | None = None,
) -> list[list[int]]:
    """Generated token ids of each prompt, without the prompt and EOS (eos_id None: decode to the limit).
    `stop` needs `decode`; the ids run to the step a stop string appeared, so cut the text with
    `truncate_at_stop`."""
    if stop and decode is None:
        raise ValueError("stop strings need a decode function to read the generated text")
    if not 0.0 < top_p <= 1.0 or temperature < 0.0:
        raise ValueError(f"need temperature >= 0 and 0 < top_p <= 1, got {temperature}, {top_p}")
    device, B = model.lm_head.weight.device, len(prompts)
    lengths = torch.tensor([len(p) for p in prompts], device=device)
    L = int(lengths.max())
    if min(lengths.tolist()) == 0:
        raise ValueError("every prompt needs at least one token")
    budget = (model.config.block_size - lengths).clamp(max=max_new_tokens)  # (B,) new tokens each row may add
    if int(budget.min()) < 1:
        raise ValueError(f"a prompt of {L} tokens leaves no room in block_size={model.config.block_size}")
    max_new_tokens, room = int(budget.max()), budget.tolist()
    S = L + max_new_tokens  # cache slots; a row's rotary positions stay below block_size
    pad = L - lengths  # (B,) left padding of each row
    idx = torch.zeros((B, L), dtype=torch.long, device=device)  # padding: any id, it is masked
    for row, p in enumerate(prompts):
        idx[row, L - len(p) :] = torch.tensor(p, dtype=torch.long, device=device)
    slots = torch.arange(S, device=device)
    positions = (slots[None, :] - pad[:, None]).clamp(0, model.config.block_size - 1)  # (B, S) rotary positions
    real = slots[None, :] >= pad[:, None]  # (B, S) slots holding real tokens
    causal = torch.ones(L, L, dtype=torch.bool, device=device).tril()
    # padded queries see themselves, so no softmax row is empty; real queries never see padding
    mask = (causal & real[:, None, :L]) | torch.eye(L, dtype=torch.bool, device=device)  # (B, L, L)

    max_stop = max((len(s) for s in stop), default=0)
    out = [[] for _ in range(B)]
    done = torch.zeros(B, dtype=torch.bool, device=device)
    model.setup_caches(B, S)
    try:
        logits = model(idx, positions=positions[:, :L], mask=mask[:, None], cache_pos=0, last_only=True)
        for t in range(max_new_tokens):
            token = next_token(logits[:, -1], temperature, top_p, generator)
            if eos_id is not None:
                done |= token == eos_id
            for row in (~done).nonzero().flatten().tolist():
                out[row].append(int(token[row]))
                if len(out[row]) == room[row] or stop and any(s in decode(out[row][-max_stop - 2 :]) for s in stop):
                    done[row] = True
            if done.all() or t == max_new_tokens - 1:
                break
            pos = L + t
            step_mask = real[:, None, None, : pos + 1]  # (B, 1, 1, pos+1)
            logits = model(token[:, None], positions=positions[:, pos : pos + 1], mask=step_mask, cache_pos=pos)
    finally:
        model.clear_caches()
    return out
