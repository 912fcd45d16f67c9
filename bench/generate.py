"""New tokens/s of phi1's batched decoder vs `transformers` `generate`, same weights, prompts and settings.

Greedy decoding of a batch of unequal prompts (left-padded in both), no EOS so both produce exactly
`--new` tokens per row; measured side by side in one run, interleaved, median of `--repeats`.
Also prints whether the two produced the same tokens.

    python bench/generate.py [--layers 6 --hidden 512 --heads 8 --batch 8 --new 64 --repeats 3]
"""

import argparse
import time

import torch
import transformers

from phi1.generate import generate
from phi1.hf import to_transformers
from phi1.model import Phi, PhiConfig


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--vocab", type=int, default=51200)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--new", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    torch.manual_seed(0)
    config = PhiConfig(
        vocab_size=args.vocab,
        block_size=1024,
        n_layer=args.layers,
        n_embd=args.hidden,
        n_head=args.heads,
        mlp_dim=4 * args.hidden,
        rotary_dim=args.hidden // args.heads // 2,
    )
    ours = Phi(config).eval()
    hf = to_transformers(ours, eos_id=0).eval()
    hf.generation_config.pad_token_id = 0
    prompts = [torch.randint(1, args.vocab, (n,)).tolist() for n in torch.linspace(40, 200, args.batch).int()]
    L = max(map(len, prompts))
    input_ids = torch.tensor([[0] * (L - len(p)) + p for p in prompts])
    attention_mask = torch.tensor([[0] * (L - len(p)) + [1] * len(p) for p in prompts])

    def run_ours():
        return generate(ours, prompts, args.new, eos_id=None)

    def run_hf():
        with torch.inference_mode():
            out = hf.generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                max_new_tokens=args.new,
                min_new_tokens=args.new,
                do_sample=False,
                eos_token_id=None,
            )
        return out[:, L:].tolist()

    times, outputs = {"phi1": [], "transformers": []}, {}
    for i in range(args.repeats + 1):  # one warm-up round
        for name, run in (("phi1", run_ours), ("transformers", run_hf)):
            start = time.perf_counter()
            outputs[name] = run()
            if i:
                times[name].append(time.perf_counter() - start)
    new_tokens = args.batch * args.new
    rate = {name: new_tokens / sorted(t)[len(t) // 2] for name, t in times.items()}
    same = sum(a == b for a, b in zip(outputs["phi1"], outputs["transformers"], strict=True))
    print(
        f"config: {args.layers} layers, hidden {args.hidden}, {args.heads} heads, vocab {args.vocab}; "
        f"{args.batch} prompts of {min(map(len, prompts))}-{L} tokens, {args.new} new tokens each, greedy; "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}, transformers {transformers.__version__}"
    )
    for name, r in rate.items():
        print(f"{name:>12}: {r:8.1f} new tokens/s (median of {args.repeats})")
    print(f"identical outputs: {same}/{args.batch} rows")
    print(f"ratio phi1 / transformers: {rate['phi1'] / rate['transformers']:.2f}x")


if __name__ == "__main__":
    main()
