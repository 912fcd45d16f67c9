"""Bench: requests per second the LLM engine (data_prep.llm) sustains, at concurrency 64, against sequential calls.

    python -m bench.llm_engine [--latencies 0 0.2] [--concurrency 64] [--seconds 4]

For each server latency, a fresh local OpenAI-compatible server (tests/openai_server.py) is started in a process of
its own, so it does not share this one's GIL, and answers every chat request after sleeping `latency`. Against it,
side by side in one run:

    sequential      the plain `openai` client, one create() after another: the loop a user would write
    engine c=1      the engine at concurrency 1: sequential plus its own costs (ledger lines, accounting, checks)
    engine c=64     the engine at --concurrency

Each side gets about --seconds of work (its request count is sized from a short probe). 0 ms measures what the
client and engine cost per request on this machine; 200 ms is a realistic API's latency, where concurrency is
what counts. The ratios are to sequential.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import openai

from data_prep.llm import Engine, EngineSettings, Request

SERVER = Path(__file__).resolve().parents[1] / "tests" / "openai_server.py"


def requests(count: int, tag: str) -> list[Request]:
    return [
        Request.make(
            {"model": "bench", "messages": [{"role": "user", "content": f"{tag} {index}"}], "max_tokens": 16},
            template="bench",
            seed=index,
        )
        for index in range(count)
    ]


def sequential(url: str, count: int) -> float:
    client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0)
    start = time.perf_counter()
    for request in requests(count, "sequential"):
        client.chat.completions.create(**request.body)
    seconds = time.perf_counter() - start
    client.close()
    return count / seconds


def engine(url: str, count: int, concurrency: int, tag: str) -> float:
    settings = EngineSettings(base_url=url, concurrency=concurrency, progress=False, prices={})
    with tempfile.TemporaryDirectory() as folder, Engine(folder, settings) as instance:
        start = time.perf_counter()
        summary = instance.run(requests(count, tag))
        seconds = time.perf_counter() - start
    assert summary.answered == count, summary
    return count / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latencies", type=float, nargs="+", default=[0.0, 0.2], help="server latencies, seconds")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=4.0, help="rough duration of each side")
    args = parser.parse_args()
    os.environ.pop("OPENAI_BASE_URL", None)
    print(f"{'latency':>8} {'sequential':>12} {'engine c=1':>12} {f'engine c={args.concurrency}':>13}   ratios")
    for latency in args.latencies:
        server = subprocess.Popen(
            [sys.executable, str(SERVER), "--latency", str(latency)], stdout=subprocess.PIPE, text=True
        )
        try:
            url = server.stdout.readline().strip()
            probe = sequential(url, 5)  # also warms the server up
            base = sequential(url, max(8, int(probe * args.seconds)))
            one = engine(url, max(8, int(base * args.seconds)), 1, f"c1 {latency}")
            many_guess = base * args.concurrency if latency else base * 2
            many = engine(url, max(8, int(many_guess * args.seconds)), args.concurrency, f"c64 {latency}")
        finally:
            server.kill()
            server.wait()
        print(
            f"{latency * 1000:>6.0f}ms {base:>10.1f}/s {one:>10.1f}/s {many:>11.1f}/s   "
            f"c=1 {one / base:.2f}x, c={args.concurrency} {many / base:.1f}x"
        )


if __name__ == "__main__":
    main()
