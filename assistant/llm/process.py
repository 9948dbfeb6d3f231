"""The local model in a supervised process of its own, behind the one LLM contract.

`ModelSupervisor` starts `assistant.llm.worker`, waits until the model has loaded and evaluated a
few tokens, and restarts it with backoff whenever it dies (a signal, the OOM killer) or is killed
for hanging. `ModelProcessLLM` is the LLM the agent calls: each call is one connection to the
worker's Unix socket, so calls from several threads are in flight at once and their streams
share the worker's decode loop (continuous batching; `reserve()` asks it for a turn's model time).
A crash or a hang becomes an LLMError ("the model is down"), which the
agent already turns into a degraded answer with a notice; the API process never dies of it.

Several API worker processes (`recassist serve --workers N`) share one model process: the
supervisor lives in the parent, and each worker connects to the socket named by
RECASSIST_LLM_SOCKET.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from pathlib import Path
from typing import Iterator, Sequence

from core.errors import LLMError
from assistant.llm.base import ModelBusy, Prompt, ReservedLLM

log = logging.getLogger(__name__)

REBUILD_HINT = (
    "the llama.cpp build uses CPU instructions this machine refuses. Rebuild it for this CPU level: "
    "`rm -rf .venv ~/.cache/recassist/wheels && make setup` (the default targets x86-64-v3: AVX2, FMA, F16C; "
    "for another CPU set RECASSIST_LLAMA_CPU, see README 'The local model build')"
)


def describe_exit(code: int | None) -> str:
    """'was killed by SIGSEGV' or 'exited with status 1'."""
    if code is None:
        return "is still running"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


def _why(code: int | None) -> str:
    """What a death by this signal usually means, for the person reading the error."""
    if code == -signal.SIGILL:
        return "; " + REBUILD_HINT
    if code == -signal.SIGKILL:
        return " (out of memory, or killed by an operator or by recassist for hanging)"
    return ""


def worker_command(model_path: str | Path, *, n_ctx: int, threads: int, prompt_style: str,
                   queue_timeout_s: float, socket_path: str | None = None, batching: bool = True) -> list[str]:
    cmd = [sys.executable, "-m", "assistant.llm.worker", "--model", str(model_path), "--n-ctx", str(n_ctx),
           "--threads", str(threads), "--prompt-style", prompt_style, "--queue-timeout", str(queue_timeout_s)]
    cmd += [] if batching else ["--one-call-at-a-time"]
    return cmd + (["--socket", socket_path] if socket_path else ["--check"])


def _start(cmd: list[str], timeout_s: float) -> tuple[subprocess.Popen, dict]:
    """Start a worker and wait for its READY line; LLMError (with the reason) if it never comes."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    lines: list[str] = []
    last_words: deque[str] = deque(maxlen=5)  # stderr is read from the start, so it never fills its pipe
    threading.Thread(target=lambda: lines.extend(iter_lines(proc.stdout)), daemon=True).start()
    threading.Thread(target=_drain, args=(proc.stderr, last_words), daemon=True).start()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ready = [line for line in lines if line.startswith(("READY ", "FAILED "))]
        if ready:
            kind, _, rest = ready[0].partition(" ")
            if kind == "READY":
                return proc, json.loads(rest)
            proc.wait(timeout=10)
            raise LLMError(rest)
        if proc.poll() is not None:
            time.sleep(0.2)  # let the readers take the last lines
            if any(line.startswith(("READY ", "FAILED ")) for line in lines):
                continue  # it printed its verdict just before exiting (--check)
            err = [w for w in last_words if w.strip()][-3:]
            raise LLMError(
                f"the local model process {describe_exit(proc.returncode)} while loading the model{_why(proc.returncode)}"
                + (f" (its last words: {' | '.join(err)})" if err and proc.returncode > 0 else "")
            )
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    raise LLMError(f"the local model did not load within {timeout_s:.0f}s")


def iter_lines(stream) -> Iterator[str]:
    for raw in iter(stream.readline, b""):
        yield raw.decode("utf-8", "replace").rstrip("\n")


def _drain(stream, last_words: deque) -> None:
    """Forward the worker's stderr (llama.cpp's errors, tracebacks) to our log, keeping the last lines."""
    for line in iter_lines(stream):
        if line.strip():
            last_words.append(line)
            log.warning("model process: %s", line)


def check_model(model_path: str | Path, *, n_ctx: int = 2048, threads: int = 0, timeout_s: float = 180.0) -> dict:
    """Load the model in a child process and evaluate a few tokens; its info, or LLMError saying why not."""
    cmd = worker_command(model_path, n_ctx=n_ctx, threads=threads, prompt_style="auto", queue_timeout_s=timeout_s)
    proc, info = _start(cmd, timeout_s)
    proc.wait(timeout=30)
    return info


SOCKET_PATH_MAX = 100  # bytes: Linux allows 107 for a Unix socket's path ("AF_UNIX path too long")


def _socket_folder() -> str:
    """A private folder for the model's socket, in the temp dir unless its path is too long for a
    socket there (a deep TMPDIR): then in /tmp."""
    folder = tempfile.mkdtemp(prefix="recassist-model-")
    if len(os.path.join(folder, "model.sock").encode()) <= SOCKET_PATH_MAX or not os.path.isdir("/tmp"):
        return folder
    os.rmdir(folder)
    return tempfile.mkdtemp(prefix="recassist-model-", dir="/tmp")


class ModelSupervisor:
    """Keeps one model process running: start, watch, restart with backoff, stop."""

    def __init__(self, model_path: str | Path, *, n_ctx: int = 2048, threads: int = 0, prompt_style: str = "auto",
                 queue_timeout_s: float = 120.0, load_timeout_s: float = 180.0,
                 backoff_s: tuple[float, float] = (0.5, 30.0), batching: bool = True):
        self._dir = _socket_folder()
        self.socket_path = os.path.join(self._dir, "model.sock")
        self._cmd = worker_command(model_path, n_ctx=n_ctx, threads=threads, prompt_style=prompt_style,
                                   queue_timeout_s=queue_timeout_s, socket_path=self.socket_path, batching=batching)
        self.load_timeout_s = load_timeout_s
        self.backoff_s = backoff_s
        self.info: dict = {}
        self.state = "stopped"  # starting | up | down | stopped
        self.restarts = 0
        self.last_exit = ""
        self._proc: subprocess.Popen | None = None
        self._stopping = threading.Event()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc and self._proc.poll() is None else None

    def start(self) -> dict:
        """Start the model process and wait until it answers; LLMError if it cannot (bad file, SIGILL)."""
        self.state = "starting"
        try:
            self._proc, self.info = _start(self._cmd, self.load_timeout_s)
        except LLMError:
            self.state = "down"
            raise
        self.state = "up"
        threading.Thread(target=self._watch, name="model-supervisor", daemon=True).start()
        return self.info

    def status(self) -> dict:
        return {"state": self.state, "pid": self.pid, "restarts": self.restarts, "last_exit": self.last_exit,
                "socket": self.socket_path}

    def down_reason(self) -> str:
        """Why the model is not answering right now, for an error message."""
        state, last_exit = self.state, self.last_exit
        if state == "up":  # the socket can close before the watcher sees the exit: ask the process
            ended = self.exit_reason()
            if ended:
                state, last_exit = "down", ended
        what = f"the local model process {last_exit}" if last_exit else "the local model process is not running"
        return f"{what}; it is {'restarting' if state in ('down', 'starting') else state}"

    def exit_reason(self, wait_s: float = 1.0) -> str:
        """How the current model process ended ('was killed by SIGSEGV'), waiting up to `wait_s`
        for it: its socket closes a moment before its exit is reported. '' while it runs."""
        proc = self._proc
        if proc is None:
            return ""
        try:
            proc.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            return ""
        return describe_exit(proc.returncode)

    def kill(self) -> None:
        """End a hung model process; the watcher restarts it."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()

    def stop(self) -> None:
        self._stopping.set()
        self.state = "stopped"
        proc = self._proc
        if proc is not None and proc.poll() is None:
            try:
                proc.stdin.close()  # the worker exits when its stdin closes
                proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                proc.kill()
                proc.wait()
        shutil.rmtree(self._dir, ignore_errors=True)  # the socket's folder: nothing is left in the temp dir

    def _watch(self) -> None:
        delay, longest = self.backoff_s
        while not self._stopping.is_set():
            proc = self._proc
            up_since = time.monotonic()
            proc.wait()
            if self._stopping.is_set():
                return
            self.state = "down"
            self.last_exit = describe_exit(proc.returncode)
            log.error("the local model process %s%s; restarting in %.1fs", self.last_exit, _why(proc.returncode), delay)
            if time.monotonic() - up_since > 60:
                delay = self.backoff_s[0]  # it ran fine for a while: this is a new fault, not a crash loop
            while not self._stopping.wait(delay):
                delay = min(delay * 2, longest)
                self.state = "starting"
                try:
                    self._proc, self.info = _start(self._cmd, self.load_timeout_s)
                except LLMError as exc:
                    self.state = "down"
                    log.error("restarting the local model failed: %s; next try in %.1fs", exc, delay)
                    continue
                self.restarts += 1
                self.state = "up"
                log.warning("the local model process is back (pid %d, restart %d)", self._proc.pid, self.restarts)
                break


class ModelProcessLLM:
    """The LLM contract, answered by a model process over its Unix socket."""

    backend = "llama"
    remote = False  # a Unix socket to a process on this machine
    greedy_repeats = True  # a greedy generation of the same prompt writes the same text (llm/memo.py)
    one_call_at_a_time = True  # one model process that turns contend for (base.py)
    supports_logprobs = True
    supports_json_schema = True
    supports_batch = True
    writes_given_words = True  # the model process holds a generation to given words (llm/words.py)

    def __init__(self, socket_path: str, *, timeout_s: float = 30.0, queue_timeout_s: float = 120.0,
                 supervisor: ModelSupervisor | None = None, info: dict | None = None):
        self.socket_path = socket_path
        self.timeout_s = timeout_s
        self.queue_timeout_s = queue_timeout_s
        self.supervisor = supervisor
        self.info = info or self._call("info")
        self.model = self.info["model"]
        self.model_path = Path(self.info["model_path"])
        self.context_window = int(self.info["context_window"])
        self.prompt_style = self.info["prompt_style"]
        self.chat_template = "yes" if self.info.get("chat_template") else ""
        self.batches_across_calls = bool(self.info.get("batches_across_calls"))  # its streams share a decode loop
        self._count_cache: dict[str, int] = {}

    # The contract ----------------------------------------------------------------------------

    def stream(self, prompt: Prompt, *, max_tokens: int, stop: Sequence[str] | None = None,
               temperature: float = 0.0, json_schema: dict | None = None) -> Iterator[str]:
        return self._stream(prompt, max_tokens=max_tokens, stop=stop, temperature=temperature, json_schema=json_schema)

    def _stream(self, prompt: Prompt, *, max_tokens: int, stop: Sequence[str] | None = None, temperature: float = 0.0,
                json_schema: dict | None = None, reservation: str | None = None) -> Iterator[str]:
        args = {"prompt": prompt, "max_tokens": max_tokens, "stop": list(stop or []), "temperature": temperature,
                "json_schema": json_schema, "reservation": reservation}
        with self._connection("stream", args) as messages:
            for message in messages:
                if "done" in message:
                    return
                yield message["text"]

    def stream_many(self, prompts: Sequence[Prompt], *, max_tokens: int, stop: Sequence[str] | None = None,
                    words: Sequence[str | None] | None = None) -> Iterator[tuple[int, str | None]]:
        return self._stream_many(prompts, max_tokens=max_tokens, stop=stop, words=words)

    def stream_many_spare(self, prompts: Sequence[Prompt], *, max_tokens: int, stop: Sequence[str] | None = None,
                          words: Sequence[str | None] | None = None) -> Iterator[tuple[int, str | None]]:
        """stream_many in the model's spare time: the next turn of any worker that reserves model
        time stops it (ModelBusy)."""
        return self._stream_many(prompts, max_tokens=max_tokens, stop=stop, spare=True, words=words)

    def _stream_many(self, prompts: Sequence[Prompt], *, max_tokens: int, stop: Sequence[str] | None = None,
                     reservation: str | None = None, spare: bool = False,
                     words: Sequence[str | None] | None = None) -> Iterator[tuple[int, str | None]]:
        args = {"prompts": list(prompts), "max_tokens": max_tokens, "stop": list(stop or []), "reservation": reservation}
        if spare:
            args["spare"] = True  # a model process from before this flag rejects no call without it
        if words is not None:
            args["words"] = list(words)
        with self._connection("stream_many", args) as messages:
            for message in messages:
                if "done" in message:
                    return
                index, text = message["piece"]
                yield index, text

    def label_logprobs(self, prompt: Prompt, labels: Sequence[str]) -> dict[str, float]:
        return self._call("label_logprobs", prompt=prompt, labels=list(labels))

    def count_tokens(self, text: str) -> int:
        if text not in self._count_cache:
            if len(self._count_cache) > 4096:
                self._count_cache.clear()
            self._count_cache[text] = self._call("count_tokens", text=text)
        return self._count_cache[text]

    @contextlib.contextmanager
    def reserve(self, budget_s: float, *, sequences: int = 5, least: int = 1, peers: int = 0) -> Iterator[ReservedLLM | None]:
        """Model time for one turn (base.BatchingLLM), held by the model process while this
        connection stays open. None when it is busy; a view without a reservation when it cannot
        say (down, restarting, an older worker): the turn's calls then fail, or wait, as they would."""
        args = {"budget_s": budget_s, "sequences": sequences, "least": least, "peers": peers}
        deadline = time.monotonic() + budget_s
        held = contextlib.ExitStack()
        try:
            result = next(held.enter_context(self._connection("reserve", args)))["result"]
        except ModelBusy:
            result = None
        except LLMError:
            result = {"id": None, "granted": sequences}
        if result is not None and result.get("alone"):
            deadline = None  # an idle model's lone turn: its budget stops nobody's reading (base.ReservedLLM)
        with held:  # the connection, open until the turn is done with the model
            yield None if result is None else ReservedLLM(self, result["id"], int(result["granted"]), deadline)

    # Helpers the benchmarks and the ranking use ------------------------------------------------

    def label_token_ids(self, labels: Sequence[str]) -> list[list[int]]:
        return self._call("label_token_ids", labels=list(labels))

    def forget_prompt_cache(self) -> None:
        self._call("forget_prompt_cache")

    @property
    def stats(self) -> dict:
        return self._call("stats")

    def close(self) -> None:
        if self.supervisor is not None:
            self.supervisor.stop()

    # The wire ----------------------------------------------------------------------------------

    def _call(self, op: str, **args):
        with self._connection(op, args) as messages:
            for message in messages:
                return message["result"]
        raise LLMError(f"the local model process closed the connection during {op}")

    @contextlib.contextmanager
    def _connection(self, op: str, args: dict) -> Iterator[Iterator[dict]]:
        sock = self._connect()
        try:
            sock.sendall(json.dumps({"op": op, "args": args}, ensure_ascii=False).encode("utf-8") + b"\n")
            yield self._messages(sock, op)
        finally:
            sock.close()  # a stream closed early ends the generation in the worker

    def _connect(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(5.0)
        try:
            sock.connect(self.socket_path)
        except OSError as exc:
            sock.close()
            if self.supervisor is not None:
                raise LLMError(self.supervisor.down_reason()) from None
            raise LLMError(f"the local model process is not answering on {self.socket_path} ({exc.strerror or exc}); "
                           "it is restarting, or `recassist serve` that owns it has stopped") from None
        return sock

    def _messages(self, sock: socket.socket, op: str) -> Iterator[dict]:
        """The worker's answers; LLMError for its errors, its death, or its silence."""
        reader = sock.makefile("rb")
        sock.settimeout(self.queue_timeout_s + 5.0)  # first: waiting for the model's turn
        worker_pid = None
        while True:
            try:
                raw = reader.readline()
            except TimeoutError:
                if worker_pid is None:
                    raise LLMError(f"the local model stayed busy for {self.queue_timeout_s:.0f}s") from None
                self._kill_hung(worker_pid)
                raise LLMError(
                    f"the local model did not answer within {self.timeout_s:.0f}s (it hung); it was stopped and restarts"
                ) from None
            except (ConnectionResetError, BrokenPipeError):
                raise LLMError(self._death(op)) from None
            except OSError as exc:
                raise LLMError(f"lost the local model process during {op} ({exc})") from None
            if not raw:
                raise LLMError(self._death(op))
            message = json.loads(raw)
            if "error" in message:
                raise (ModelBusy if message.get("busy") else LLMError)(message["error"])
            if "started" in message:
                worker_pid = message["started"]
                sock.settimeout(self.timeout_s)  # from now on: silence this long is a hang
                continue
            yield message

    def _death(self, op: str) -> str:
        how = self.supervisor.exit_reason() if self.supervisor is not None else ""
        return f"the local model process died during {op}" + (f" ({how})" if how else "") + "; it restarts by itself"

    def _kill_hung(self, pid: int) -> None:
        log.error("the local model process (pid %d) gave no answer for %.0fs: killing it so it restarts", pid, self.timeout_s)
        if self.supervisor is not None:
            self.supervisor.kill()
            return
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
