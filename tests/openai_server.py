"""A local OpenAI-compatible HTTP server for tests and benches: chat completions, files and batches, with faults.

    with OpenAIServer(reply=lambda body: "an answer", latency=0.0) as server:
        client = AsyncOpenAI(base_url=server.url, api_key="sk-test", max_retries=0)
        server.inject("429", "500", match="recursion")  # the next two chat requests that mention it fail so

    python tests/openai_server.py [--latency S] [--port P]   # standalone: prints its base URL, serves until killed

It listens on 127.0.0.1 only, one thread per connection (HTTP/1.1 keep-alive), and records everything it is sent
(`chat_requests`: body, lower-cased headers, arrival time, fault; `files`; `batches`), so a test can check what
the real `openai` client did. `reply(body)` scripts the answers by request content: it returns the content (str)
or a `Reply`. Usage counts words: prompt tokens are the words of the messages, completion tokens those of the
content, cached tokens `cached_tokens` (at most the prompt's).

Faults, queued by `inject(*faults, match=None)`: each is used up by the next chat request (or batch line) whose
messages contain `match` (any request if None):

    "429"             status 429, Retry-After: `retry_after` seconds
    "500"             status 500
    "401"             status 401 whose message echoes the request's Authorization header (a leaky server)
    "hang"            no answer for `hang_seconds`, past the client's timeout
    "not-json"        status 200, content-type application/json, a body that is not JSON
    "length"          finish_reason "length", the content cut in half
    "content_filter"  finish_reason "content_filter", no content

Batch API: POST /files (multipart, purpose "batch"), POST /batches, GET /batches/{id}, GET /batches (newest
first), GET /files/{id}/content. A batch stays "in_progress" while `hold_batches` is set (and for
`batch_polls` retrieves); the first retrieve after that answers every line through `reply` and the faults (a
status fault becomes an error line) and completes the batch, with an output file and, if any line failed, an
error file.
"""

import argparse
import email.parser
import email.policy
import itertools
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FAULTS = ("429", "500", "401", "hang", "not-json", "length", "content_filter")


@dataclass
class Reply:
    content: str
    finish_reason: str = "stop"
    prompt_tokens: int | None = None  # None: counted from the request
    completion_tokens: int | None = None
    cached_tokens: int | None = None


def default_reply(body: dict) -> str:
    return "An answer to: " + str(body["messages"][-1]["content"])[:80]


def message_text(body: dict) -> str:
    return "\n".join(str(message.get("content", "")) for message in body.get("messages", []))


class OpenAIServer:
    def __init__(
        self,
        reply: Callable[[dict], str | Reply] = default_reply,
        latency: float = 0.0,
        retry_after: float = 0.5,
        hang_seconds: float = 5.0,
        cached_tokens: int = 0,
        port: int = 0,
    ):
        self.reply, self.latency, self.retry_after = reply, latency, retry_after
        self.hang_seconds, self.cached_tokens = hang_seconds, cached_tokens
        self.hold_batches, self.batch_polls = False, 0
        self.chat_requests: list[dict] = []
        self.files: dict[str, dict] = {}
        self.batches: dict[str, dict] = {}
        self.faults: list[tuple[str | None, str]] = []
        self.lock = threading.RLock()
        self.ids = itertools.count(1)
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), _handler(self))
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> "OpenAIServer":
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def inject(self, *faults: str, match: str | None = None) -> None:
        unknown = set(faults) - set(FAULTS)
        if unknown:
            raise ValueError(f"unknown faults {sorted(unknown)}; known: {', '.join(FAULTS)}")
        with self.lock:
            self.faults += [(match, fault) for fault in faults]

    def _take_fault(self, body: dict) -> str | None:
        text = message_text(body)
        with self.lock:
            for index, (match, fault) in enumerate(self.faults):
                if match is None or match in text:
                    del self.faults[index]
                    return fault
        return None

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}-{next(self.ids)}"

    def completion(self, body: dict, fault: str | None) -> dict:
        """The chat.completion object answering `body`, with the answer-shaping faults applied."""
        reply = self.reply(body)
        reply = reply if isinstance(reply, Reply) else Reply(reply)
        content, finish_reason = reply.content, reply.finish_reason
        if fault == "length":
            content, finish_reason = content[: len(content) // 2], "length"
        elif fault == "content_filter":
            content, finish_reason = None, "content_filter"
        prompt = reply.prompt_tokens if reply.prompt_tokens is not None else len(message_text(body).split())
        completion = reply.completion_tokens
        if completion is None:
            completion = len((content or "").split())
        cached = min(prompt, reply.cached_tokens if reply.cached_tokens is not None else self.cached_tokens)
        return {
            "id": self._new_id("chatcmpl"),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "unknown"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": finish_reason,
                    "logprobs": None,
                }
            ],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
                "prompt_tokens_details": {"cached_tokens": cached},
            },
        }

    # ------------------------------------------------------------------ batches

    def run_batch(self, batch: dict) -> None:
        output, errors = [], []
        lines = self.files[batch["input_file_id"]]["content"].decode("utf-8").splitlines()
        for line in filter(str.strip, lines):
            item = json.loads(line)
            fault = self._take_fault(item["body"])
            if fault in ("429", "500", "401", "hang", "not-json"):
                status = {"429": 429, "401": 401}.get(fault, 500)
                error = {"message": f"injected {fault}", "type": "server_error", "code": str(status)}
                errors.append(
                    {
                        "id": self._new_id("batch_req"),
                        "custom_id": item["custom_id"],
                        "response": {"status_code": status, "request_id": "", "body": {"error": error}},
                        "error": None,
                    }
                )
            else:
                body = self.completion(item["body"], fault)
                output.append(
                    {
                        "id": self._new_id("batch_req"),
                        "custom_id": item["custom_id"],
                        "response": {"status_code": 200, "request_id": "", "body": body},
                        "error": None,
                    }
                )
        batch["output_file_id"] = self.add_file("output.jsonl", "batch_output", output) if output else None
        batch["error_file_id"] = self.add_file("errors.jsonl", "batch_output", errors) if errors else None
        batch["request_counts"] = {"total": len(output) + len(errors), "completed": len(output), "failed": len(errors)}
        batch["status"], batch["completed_at"] = "completed", int(time.time())

    def add_file(self, filename: str, purpose: str, rows: list[dict] | bytes) -> str:
        content = rows if isinstance(rows, bytes) else "".join(json.dumps(row) + "\n" for row in rows).encode()
        file_id = self._new_id("file")
        self.files[file_id] = {
            "id": file_id,
            "object": "file",
            "bytes": len(content),
            "created_at": int(time.time()),
            "filename": filename,
            "purpose": purpose,
            "status": "processed",
            "content": content,
        }
        return file_id


def _handler(server: OpenAIServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall

        def log_message(self, *args) -> None:
            pass

        def send_json(self, status: int, payload: object, headers: dict | None = None) -> None:
            self.send_bytes(status, json.dumps(payload).encode(), headers)

        def send_bytes(self, status: int, data: bytes, headers: dict | None = None, kind="application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def error(self, status: int, message: str, headers: dict | None = None) -> None:
            self.send_json(status, {"error": {"message": message, "type": "error", "code": str(status)}}, headers)

        def read_body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length", 0)))

        def do_POST(self) -> None:
            path = self.path.split("?")[0]
            if path.endswith("/chat/completions"):
                self.chat(json.loads(self.read_body()))
            elif path.endswith("/files"):
                self.upload(self.read_body())
            elif path.endswith("/batches"):
                body = json.loads(self.read_body())
                if body.get("input_file_id") not in server.files:
                    return self.error(400, f"no file {body.get('input_file_id')!r}")
                batch_id = server._new_id("batch")
                server.batches[batch_id] = {
                    "id": batch_id,
                    "object": "batch",
                    "endpoint": body["endpoint"],
                    "input_file_id": body["input_file_id"],
                    "completion_window": body["completion_window"],
                    "status": "in_progress",
                    "created_at": int(time.time()),
                    "output_file_id": None,
                    "error_file_id": None,
                    "request_counts": {"total": 0, "completed": 0, "failed": 0},
                    "polls": 0,
                }
                self.send_json(200, self.public(server.batches[batch_id]))
            else:
                self.error(404, f"no route POST {path}")

        def do_GET(self) -> None:
            parts = self.path.split("?")[0].rstrip("/").split("/")
            if parts[-1] == "batches":
                batches = sorted(server.batches.values(), key=lambda batch: batch["created_at"], reverse=True)
                data = [self.public(batch) for batch in batches]
                self.send_json(200, {"object": "list", "data": data, "has_more": False})
            elif parts[-2] == "batches" and parts[-1] in server.batches:
                batch = server.batches[parts[-1]]
                with server.lock:
                    batch["polls"] += 1
                    if batch["status"] == "in_progress" and not server.hold_batches:
                        if batch["polls"] > server.batch_polls:
                            server.run_batch(batch)
                self.send_json(200, self.public(batch))
            elif parts[-1] == "content" and parts[-2] in server.files:
                self.send_bytes(200, server.files[parts[-2]]["content"], kind="application/octet-stream")
            elif parts[-2] == "files" and parts[-1] in server.files:
                self.send_json(200, self.public(server.files[parts[-1]]))
            else:
                self.error(404, f"no route GET {self.path}")

        @staticmethod
        def public(record: dict) -> dict:
            return {key: value for key, value in record.items() if key not in ("content", "polls")}

        def chat(self, body: dict) -> None:
            fault = server._take_fault(body)
            with server.lock:
                server.chat_requests.append(
                    {
                        "body": body,
                        "headers": {name.lower(): value for name, value in self.headers.items()},
                        "time": time.monotonic(),
                        "fault": fault,
                    }
                )
            if server.latency:
                time.sleep(server.latency)
            if fault == "429":
                return self.error(429, "rate limited (injected)", {"Retry-After": f"{server.retry_after:g}"})
            if fault == "500":
                return self.error(500, "internal error (injected)")
            if fault == "401":
                return self.error(401, f"Incorrect API key provided: {self.headers.get('Authorization')}")
            if fault == "hang":
                time.sleep(server.hang_seconds)
            if fault == "not-json":
                return self.send_bytes(200, b"<html>502 Bad Gateway</html>")
            self.send_json(200, server.completion(body, fault))

        def upload(self, data: bytes) -> None:
            header = f"Content-Type: {self.headers['Content-Type']}\r\n\r\n".encode()
            message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(header + data)
            fields = {
                part.get_param("name", header="content-disposition"): (
                    part.get_filename(),
                    part.get_payload(decode=True),
                )
                for part in message.iter_parts()
            }
            if "file" not in fields or "purpose" not in fields:
                return self.error(400, "multipart upload needs 'file' and 'purpose'")
            filename, content = fields["file"]
            file_id = server.add_file(filename or "upload.jsonl", fields["purpose"][1].decode(), content)
            self.send_json(200, self.public(server.files[file_id]))

    return Handler


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Serve the fault-injecting OpenAI-compatible test server.")
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each chat answer")
    args = parser.parse_args()
    server = OpenAIServer(latency=args.latency, port=args.port)
    print(server.url, flush=True)
    server.httpd.serve_forever()
