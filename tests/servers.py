"""Helpers that run `recassist serve` in a subprocess on loopback for integration and browser tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A port nothing listens on right now (bound and released by the OS)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """Environment for a fast, offline server: fake LLM, hashing embeddings, a private data dir."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECASSIST_")}
    env.update(
        RECASSIST_DATA_DIR=str(data_dir),
        RECASSIST_LLM_BACKEND="fake",
        RECASSIST_EMBEDDING_BACKEND="hash",
        RECASSIST_HOST="127.0.0.1",
        GRADIO_ANALYTICS_ENABLED="False",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        ANONYMIZED_TELEMETRY="False",
        PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""),
    )
    env.update(extra)
    return env


def serve_command(port: int, *args: str) -> list[str]:
    """`recassist serve` from this interpreter's environment (the console script if installed)."""
    script = Path(sys.executable).parent / "recassist"
    head = [str(script)] if script.exists() else [sys.executable, "-m", "assistant.cli"]
    return head + ["serve", "--host", "127.0.0.1", "--port", str(port), *args]


@contextmanager
def running_server(data_dir: Path, *, demo: bool = True, timeout_s: float = 180.0, **env: str) -> Iterator[str]:
    """Start a server, wait until /health answers, yield its base URL, stop it afterwards."""
    with server_process(data_dir, demo=demo, timeout_s=timeout_s, **env) as (_, base):
        yield base


@contextmanager
def server_process(
    data_dir: Path, *, demo: bool = True, timeout_s: float = 180.0, args: tuple[str, ...] = (), **env: str
) -> Iterator[tuple[subprocess.Popen, str]]:
    """Like running_server, but yields the process too (its pid, e.g. to read its memory); `args`
    are more `serve` options."""
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log_path = data_dir / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            serve_command(port, *(["--demo"] if demo else []), *args),
            cwd=REPO,
            env=server_env(data_dir, **env),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(proc, base + "/health", timeout_s, log_path, "server")
        yield proc, base
    finally:
        stop(proc)


def wait_until_ready(proc: subprocess.Popen, url: str, timeout_s: float, log_path: Path, what: str) -> None:
    """Poll `url` until it answers 200; fail with the log's tail if the process dies or time runs out."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{_tail(log_path)}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not answer {url} within {timeout_s:.0f} s:\n{_tail(log_path)}")
        time.sleep(0.3)


def stop(proc: subprocess.Popen, timeout_s: float = 20.0) -> None:
    """Terminate a server, killing it if it does not exit in time."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
