"""The Batch API back-end of the LLM engine (data_prep.llm, `--backend batch`): OpenAI's asynchronous batches,
billed at half price, for the bulk requests of paper §2.1 (annotation) and §2.2 (textbooks, exercises).

Requests are uploaded as JSONL keyed by custom_id = request id; `concurrency` batches of up to `batch_size`
requests (and under the 200 MB file limit) are open at once. Every upload and batch id goes to the manifest,
batches.jsonl in the engine's folder, before anything else happens, so a restarted run first polls the batches
it already created (and finds, through the batch list, one whose creation it did not live to record) instead of
submitting them again; then it submits only the ids still missing. An ended batch's lines are settled like online
answers (recorded, or unusable and retried a bounded number of times); the ids it did not answer are retried.
The budget of the cost cap is held for a whole batch from its upload until it is collected.
"""

import asyncio
import io
import json
import time
from collections.abc import Iterator

from openai.types.chat import ChatCompletion

from data_prep.llm import Engine, EngineError, Request, Transient, classify, redact

BATCH_ENDPOINT = "/v1/chat/completions"
BATCH_FILE_BYTES = 190_000_000  # the Batch API takes files up to 200 MB
BATCH_ENDED = ("completed", "failed", "expired", "cancelled")


class BatchBackend:
    """Sends an engine's pending requests as batches and settles their answers through the engine."""

    def __init__(self, engine: Engine):
        self.engine, self.settings, self.ledger, self.client = engine, engine.settings, engine.ledger, engine.client
        self.budget, self.pacing, self.summary = engine.budget, engine.pacing, engine.summary

    async def run(self, pending: Iterator[Request]) -> None:
        await self._collect_earlier_batches()
        open_batches: dict[str, tuple[list[Request], float]] = {}  # batch id -> (its requests, budget held)
        retry: list[Request] = []  # requests to submit before the pending ones
        failures: dict[str, list[int]] = {}  # request id -> [transient failures, unusable answers]
        while True:
            short = False  # the next request does not fit the budget beside the open batches
            while not short and len(open_batches) < self.settings.concurrency:
                chunk, held, short = self._next_chunk(retry, pending)
                if not chunk:
                    break
                open_batches[await self._submit(chunk)] = (chunk, held)
            if not open_batches:
                if short:
                    self.summary.stopped = "budget"
                return
            await asyncio.sleep(self.settings.poll_interval)
            for batch_id in list(open_batches):
                batch = await self.pacing.call(f"polling batch {batch_id}", self.client.batches.retrieve, batch_id)
                if batch.status not in BATCH_ENDED:
                    continue
                chunk, held = open_batches.pop(batch_id)
                self.budget.release(held)
                unusable = await self._collect(batch, {request.id for request in chunk})
                for request in chunk:
                    if request.id not in unusable:
                        continue
                    kind, reason = unusable[request.id]
                    counts = failures.setdefault(request.id, [0, 0])
                    counts[kind == "unusable"] += 1
                    if counts[0] >= self.settings.max_attempts or counts[1] >= self.settings.max_cut_attempts:
                        self.engine.give_up(request.id, f"{reason} (after {sum(counts)} batches)")
                    else:
                        self.summary.retries += 1
                        retry.append(request)

    def _next_chunk(self, retry: list[Request], pending: Iterator[Request]) -> tuple[list[Request], float, bool]:
        """Up to batch_size requests (retries first) that fit a 190 MB upload and the budget, which is held for
        them: (the requests, the budget held, whether the next request was put back for want of budget)."""
        chunk, held, size = [], 0.0, 0
        while len(chunk) < self.settings.batch_size and size < BATCH_FILE_BYTES:
            request = retry.pop(0) if retry else next(pending, None)
            if request is None:
                return chunk, held, False
            worst = self.budget.worst_case(request, batch=True)
            if not self.budget.try_hold(worst):
                retry.insert(0, request)
                return chunk, held, True
            chunk.append(request)
            held += worst
            size += request.prompt_bytes() + 256
        return chunk, held, False

    async def _submit(self, chunk: list[Request]) -> str:
        """Upload `chunk` and create its batch, recording both ids in the manifest; the batch id."""
        lines = io.BytesIO()
        for request in chunk:
            line = {"custom_id": request.id, "method": "POST", "url": BATCH_ENDPOINT, "body": request.body}
            lines.write(json.dumps(line, ensure_ascii=False).encode("utf-8") + b"\n")
        upload = await self.pacing.call(
            "uploading a batch", self.client.files.create, file=("requests.jsonl", lines.getvalue()), purpose="batch"
        )
        uploaded_at = time.time()
        self.ledger.batches.append(
            {"event": "uploaded", "file_id": upload.id, "requests": len(chunk), "time": uploaded_at}
        )
        batch = await self._create_batch(upload.id, uploaded_at)
        self.ledger.batches.append({"event": "created", "batch_id": batch.id, "file_id": upload.id})
        return batch.id

    async def _create_batch(self, file_id: str, uploaded_at: float):
        """The batch of `file_id`. A create that failed may still have happened: look before creating again."""
        for attempt in range(1, self.settings.max_attempts + 1):
            if attempt > 1 and (batch := await self._find_batch(file_id, uploaded_at)) is not None:
                return batch
            await self.pacing.wait_for_turn(0)
            try:
                return await self.client.batches.create(
                    input_file_id=file_id, endpoint=BATCH_ENDPOINT, completion_window="24h"
                )
            except Exception as error:
                failure = classify(error)
            if not isinstance(failure, Transient) or attempt == self.settings.max_attempts:
                raise EngineError(f"creating the batch of {file_id} failed: {failure}")
            await self.pacing.retry_pause(failure, attempt)

    async def _find_batch(self, file_id: str, uploaded_at: float):
        """The batch created from `file_id`, searched newest first back to its upload; None if there is none."""

        async def search():
            async for batch in self.client.batches.list(limit=100):
                if batch.input_file_id == file_id:
                    return batch
                if batch.created_at < uploaded_at - 60:
                    return None
            return None

        return await self.pacing.call("listing batches", search)

    async def _collect_earlier_batches(self) -> None:
        """Poll the batches an earlier run created (found in the manifest) until they end, and collect them."""
        events = self.ledger.batch_events()
        created = {event["file_id"]: event["batch_id"] for event in events if event["event"] == "created"}
        collected = {event["batch_id"] for event in events if event["event"] == "collected"}
        waiting = [batch_id for batch_id in created.values() if batch_id not in collected]
        for event in events:
            if event["event"] == "uploaded" and event["file_id"] not in created:
                batch = await self._find_batch(event["file_id"], event["time"])  # killed between create and record?
                if batch is not None:
                    self.ledger.batches.append(
                        {"event": "created", "batch_id": batch.id, "file_id": batch.input_file_id}
                    )
                    waiting.append(batch.id)
        while waiting:
            for batch_id in list(waiting):
                batch = await self.pacing.call(f"polling batch {batch_id}", self.client.batches.retrieve, batch_id)
                if batch.status in BATCH_ENDED:
                    waiting.remove(batch_id)
                    await self._collect(batch, None)
            if waiting:
                await asyncio.sleep(self.settings.poll_interval)

    async def _collect(self, batch, request_ids: set[str] | None) -> dict[str, tuple[str, str]]:
        """Record the answers of an ended batch; (kind, reason) for each of `request_ids` without a usable one,
        kind "transient" (not served) or "unusable" (paid, but cut, filtered, empty or failing `check`)."""
        failed: dict[str, tuple[str, str]] = {}
        for file_id in (batch.output_file_id, batch.error_file_id):
            if not file_id:
                continue
            content = await self.pacing.call(f"downloading {file_id}", self.client.files.content, file_id)
            for line in content.text.splitlines():
                if line.strip():
                    self._collect_line(json.loads(line), failed, counted=request_ids is not None)
        for request_id in (request_ids or set()) - set(failed):
            if request_id not in self.ledger.answered:
                failed[request_id] = ("transient", f"not answered by batch {batch.id} ({batch.status})")
        self.ledger.batches.append({"event": "collected", "batch_id": batch.id, "status": batch.status})
        return failed

    def _collect_line(self, line: dict, failed: dict[str, tuple[str, str]], counted: bool) -> None:
        request_id, response = line.get("custom_id"), line.get("response") or {}
        if request_id in self.ledger.answered:
            return
        if response.get("status_code") != 200:
            error = line.get("error") or (response.get("body") or {}).get("error") or {}
            message = error.get("message", error) if isinstance(error, dict) else error
            reason = f"HTTP {response.get('status_code')}: {message}"
            failed[request_id] = ("transient", redact(reason))
            return
        try:
            completion = ChatCompletion.model_validate(response["body"])
            answer = self.engine.priced_answer(request_id, completion, None, "batch", 0.0)
        except (Transient, ValueError, KeyError) as error:
            failed[request_id] = ("transient", f"unparseable answer in the batch output: {error}")
            return
        reason = self.engine.problem(answer)
        if reason is None:
            self.engine.record(answer, count=counted)
        else:
            self.ledger.add_error(request_id, reason, final=False, answer=answer)
            failed[request_id] = ("unusable", reason)
