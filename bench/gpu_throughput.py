"""Training throughput of phi-1 and phi-1-small on one GPU: tokens/s and MFU at the largest micro-batch that fits,
eager vs `torch.compile`, PyTorch's SDPA vs the flash-attn package (when installed), side by side in one run.

Each row is the training step of `phi1.module.PhiLitModule` as `fit` runs it under `precision: bf16-mixed`
(fp32 weights and AdamW state, bf16 autocast, fp32 logits, the module's loss, backward, AdamW) at sequence 2048
with the pretraining dropout (0.1). The micro-batch is the largest that fits in eager mode (doubling, then
bisection); the compiled model runs at the same micro-batch, so the two compare like for like. MFU = tokens/s x
`Phi.flops_per_token` (PaLM appendix B, 6N + 12·L·C·T) / the device's dense bf16 peak
(`phi1.callbacks.PEAK_FLOPS`, or --peak-flops).

    python bench/gpu_throughput.py               # the whole table: ~5 minutes on one H100 or H200
    python bench/gpu_throughput.py --dry-run     # what it would measure, on any machine
    python bench/gpu_throughput.py --smoke       # the same code on the CPU with the tiny preset, in seconds
    python bench/gpu_throughput.py --loss-chunk-size 4096 --activation-checkpointing   # the memory switches
"""

import argparse
import gc
import sys
import time
from contextlib import contextmanager

import torch

import phi1.model
from phi1.callbacks import peak_flops_of
from phi1.model import PhiConfig
from phi1.module import PhiLitModule


@contextmanager
def attention(kind: str):
    """`sdpa` hides flash-attn from the model for the duration (the model calls it whenever it is importable)."""
    saved = phi1.model.flash_attn_func
    if kind == "sdpa":
        phi1.model.flash_attn_func = None
    try:
        yield
    finally:
        phi1.model.flash_attn_func = saved


class Trainee:
    """One model with its AdamW, stepping on random tokens as `fit` would."""

    def __init__(self, config: PhiConfig, compile: bool, device: torch.device, autocast: bool, **options):
        self.module = PhiLitModule(config, compile=compile, **options)
        with torch.device(device):  # initialized in place, not on the CPU then copied
            self.module.configure_model()
        self.module.to(device).train()
        self.optimizer = torch.optim.AdamW(self.module.parameters(), lr=1e-4, betas=(0.9, 0.98), eps=1e-7)
        self.config, self.device, self.autocast = config, device, autocast

    def step(self, batch_size: int, seq_len: int):
        tokens = torch.randint(self.config.vocab_size, (batch_size, seq_len + 1), device=self.device)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            loss, _ = self.module.loss({"tokens": tokens})
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def fits(self, batch_size: int, seq_len: int) -> bool:
        try:
            self.step(batch_size, seq_len)
            synchronize(self.device)
            return True
        except torch.OutOfMemoryError:
            pass
        self.optimizer.zero_grad(set_to_none=True)  # after the except block, which held the failed step's tensors
        free_memory()
        return False


def synchronize(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def free_memory():
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def largest_batch(trainee: Trainee, seq_len: int, limit: int) -> int:
    """The largest micro-batch up to `limit` whose training step fits: doubling, then bisection; 0 if none."""
    if not trainee.fits(1, seq_len):
        return 0
    good = 1
    while good * 2 <= limit and trainee.fits(good * 2, seq_len):
        good *= 2
    bad = min(good * 2, limit + 1)
    while bad - good > 1:
        mid = (good + bad) // 2
        good, bad = (mid, bad) if trainee.fits(mid, seq_len) else (good, mid)
    return good


def measure(trainee: Trainee, batch_size: int, seq_len: int, warmup: int, steps: int) -> dict:
    for _ in range(warmup):  # the compiled model compiles here
        trainee.step(batch_size, seq_len)
    synchronize(trainee.device)
    if trainee.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(trainee.device)
    start = time.perf_counter()
    for _ in range(steps):
        trainee.step(batch_size, seq_len)
    synchronize(trainee.device)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(trainee.device) / 2**30 if trainee.device.type == "cuda" else None
    return {"tokens_per_s": batch_size * seq_len * steps / seconds, "peak_gib": peak}


def plan(args) -> list[tuple[str, str, bool]]:
    attentions = ["sdpa", "flash"] if phi1.model.flash_attn_func is not None and not args.smoke else ["sdpa"]
    compiles = {"both": [False, True], "eager": [False], "compiled": [True]}[args.compile]
    return [(model, attn, c) for model in args.models for attn in attentions for c in compiles]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["phi-1", "phi-1-small"], choices=sorted(phi1.model.PRESETS))
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--compile", choices=["both", "eager", "compiled"], default="both")
    parser.add_argument("--max-batch", type=int, default=128, help="largest micro-batch the search tries")
    parser.add_argument("--warmup", type=int, default=3, help="steps before timing (compilation happens here)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps")
    parser.add_argument("--loss-chunk-size", type=int, help="model.loss_chunk_size: the head and loss in chunks")
    parser.add_argument("--activation-checkpointing", action="store_true", help="model.activation_checkpointing")
    parser.add_argument("--peak-flops", type=float, help="the device's dense bf16 peak (default: PEAK_FLOPS)")
    parser.add_argument("--dry-run", action="store_true", help="print what would be measured and exit")
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny preset, short sequence: checks the code")
    args = parser.parse_args(argv)
    if args.smoke:
        args.models, args.seq_len, args.max_batch, args.warmup, args.steps = ["tiny"], 64, 4, 1, 2
        args.peak_flops = args.peak_flops or 1e12  # nominal: a CPU has no table entry
    device = torch.device("cpu" if args.smoke else "cuda")
    options = {"loss_chunk_size": args.loss_chunk_size, "activation_checkpointing": args.activation_checkpointing}
    rows = plan(args)
    print(f"models {args.models}, sequence {args.seq_len}, bf16-mixed, {options}: {len(rows)} runs", file=sys.stderr)
    for model, attn, compiled in rows:
        print(f"  {model:12} {attn:6} {'compiled' if compiled else 'eager'}", file=sys.stderr)
    if args.dry_run:
        return
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("error: no CUDA device; --smoke runs the same code on the CPU, --dry-run shows the plan")
    peak = args.peak_flops or peak_flops_of(device)
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"

    results, batches = [], {}
    for model, attn, compiled in rows:
        started = time.perf_counter()
        config = PhiConfig(preset=model, block_size=args.seq_len, attn_dropout=0.1, resid_dropout=0.1)
        torch._dynamo.reset()
        with attention(attn):
            if (model, attn) not in batches:  # search in eager mode; the compiled model reuses its result
                eager = Trainee(config, False, device, True, **options)
                batches[(model, attn)] = largest_batch(eager, args.seq_len, args.max_batch)
                del eager
                free_memory()
            batch = batches[(model, attn)]
            trainee = Trainee(config, compiled, device, True, **options)
            row = {"model": model, "attention": attn, "compiled": compiled, "batch": batch}
            if batch:
                row |= measure(trainee, batch, args.seq_len, args.warmup, args.steps)
                flops = trainee.module.model.flops_per_token(args.seq_len)
                row["mfu"] = row["tokens_per_s"] * flops / peak if peak else None
            del trainee
            free_memory()
        results.append(row)
        print(
            f"  {model} {attn} {'compiled' if compiled else 'eager'}: {time.perf_counter() - started:.0f} s",
            file=sys.stderr,
        )

    print(f"\n{device_name}, sequence {args.seq_len}, bf16-mixed, AdamW, {options}; MFU against {peak or '?'} FLOP/s")
    print("| model | attention | mode | micro-batch | tokens/s/GPU | MFU | peak memory GiB | vs eager |")
    print("|---|---|---|---|---|---|---|---|")

    def mode(compiled):
        return "compiled" if compiled else "eager"

    def batch_cell(batch):  # the search stops at --max-batch: more may fit
        return "OOM at 1" if not batch else f"{batch}+" if batch == args.max_batch else str(batch)

    by_key = {(r["model"], r["attention"], r["compiled"]): r for r in results}
    for r in results:
        eager = by_key.get((r["model"], r["attention"], False))
        ratio = r.get("tokens_per_s", 0) / eager["tokens_per_s"] if eager and eager.get("tokens_per_s") else None
        print(
            f"| {r['model']} | {r['attention']} | {mode(r['compiled'])} | {batch_cell(r['batch'])} | "
            + (f"{r['tokens_per_s']:,.0f} | " if r["batch"] else "| ")
            + (f"{r['mfu']:.1%} | " if r.get("mfu") is not None else "| ")
            + (f"{r['peak_gib']:.1f} | " if r.get("peak_gib") is not None else "| ")
            + (f"{ratio:.2f}x |" if ratio else "|")
        )
    for model in args.models:
        for compiled in (False, True):
            sdpa, flash = by_key.get((model, "sdpa", compiled)), by_key.get((model, "flash", compiled))
            if sdpa and flash and sdpa.get("tokens_per_s") and flash.get("tokens_per_s"):
                mode = "compiled" if compiled else "eager"
                print(f"{model} {mode}: flash-attn / SDPA = {flash['tokens_per_s'] / sdpa['tokens_per_s']:.2f}x")


if __name__ == "__main__":
    main()
