"""The LLM engine behind the synthetic data of paper §2.2 (textbooks, CodeExercises) and the LLM grader of §3.

It sends chat-completion requests to any OpenAI-compatible server (OpenAI, vLLM, llama.cpp server, TGI) through
the official `openai` client: the base URL from `--base-url` or OPENAI_BASE_URL, the key from OPENAI_API_KEY.

Nothing lost, nothing paid twice. A `Request` has a stable id, a hash of its body (model, messages, sampling
parameters), its template version and its seed. A run keeps a ledger in its folder, append-only JSONL that a kill
can only tear at the last line (phi1.jsonl), held by one process at a time (a lock file):

    responses.jsonl   one line per answered request, appended and flushed the moment it arrives: id, content,
                      finish_reason, usage (prompt, cached, completion tokens) and cost
    errors.jsonl      answers that were paid for but are unusable (cut by max_tokens, withheld by a content
                      filter, empty, or refused by the caller's `check`), and requests given up on
    batches.jsonl     the Batch API back-end's manifest: uploaded files, created and collected batches

A run sends each id once (a request given twice is answered once) and a rerun skips the ids in responses.jsonl,
so a run killed at any moment (SIGKILL included) and restarted pays again only for the requests that were in
flight. Failed requests are not finished: a rerun tries them again.

Online back-end: one AsyncOpenAI client with its own retries off (max_retries=0) and a per-request timeout;
`concurrency` requests in flight; requests- and tokens-per-minute limits (a token request counts its prompt
estimate plus max_tokens, as OpenAI's limiter does); retries with jittered exponential backoff on 429, 408, 409,
5xx, timeouts, connection errors and unparseable responses, at least as long as a Retry-After header asks, and
a 429 pauses every request, not only the one that got it. An answer cut by max_tokens or a content filter is
never data: it is asked again up to `max_cut_attempts` times, then reported in errors.jsonl. 401, 403 and 404
(bad key, no access, unknown model) stop the run; other 4xx fail only their request.

Batch back-end (OpenAI's Batch API, billed at half price): data_prep.llm_batch. Both back-ends share the
engine's ledger, its `Budget` (the cost cap), its `Pacing` (rate limits and retries) and the way an answer is
settled (`priced_answer`, `problem`, `record`, `give_up`).

Cost: `usage` priced with data_prep/prices.yaml (or --prices FILE). `max_cost_usd` is a hard cap on everything
the folder's ledger has paid, across reruns: a request (or batch) is sent only if its worst case (prompt bytes,
an upper bound on byte-level BPE tokens, plus max_tokens, all at the uncached price) still fits, so spend never
passes the cap; the run then stops cleanly and a rerun with a higher cap carries on. A request that timed out
may still be billed by the provider; the ledger cannot see that.

The key is read by the client from the environment and is never logged or written: every error message that
reaches a file or the terminal passes through `redact`.
"""

import argparse
import asyncio
import fcntl
import hashlib
import json
import math
import os
import random
import re
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import IO

import openai
import yaml
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletion
from tqdm import tqdm

from phi1.jsonl import JsonlAppender, read_jsonl

PRICES_FILE = Path(__file__).with_name("prices.yaml")
BATCH_DISCOUNT = 0.5
BACKENDS = ("online", "batch")
CUT_REASONS = {"length": "cut at max_tokens (finish_reason length)", "content_filter": "withheld by a content filter"}
TRANSIENT_STATUS = {408, 409, 429}  # and every 5xx
FATAL_STATUS = {401: "the API key was refused", 403: "the key has no access", 404: "no such model or endpoint"}
MAX_RETRY_AFTER = 600.0  # seconds; a longer Retry-After is clipped to this
SNAPSHOT_SUFFIX = re.compile(r"-(?:\d{4}-\d{2}-\d{2}|\d{4})$")  # a dated model snapshot: -2024-07-18, -0613
BYTES_PER_TOKEN_ESTIMATE = 4  # for rate limiting only; budgets use the 1-token-per-byte upper bound


class EngineError(RuntimeError):
    """The run cannot go on (bad key, unknown model, unpriced model under a budget); the message is redacted."""


def redact(text: str) -> str:
    """`text` with the API key (if one is set) replaced by [redacted]."""
    key = os.environ.get("OPENAI_API_KEY", "")
    return text.replace(key, "[redacted]") if len(key) >= 4 else text


# ----------------------------------------------------------------------------- prices


@dataclass(frozen=True)
class Price:
    """USD per million tokens."""

    input: float
    cached_input: float
    output: float

    def cost(self, usage: dict, batch: bool = False) -> float:
        cached = usage["cached_tokens"]
        usd = (usage["prompt_tokens"] - cached) * self.input + cached * self.cached_input
        usd += usage["completion_tokens"] * self.output
        return usd / 1e6 * (BATCH_DISCOUNT if batch else 1.0)


def load_prices(path: str | Path | None = None) -> dict[str, Price]:
    """The price table of data_prep/prices.yaml, with the models of `path` (same form) added or replaced."""
    prices = {}
    for source in [PRICES_FILE] + ([Path(path)] if path else []):
        try:
            table = yaml.safe_load(Path(source).read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as error:
            raise ValueError(f"--prices {source}: cannot be read as YAML ({error})") from None
        if not isinstance(table, dict):
            raise ValueError(f"--prices {source}: expected a mapping of model name to prices")
        for model, entry in table.items():
            if not isinstance(entry, dict) or not {"input", "output"} <= set(entry):
                raise ValueError(f"--prices {source}: model {model!r} needs input and output prices (USD per 1M)")
            values = (entry["input"], entry.get("cached_input", entry["input"]), entry["output"])
            if not all(isinstance(value, int | float) and value >= 0 for value in values):
                raise ValueError(f"--prices {source}: model {model!r}: prices must be non-negative numbers")
            prices[str(model)] = Price(*map(float, values))
    return prices


def price_for(model: str, prices: dict[str, Price]) -> Price | None:
    """The price of `model`: its own entry, else that of the model it is a dated snapshot of
    ("gpt-4o-mini-2024-07-18", "gpt-4-0613"), else None. Any other suffix is another model ("gpt-4.5-preview" is
    not "gpt-4", "gpt-3.5-turbo-16k" not "gpt-3.5-turbo"), whose price a cost cap must not guess."""
    if model in prices:
        return prices[model]
    snapshot = SNAPSHOT_SUFFIX.search(model)
    return prices.get(model[: snapshot.start()]) if snapshot else None


# ----------------------------------------------------------------------------- requests and answers


@dataclass(frozen=True)
class Request:
    id: str
    body: dict  # the arguments of chat.completions.create: model, messages, max_tokens, temperature, ...

    @classmethod
    def make(cls, body: dict, template: str, seed: int | str) -> "Request":
        """A request whose id hashes its body, the version of the template that wrote it and its seed."""
        key = json.dumps({"body": body, "template": template, "seed": seed}, sort_keys=True, ensure_ascii=False)
        return cls(hashlib.sha256(key.encode("utf-8")).hexdigest()[:32], body)

    @property
    def max_tokens(self) -> int | None:
        return self.body.get("max_completion_tokens", self.body.get("max_tokens"))

    def prompt_bytes(self) -> int:
        return sum(len(str(message.get("content", "")).encode("utf-8")) + 8 for message in self.body["messages"])


@dataclass(frozen=True)
class Answer:
    """One paid answer, as the ledger keeps it."""

    id: str
    content: str
    finish_reason: str | None
    model: str
    usage: dict  # prompt_tokens, cached_tokens, completion_tokens
    cost_usd: float
    backend: str


class Transient(Exception):
    """A failure worth retrying: rate limit, server error, timeout, lost connection, unparseable response."""

    def __init__(self, reason: str, retry_after: float | None = None, rate_limited: bool = False):
        super().__init__(reason)
        self.reason, self.retry_after, self.rate_limited = reason, retry_after, rate_limited


class Refused(Exception):
    """A request the server will not serve however often it is sent (400, 413, 422 ...)."""


def retry_after_seconds(headers) -> float | None:
    """The delay a Retry-After-Ms or Retry-After header asks for (seconds or an HTTP date), clipped."""
    if headers is None:
        return None
    for name, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            delay = float(value) * scale
        except ValueError:
            try:
                delay = parsedate_to_datetime(value).timestamp() - time.time()
            except (TypeError, ValueError):
                return None
        return min(max(delay, 0.0), MAX_RETRY_AFTER) if not math.isnan(delay) else None
    return None


def classify(error: Exception) -> Exception:
    """The engine's view of an exception from the client: Transient, Refused or EngineError (redacted)."""
    if isinstance(error, openai.APIStatusError):
        status, message = error.status_code, redact(f"HTTP {error.status_code}: {error.message}")
        if status in FATAL_STATUS:
            return EngineError(f"{FATAL_STATUS[status]} ({message})")
        if status in TRANSIENT_STATUS or status >= 500:
            delay = retry_after_seconds(error.response.headers)
            return Transient(message, delay, rate_limited=status == 429)
        return Refused(message)
    if isinstance(error, openai.APITimeoutError):
        return Transient("timed out")
    if isinstance(error, openai.APIConnectionError):
        return Transient(redact(f"connection error: {error.__cause__ or error}"))
    if isinstance(error, ValueError):  # a 200 whose body is not JSON
        return Transient(redact(f"unparseable response: {error}"))
    raise error


def read_completion(completion: object) -> tuple[str, str | None, str, dict]:
    """(content, finish_reason, model, usage) of a chat completion; Transient if it is not one."""
    choices = getattr(completion, "choices", None)
    if not isinstance(completion, ChatCompletion) or not choices:
        kind = type(completion).__name__
        raise Transient(f"unparseable response: expected a chat completion with choices, got {kind}")
    choice = choices[0]
    content = getattr(getattr(choice, "message", None), "content", None)
    usage = getattr(completion, "usage", None)
    details = getattr(usage, "prompt_tokens_details", None)
    tokens = {
        "prompt_tokens": getattr(usage, "prompt_tokens", None) or 0,
        "cached_tokens": getattr(details, "cached_tokens", None) or 0,
        "completion_tokens": getattr(usage, "completion_tokens", None) or 0,
    }
    return content or "", getattr(choice, "finish_reason", None), getattr(completion, "model", "") or "", tokens


# ----------------------------------------------------------------------------- the ledger


def hold_folder(folder: Path) -> IO:
    """Create `folder` if needed and lock it for this process (the lock goes when the process does, killed or
    not); EngineError if another process holds it: two runs appending to one ledger would garble it."""
    folder.mkdir(parents=True, exist_ok=True)
    lock = open(folder / ".lock", "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise EngineError(f"{folder} is in use by another run; wait for it or choose another folder") from None
    return lock


def read_records(path: Path) -> Iterator[dict]:
    """The records of an append-only JSONL file (none if it does not exist), a torn last line skipped."""
    if path.exists():
        yield from (record for _, record in read_jsonl(path, torn_tail="skip"))


class Ledger:
    """The folder's record of what was paid: responses.jsonl, errors.jsonl and batches.jsonl."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.lock = hold_folder(self.folder)
        self.answered: set[str] = set()
        self.spent = 0.0
        for record in read_records(self.folder / "responses.jsonl"):
            self.answered.add(record["id"])
            self.spent += record.get("cost_usd", 0.0)
        for record in read_records(self.folder / "errors.jsonl"):
            self.spent += record.get("cost_usd", 0.0)
        self.responses = JsonlAppender(self.folder / "responses.jsonl")
        self.errors = JsonlAppender(self.folder / "errors.jsonl")
        self.batches = JsonlAppender(self.folder / "batches.jsonl")

    def answers(self, request_ids: Collection[str]) -> dict[str, Answer]:
        """The recorded answers of `request_ids`, by id (one pass over responses.jsonl)."""
        return {
            record["id"]: Answer(**record)
            for record in read_records(self.responses.path)
            if record["id"] in request_ids
        }

    def add_answer(self, answer: Answer) -> None:
        self.responses.append(asdict(answer))
        self.answered.add(answer.id)
        self.spent += answer.cost_usd

    def add_error(self, request_id: str, reason: str, final: bool, answer: Answer | None = None) -> None:
        record = {"id": request_id, "error": redact(reason), "final": final, "time": time.time()}
        if answer is not None:
            record.update(content=answer.content, usage=answer.usage, cost_usd=answer.cost_usd)
            self.spent += answer.cost_usd
        self.errors.append(record)

    def batch_events(self) -> list[dict]:
        return list(read_records(self.batches.path))

    def close(self) -> None:
        for journal in (self.responses, self.errors, self.batches):
            journal.close()
        self.lock.close()


# ----------------------------------------------------------------------------- the engine


@dataclass
class EngineSettings:
    base_url: str | None = None  # None: OPENAI_BASE_URL, else OpenAI's
    backend: str = "online"
    concurrency: int = 16  # requests in flight (online) or batches open at once (batch)
    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    timeout: float = 120.0  # seconds per HTTP request
    max_attempts: int = 6  # sends of one request that fail transiently before it is given up
    max_cut_attempts: int = 3  # paid answers of one request that are cut, filtered, empty or fail `check`
    max_cost_usd: float | None = None
    prices: dict[str, Price] = field(default_factory=load_prices)
    backoff_base: float = 1.0  # seconds before the first retry; doubles, jittered, up to backoff_cap
    backoff_cap: float = 60.0
    poll_interval: float = 30.0  # seconds between polls of open batches
    batch_size: int = 50_000  # requests per batch (the Batch API's limit)
    progress: bool = True


@dataclass
class RunSummary:
    requested: int = 0  # requests handed to the run, finished ones included
    skipped: int = 0  # answered before this run
    answered: int = 0
    failed: int = 0  # given up in this run (see errors.jsonl); a rerun tries them again
    retries: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0  # paid in this run
    total_cost_usd: float = 0.0  # paid in this folder, all runs
    seconds: float = 0.0
    priced: bool = True  # False if a model had no price (its answers count as free)
    stopped: str | None = None  # "budget" when the cost cap ended the run early

    @property
    def tokens_per_second(self) -> float:
        """Generated (completion) tokens per second of this run."""
        return self.completion_tokens / self.seconds if self.seconds else 0.0


class BudgetReached(Exception):
    """The next request's worst case does not fit under the cost cap, and nothing in flight can free any."""


class Budget:
    """The cost cap of a run: what the folder's ledger has spent, plus the worst case held for each request in
    flight until it settles, may not pass `max_cost_usd` (module docstring). Also prices answers."""

    def __init__(self, settings: EngineSettings, ledger: Ledger, summary: RunSummary):
        self.cap, self.prices, self.ledger, self.summary = settings.max_cost_usd, settings.prices, ledger, summary
        self.held = 0.0  # dollars held for requests in flight
        self.released = asyncio.Event()  # set whenever a hold is given back

    def price(self, model: str) -> Price | None:
        """The price of `model`; None (its answers count as free) unless a cap needs it, then EngineError."""
        price = price_for(model, self.prices)
        if price is None:
            if self.cap is not None:
                raise EngineError(f"model {model!r} has no price in {PRICES_FILE}; add it with --prices FILE")
            self.summary.priced = False
        return price

    def worst_case(self, request: Request, batch: bool) -> float:
        """The most `request` can cost: prompt bytes (at least its byte-level BPE tokens) plus max_tokens."""
        if self.cap is None:
            return 0.0
        if request.max_tokens is None:
            raise EngineError("a cost cap needs max_tokens in every request, to bound what an answer can cost")
        bound = {"prompt_tokens": request.prompt_bytes(), "cached_tokens": 0, "completion_tokens": request.max_tokens}
        return self.price(request.body["model"]).cost(bound, batch)

    def try_hold(self, worst: float) -> bool:
        """Hold `worst` dollars if they fit beside what is spent and held; whether they did."""
        if self.cap is not None and self.ledger.spent + self.held + worst > self.cap:
            return False
        self.held += worst
        return True

    async def hold(self, worst: float) -> None:
        """Hold `worst` dollars; while others are in flight, wait for them to settle (they usually cost less
        than they held); BudgetReached if it cannot fit."""
        while not self.try_hold(worst):
            if self.held == 0:
                self.summary.stopped = "budget"
                raise BudgetReached
            self.released.clear()
            await self.released.wait()

    def release(self, worst: float) -> None:
        self.held -= worst
        self.released.set()


class RateLimit:
    """At most `per_minute` units a minute, spread evenly: each acquisition waits for a slot of its own."""

    def __init__(self, per_minute: float):
        self.interval, self.next_free = 60.0 / per_minute, 0.0

    async def acquire(self, amount: float = 1.0) -> None:
        now = time.monotonic()
        start = max(self.next_free, now)
        self.next_free = start + amount * self.interval
        if start > now:
            await asyncio.sleep(start - now)


class Pacing:
    """When calls may leave: the requests- and tokens-per-minute limits, the pause every call keeps after a 429,
    and jittered exponential backoff between retries (at least what a Retry-After header asks)."""

    def __init__(self, settings: EngineSettings, summary: RunSummary):
        self.settings, self.summary = settings, summary
        self.resume_at = 0.0  # the shared pause after a 429
        rpm, tpm = settings.requests_per_minute, settings.tokens_per_minute
        self.request_limit, self.token_limit = rpm and RateLimit(rpm), tpm and RateLimit(tpm)

    async def wait_for_turn(self, tokens: float) -> None:
        while (pause := self.resume_at - time.monotonic()) > 0:
            await asyncio.sleep(pause)
        if self.request_limit:
            await self.request_limit.acquire()
        if self.token_limit:
            await self.token_limit.acquire(tokens)

    def backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return retry_after * (1.0 + 0.1 * random.random())  # at least what the server asked for
        delay = min(self.settings.backoff_cap, self.settings.backoff_base * 2 ** (attempt - 1))
        return delay * (0.5 + 0.5 * random.random())

    async def retry_pause(self, failure: Transient, attempt: int) -> None:
        self.summary.retries += 1
        delay = self.backoff(attempt, failure.retry_after)
        if failure.rate_limited:  # everyone waits, not only the request that was told to
            self.resume_at = max(self.resume_at, time.monotonic() + delay)
        await asyncio.sleep(delay)

    async def call(self, what: str, function: Callable, *args, **kwargs):
        """`await function(*args, **kwargs)`, retried on transient failures; EngineError once they run out."""
        for attempt in range(1, self.settings.max_attempts + 1):
            await self.wait_for_turn(0)
            try:
                return await function(*args, **kwargs)
            except Exception as error:  # sorted by classify; anything it does not know is a bug and propagates
                failure = classify(error)
            if not isinstance(failure, Transient) or attempt == self.settings.max_attempts:
                raise EngineError(f"{what} failed: {failure}")
            await self.retry_pause(failure, attempt)


def make_client(base_url: str | None, timeout: float) -> AsyncOpenAI:
    """The run's one AsyncOpenAI client, with its own retries off: the engine owns the retry policy."""
    base_url = base_url or os.environ.get("OPENAI_BASE_URL") or None
    key = os.environ.get("OPENAI_API_KEY")
    if not key:
        if base_url is None or "api.openai.com" in base_url:
            raise EngineError("set OPENAI_API_KEY (a local server that needs no key: pass --base-url)")
        key = "unused"  # vLLM, llama.cpp and TGI accept any key unless started with one
    return AsyncOpenAI(api_key=key, base_url=base_url, max_retries=0, timeout=timeout)


class Engine:
    """Answers requests through one OpenAI-compatible server, keeping the ledger in `folder`."""

    def __init__(self, folder: str | Path, settings: EngineSettings | None = None):
        self.settings = settings or EngineSettings()
        if self.settings.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {self.settings.backend!r}")
        self.ledger = Ledger(folder)

    def close(self) -> None:
        self.ledger.close()

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def run(
        self,
        requests: Iterable[Request],
        on_answer: Callable[[Answer], None] = lambda answer: None,
        check: Callable[[str], str | None] | None = None,
        total: int | None = None,
        description: str = "requests",
    ) -> RunSummary:
        """Answer every request not answered yet. `on_answer` sees each new answer right after it is recorded.

        `check(content)` may return a reason an answer is unusable; it is then handled like a cut answer.
        `total`, the number of requests, sizes the progress bar. Raises EngineError if the run cannot go on.
        """
        self.summary = RunSummary(total_cost_usd=self.ledger.spent)
        self.on_answer, self.check = on_answer, check or (lambda content: None)
        self.started = time.monotonic()
        with tqdm(total=total, desc=description, unit="req", disable=not self.settings.progress) as self.bar:
            try:
                asyncio.run(self._run(self._unanswered(requests)))
            finally:
                self.summary.seconds = time.monotonic() - self.started
                self.summary.total_cost_usd = self.ledger.spent
        return self.summary

    def answers(self, request_ids: Collection[str]) -> dict[str, Answer]:
        """The answers the folder's ledger holds for `request_ids` (from this run or earlier ones), by id."""
        return self.ledger.answers(request_ids)

    def _unanswered(self, requests: Iterable[Request]) -> Iterator[Request]:
        """The requests to send: each id once, if it has no answer yet (checked lazily: answers collected from
        earlier batches count as answered)."""
        sent: set[str] = set()
        for request in requests:
            self.summary.requested += 1
            if request.id in self.ledger.answered or request.id in sent:
                self.summary.skipped += 1
                self.bar.update(1)
            else:
                sent.add(request.id)
                yield request

    async def _run(self, pending: Iterator[Request]) -> None:
        self.client = make_client(self.settings.base_url, self.settings.timeout)
        self.budget = Budget(self.settings, self.ledger, self.summary)
        self.pacing = Pacing(self.settings, self.summary)
        try:
            if self.settings.backend == "online":
                await self._run_online(pending)
            else:
                from data_prep.llm_batch import BatchBackend  # here: it imports this module

                await BatchBackend(self).run(pending)
        finally:
            await self.client.close()

    # --------------------------------------------------------------------- settling answers (both back-ends)

    def priced_answer(self, request_id: str, completion: object, model: str | None, backend: str, worst: float):
        """The Answer in `completion`, priced as `model` (default: the model the server names) and counted in
        the summary; with no usage reported under a cap, it costs `worst`, so the cap still holds."""
        content, finish_reason, served_model, usage = read_completion(completion)
        price = self.budget.price(model or served_model)
        cost = price.cost(usage, batch=backend == "batch") if price else 0.0
        if self.settings.max_cost_usd is not None and not any(usage.values()):
            cost = worst
        for name, count in usage.items():
            setattr(self.summary, name, getattr(self.summary, name) + count)
        self.summary.cost_usd += cost
        return Answer(request_id, content, finish_reason, served_model, usage, cost, backend)

    def problem(self, answer: Answer) -> str | None:
        """Why a paid answer is unusable (cut, filtered, empty, refused by `check`), or None."""
        if answer.finish_reason in CUT_REASONS:
            return CUT_REASONS[answer.finish_reason]
        if not answer.content.strip():
            return "empty answer"
        return self.check(answer.content)

    def record(self, answer: Answer, count: bool = True) -> None:
        """Keep a usable answer in the ledger and hand it to `on_answer`; `count` it as answered in this run
        (not when it was asked by an earlier run, from which a batch is collected)."""
        self.ledger.add_answer(answer)
        if count:
            self.summary.answered += 1
            self.bar.update(1)
        rate = self.summary.completion_tokens / max(time.monotonic() - self.started, 1e-9)
        self.bar.set_postfix_str(f"{rate:.0f} tok/s, ${self.ledger.spent:.4f}", refresh=False)
        self.on_answer(answer)

    def give_up(self, request_id: str, reason: str) -> None:
        """Report a request as failed in this run (errors.jsonl); a rerun tries it again."""
        self.ledger.add_error(request_id, reason, final=True)
        self.summary.failed += 1
        self.bar.update(1)

    # --------------------------------------------------------------------- online back-end

    async def _run_online(self, pending: Iterator[Request]) -> None:
        async def worker():
            for request in pending:  # one shared iterator: each request goes to one worker
                try:
                    await self._complete(request)
                except BudgetReached:
                    return

        workers = [asyncio.create_task(worker()) for _ in range(self.settings.concurrency)]
        try:
            await asyncio.gather(*workers)
        finally:  # an EngineError in one worker stops the others
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)

    async def _complete(self, request: Request) -> None:
        transient = cut = 0
        while True:
            worst = self.budget.worst_case(request, batch=False)
            await self.budget.hold(worst)
            try:
                tokens = request.prompt_bytes() / BYTES_PER_TOKEN_ESTIMATE + (request.max_tokens or 0)
                await self.pacing.wait_for_turn(tokens)
                try:
                    completion = await self.client.chat.completions.create(
                        **request.body, extra_headers={"X-Client-Request-Id": request.id}
                    )
                except Exception as error:
                    raise classify(error) from None
                answer = self.priced_answer(request.id, completion, request.body["model"], "online", worst)
            except (Transient, Refused) as error:
                failure = error
            else:
                failure = None
            finally:
                self.budget.release(worst)
            if isinstance(failure, Refused):
                return self.give_up(request.id, str(failure))
            if isinstance(failure, Transient):
                transient += 1
                if transient >= self.settings.max_attempts:
                    return self.give_up(request.id, f"{failure.reason} (after {transient} attempts)")
                await self.pacing.retry_pause(failure, transient)
                continue
            reason = self.problem(answer)
            if reason is None:
                return self.record(answer)
            self.ledger.add_error(request.id, reason, final=False, answer=answer)
            cut += 1
            if cut >= self.settings.max_cut_attempts:
                return self.give_up(request.id, f"{reason} (after {cut} paid answers)")
            self.summary.retries += 1


# ----------------------------------------------------------------------------- command line


ENGINE_RUNTIME_FLAGS = (  # change how requests are sent, not which: a rerun may change them (`job_settings`)
    "base_url",
    "backend",
    "concurrency",
    "requests_per_minute",
    "tokens_per_minute",
    "timeout",
    "max_attempts",
    "max_cost_usd",
    "prices",
    "poll_interval",
    "batch_size",
    "no_progress",
)


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """The engine's flags, shared by data_prep.textbooks, data_prep.exercises and evals.judge."""
    group = parser.add_argument_group("LLM engine")
    group.add_argument("--model", required=True, help="model name on the server, e.g. gpt-3.5-turbo")
    group.add_argument("--base-url", help="OpenAI-compatible endpoint (default: OPENAI_BASE_URL, else OpenAI)")
    group.add_argument("--backend", choices=BACKENDS, default="online", help="online requests or the Batch API")
    group.add_argument("--concurrency", type=int, default=16, help="requests in flight (batch: batches open)")
    group.add_argument("--requests-per-minute", type=float, help="cap on requests sent per minute")
    group.add_argument("--tokens-per-minute", type=float, help="cap on tokens per minute (prompt + max_tokens)")
    group.add_argument("--timeout", type=float, default=120.0, help="seconds before a request is abandoned")
    group.add_argument("--max-attempts", type=int, default=6, help="sends per request on transient failures")
    group.add_argument("--max-cost-usd", type=float, help="stop before the folder's total spend would pass this")
    group.add_argument("--prices", help=f"YAML of model prices merged over {PRICES_FILE.name}")
    group.add_argument("--poll-interval", type=float, default=30.0, help="seconds between batch polls")
    group.add_argument("--batch-size", type=int, default=50_000, help="requests per batch (the API allows 50,000)")
    group.add_argument("--no-progress", action="store_true", help="no progress bar")


def engine_settings(args: argparse.Namespace, parser: argparse.ArgumentParser) -> EngineSettings:
    """EngineSettings from the flags of `add_engine_arguments`; usage errors exit 2 naming the flag."""
    for flag in ("concurrency", "max_attempts", "batch_size"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be at least 1, got {getattr(args, flag)}")
    for flag in ("requests_per_minute", "tokens_per_minute", "timeout", "poll_interval"):
        if getattr(args, flag) is not None and getattr(args, flag) <= 0:
            parser.error(f"--{flag.replace('_', '-')} must be positive, got {getattr(args, flag)}")
    if args.max_cost_usd is not None and args.max_cost_usd < 0:
        parser.error(f"--max-cost-usd must not be negative, got {args.max_cost_usd}")
    try:
        prices = load_prices(args.prices)
    except ValueError as error:
        parser.error(str(error))
    if args.max_cost_usd is not None and price_for(args.model, prices) is None:
        parser.error(f"--max-cost-usd needs a price for --model {args.model}: add it to a YAML given with --prices")
    return EngineSettings(
        base_url=args.base_url,
        backend=args.backend,
        concurrency=args.concurrency,
        requests_per_minute=args.requests_per_minute,
        tokens_per_minute=args.tokens_per_minute,
        timeout=args.timeout,
        max_attempts=args.max_attempts,
        max_cost_usd=args.max_cost_usd,
        prices=prices,
        poll_interval=args.poll_interval,
        batch_size=args.batch_size,
        progress=not args.no_progress,
    )
