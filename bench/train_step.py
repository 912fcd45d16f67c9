"""Tokens/s of one training step (forward + backward + AdamW) of phi1's model vs transformers' PhiForCausalLM.

Same architecture, same weights, same inputs, same optimizer settings, measured side by side in one run,
interleaved so that machine load hits both alike.

    python bench/train_step.py [--layers 4 --hidden 512 --heads 8 --seq 512 --batch 4 --steps 10]
"""

import argparse
import time

import torch
import transformers

from phi1.hf import to_transformers
from phi1.model import Phi, PhiConfig


def step_time(model, logits_of, idx, optimizer) -> float:
    start = time.perf_counter()
    logits = logits_of(model, idx[:, :-1])
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), idx[:, 1:].flatten())
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()

    torch.manual_seed(0)
    config = PhiConfig(
        vocab_size=args.vocab,
        block_size=args.seq,
        n_layer=args.layers,
        n_embd=args.hidden,
        n_head=args.heads,
        mlp_dim=4 * args.hidden,
        rotary_dim=args.hidden // args.heads // 2,
    )
    ours = Phi(config).train()
    hf = to_transformers(ours, eos_id=0).train()
    models = {
        "phi1": (ours, lambda m, x: m(x)),
        "transformers": (hf, lambda m, x: m(input_ids=x).logits.float()),
    }
    optimizers = {name: torch.optim.AdamW(m.parameters(), lr=1e-4, weight_decay=0.1) for name, (m, _) in models.items()}
    idx = torch.randint(0, args.vocab, (args.batch, args.seq + 1))
    times = {name: [] for name in models}
    for i in range(args.steps + 2):  # two warm-up rounds
        for name, (model, logits_of) in models.items():
            t = step_time(model, logits_of, idx, optimizers[name])
            if i >= 2:
                times[name].append(t)
    tokens = args.batch * args.seq
    rate = {name: tokens / (sorted(t)[len(t) // 2]) for name, t in times.items()}  # median step
    print(
        f"config: {args.layers} layers, hidden {args.hidden}, {args.heads} heads, vocab {args.vocab}, "
        f"batch {args.batch} x seq {args.seq}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
        f"transformers {transformers.__version__}"
    )
    for name, r in rate.items():
        print(f"{name:>12}: {r:10.0f} tokens/s (median of {args.steps} steps)")
    print(f"ratio phi1 / transformers: {rate['phi1'] / rate['transformers']:.2f}x")


if __name__ == "__main__":
    main()
