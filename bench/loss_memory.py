"""Peak memory and time of the loss (head + cross-entropy, forward + backward): plain vs chunked
(`phi1.loss.chunked_cross_entropy`), on the same hidden states and targets, side by side in one run.

phi-1's head is 51,200-way, so the plain loss's fp32 logits of one 2048-token sequence are 400 MiB. On CUDA the
peak is `torch.cuda.max_memory_allocated`; on CPU each variant runs in a fresh process and the peak is the rise
of its peak resident memory over what the inputs already took.

    python bench/loss_memory.py [--batch 1 --seq 2048 --hidden 256 --vocab 51200 --chunk 1024 --steps 2]
"""

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch
from torch.nn import functional as F

from phi1.loss import chunked_cross_entropy


def loss_fn(variant: str, chunk: int):
    if variant == "chunked":
        return lambda x, head, t: chunked_cross_entropy(x, head, t, chunk)
    return lambda x, head, t: F.cross_entropy(head(x).float().flatten(0, 1), t.flatten())


def measure(args, variant: str, device: str) -> dict:
    """Peak bytes above the inputs (the gradients of x and the head included), and the median seconds of one
    forward + backward."""
    torch.manual_seed(0)
    head = torch.nn.Linear(args.hidden, args.vocab, device=device)
    x = torch.randn(args.batch, args.seq, args.hidden, device=device, requires_grad=True)
    targets = torch.randint(0, args.vocab, (args.batch, args.seq), device=device)
    fn, times = loss_fn(variant, args.chunk), []
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    for _ in range(args.steps + 1):  # the first round warms up (and allocates the gradients, counted in the peak)
        start = time.perf_counter()
        fn(x, head, targets).backward()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    return {"peak": peak, "seconds": statistics.median(times[1:])}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--seq", type=int, default=2048)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--vocab", type=int, default=51200)
    parser.add_argument("--chunk", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--only", choices=["plain", "chunked"], help=argparse.SUPPRESS)  # one variant, one process
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.only:
        print(json.dumps(measure(args, args.only, device)))
        return

    results = {}
    for variant in ("plain", "chunked"):
        if device == "cuda":
            results[variant] = measure(args, variant, device)
        else:  # peak RSS never falls, so each variant gets its own process
            out = subprocess.run(
                [sys.executable, __file__, *sys.argv[1:], "--only", variant], capture_output=True, text=True, check=True
            )
            results[variant] = json.loads(out.stdout.strip().splitlines()[-1])
    mib = 2**20
    logits = args.batch * args.seq * args.vocab * 4
    print(
        f"{device}: batch {args.batch} x {args.seq} tokens, hidden {args.hidden}, vocab {args.vocab} "
        f"(fp32 logits {logits / mib:.0f} MiB), chunk {args.chunk} tokens"
    )
    for variant, r in results.items():
        print(f"{variant:>8}: peak {r['peak'] / mib:7.0f} MiB above the inputs, {r['seconds'] * 1e3:7.1f} ms fwd+bwd")
    plain, chunked = results["plain"], results["chunked"]
    ratio = {k: chunked[k] / plain[k] for k in ("peak", "seconds")}
    print(f"chunked / plain: peak {ratio['peak']:.2f}x, time {ratio['seconds']:.2f}x")


if __name__ == "__main__":
    main()
