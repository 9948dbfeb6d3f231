"""The local model's own process: loads a GGUF model and answers the LLM contract on a Unix socket.

Native code (llama.cpp) can die by a signal (an instruction the CPU refuses, a segfault, the
out-of-memory killer) or hang; in its own process that is a fault the API process survives.
`python -m assistant.llm.worker --socket PATH --model FILE` is started by `ModelSupervisor`.

The wire is JSON lines, one request per connection (so each connection is one in-flight request,
served by a thread of its own: the connection is the request's id):
  request  {"op": "stream" | "label_logprobs" | "count_tokens" | "reserve" | ..., "args": {...}}
  answer   {"started": pid} once the model is this request's (a batched stream: once it has a
           sequence in the decode loop), then
           {"text": "..."}* {"done": true}     (stream)
           {"piece": [i, "..." | null]}* {"done": true}   (stream_many: null ends prompt i)
           {"result": ...}                     (every other op)
           {"error": "message", "busy": bool}  (an LLMError, busy for ModelBusy; the connection then closes)
Greedy streams of all connections share the model's decode loop (LlamaCppLLM.batches_across_calls);
the other model ops take it whole in turn. "reserve" {"budget_s", "sequences", "least"} answers
{"result": {"id", "granted"}} (or busy) and holds the reservation until its connection closes;
stream ops naming {"reservation": id} in their args are counted against it. A request whose
caller closes its connection while it waits or writes is cancelled and frees its sequence.

Start-up prints one line on stdout: `READY {info}` once the model has loaded AND evaluated a few
tokens (the instructions a bad build lacks run then, not at a user's first question), or
`FAILED message` when the model cannot load. The process exits when its stdin closes, so it
never outlives the process that started it.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import socketserver
import sys
import threading
import time

from assistant.llm.base import ModelBusy
from core.errors import LLMError

# Ops that take the model whole (they take turns); streams share the decode loop; the others answer at once.
_WHOLE_MODEL_OPS = {"label_logprobs", "label_token_ids", "forget_prompt_cache"}


def system_info() -> str:
    """llama.cpp's own list of the CPU features this build uses, e.g. 'AVX2 = 1 | AVX512 = 0 ...'."""
    import llama_cpp

    raw = llama_cpp.llama_print_system_info()
    return (raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)).strip()


def build_features() -> list[str]:
    """The CPU features this llama.cpp build was compiled to use (those reported as 1)."""
    features = []
    for part in system_info().replace("|", "\n").splitlines():
        name, _, value = part.rpartition("=")
        name = name.split(":")[-1].strip()
        if name and value.strip() == "1":
            features.append(name)
    return features


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        worker: ModelWorker = self.server.worker  # type: ignore[attr-defined]
        try:
            request = json.loads(self.rfile.readline() or b"null")
            op, args = request["op"], request.get("args", {})
        except (ValueError, KeyError, TypeError):
            return self._send({"error": "bad request: expected one JSON line with 'op'"})
        try:
            if op in _WHOLE_MODEL_OPS:
                with worker.llm.hold():  # re-entrant: the op below takes it again in this thread
                    self._send({"started": os.getpid()})
                    self._answer(worker, op, args)
            else:
                self._answer(worker, op, args)
        except LLMError as exc:
            self._send({"error": str(exc), "busy": isinstance(exc, ModelBusy)})
        except (BrokenPipeError, ConnectionResetError):
            pass  # the caller stopped reading (a closed stream): nothing to answer

    def _answer(self, worker: "ModelWorker", op: str, args: dict) -> None:
        llm = worker.llm
        if op in ("stream", "stream_many"):
            # None when the reservation is gone or was never made: the call then just waits its turn.
            args.update(reservation=worker.reservations.get(args.pop("reservation", None)),
                        started=lambda: self._send({"started": os.getpid()}), alive=self._caller_connected)
        if op == "stream":
            chunks = llm._stream(**args)
            try:
                for text in chunks:
                    self._send({"text": text})
            finally:
                chunks.close()  # a caller that went away frees the model at once
            self._send({"done": True})
        elif op == "stream_many":
            pieces = llm._stream_many(**args)
            try:
                for index, text in pieces:
                    self._send({"piece": [index, text]})
            finally:
                pieces.close()
            self._send({"done": True})
        elif op == "label_logprobs":
            self._send({"result": llm.label_logprobs(args["prompt"], args["labels"])})
        elif op == "label_token_ids":
            self._send({"result": llm.label_token_ids(args["labels"])})
        elif op == "forget_prompt_cache":
            llm.forget_prompt_cache()
            self._send({"result": None})
        elif op == "count_tokens":
            self._send({"result": llm.count_tokens(args["text"])})
        elif op == "stats":
            self._send({"result": dict(llm.stats)})
        elif op == "info":
            self._send({"result": worker.info})
        elif op == "reserve":
            self._reserve(worker, **args)
        else:
            self._send({"error": f"unknown op {op!r}"})

    def _reserve(self, worker: "ModelWorker", budget_s: float, sequences: int = 5, least: int = 1, peers: int = 0) -> None:
        with worker.llm.reserve(budget_s, sequences=sequences, least=least, peers=peers) as view:
            if view is None:
                return self._send({"error": f"{worker.llm.model} is busy: not even {least} generation(s) would be written "
                                           f"within {budget_s:g}s", "busy": True})
            key = f"{id(self):x}"
            worker.reservations[key] = view.reservation
            try:
                self._send({"result": {"id": key, "granted": view.granted, "alone": view.deadline is None}})
                self.rfile.read()  # held until the caller closes the connection
            finally:
                del worker.reservations[key]

    def _caller_connected(self) -> bool:
        """False once the caller has closed its end (it gave up on this request)."""
        try:
            return self.connection.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) != b""
        except BlockingIOError:
            return True
        except OSError:
            return False

    def _send(self, message: dict) -> None:
        self.wfile.write(json.dumps(message, ensure_ascii=False).encode("utf-8") + b"\n")
        self.wfile.flush()


class _Server(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True


class ModelWorker:
    """One loaded model, served to any number of connections (their streams share its decode loop)."""

    def __init__(self, llm):
        self.llm = llm
        self.reservations: dict[str, object] = {}  # what the open "reserve" connections hold, by id
        self.info = {
            "pid": os.getpid(),
            "model": llm.model,
            "model_path": str(llm.model_path),
            "context_window": llm.context_window,
            "prompt_style": llm.prompt_style,
            "chat_template": bool(llm.chat_template),
            "batches_across_calls": bool(llm.batches_across_calls),
            "cpu_features": build_features(),
        }

    def serve(self, socket_path: str) -> None:
        if os.path.exists(socket_path):
            os.unlink(socket_path)  # a socket file left by a worker that died
        server = _Server(socket_path, _Handler)
        server.worker = self  # read by the handlers
        threading.Thread(target=server.serve_forever, daemon=True).start()
        print("READY " + json.dumps(self.info), flush=True)
        sys.stdin.read()  # until the parent goes away or closes the pipe
        server.shutdown()


def self_test(llm) -> dict:
    """Evaluate a few tokens: a build with instructions this CPU refuses dies here, by a signal."""
    started = time.perf_counter()
    prompt = "The assistant recommends a book about the sea. Answer: A"
    llm.label_logprobs(prompt, ["A", "B"])
    text = "".join(llm.stream("Once upon a time", max_tokens=4))
    llm.forget_prompt_cache()
    return {"self_test_ms": round((time.perf_counter() - started) * 1000, 1), "self_test_text": text}


def prefer_as_oom_victim(score: int = 500) -> None:
    """When memory runs out, the kernel should end this process (it restarts) rather than the API."""
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write(str(score))
    except OSError:
        pass  # not Linux, or not allowed: the supervisor still restarts whatever dies


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m assistant.llm.worker", description=__doc__.split("\n")[0])
    p.add_argument("--socket", help="Unix socket to serve on (omit with --check: load, self-test, exit)")
    p.add_argument("--model", required=True, help="GGUF file")
    p.add_argument("--n-ctx", type=int, default=2048)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--prompt-style", default="auto")
    p.add_argument("--queue-timeout", type=float, default=120.0, help="seconds a request may wait for its turn")
    p.add_argument("--check", action="store_true", help="load the model, evaluate a few tokens, print READY and exit")
    p.add_argument("--one-call-at-a-time", action="store_true",
                   help="no batching across calls: every request takes the model whole, in turn")
    args = p.parse_args(argv)
    prefer_as_oom_victim()
    from assistant.llm.llama import LlamaCppLLM

    try:
        llm = LlamaCppLLM(args.model, n_ctx=args.n_ctx, n_threads=args.threads, prompt_style=args.prompt_style,
                          lock_timeout_s=args.queue_timeout, batching=not args.one_call_at_a_time)
        tested = self_test(llm)
    except LLMError as exc:
        print("FAILED " + str(exc).replace("\n", " "), flush=True)
        return 1
    worker = ModelWorker(llm)
    worker.info.update(tested)
    if args.check or not args.socket:
        print("READY " + json.dumps(worker.info), flush=True)
        return 0
    worker.serve(args.socket)
    return 0


if __name__ == "__main__":
    sys.exit(main())
