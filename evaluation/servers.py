"""Processes on loopback for the benchmarks, the load check and the tests: start one, wait until it
answers, stop it afterwards; and read a process's peak memory."""

from __future__ import annotations

import os
import shutil
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


@contextmanager
def loopback_process(
    command: list[str], ready_url: str, *, what: str, log_path: Path, timeout_s: float,
    env: dict[str, str] | None = None, cwd: Path | None = None, stop_timeout_s: float = 20.0,
) -> Iterator[subprocess.Popen]:
    """Run `command` (a server on loopback), wait until `ready_url` answers 200, yield the process,
    stop it afterwards. Its output goes to `log_path`, whose tail a failure to start shows."""
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until_ready(proc, ready_url, timeout_s, log_path, what)
        yield proc
    finally:
        stop(proc, stop_timeout_s)


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
    if proc.poll() is not None:
        return
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


# -- recassist serve ---------------------------------------------------------------------------


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
    head = [str(script)] if script.exists() else [sys.executable, "-m", "server.cli"]
    return head + ["serve", "--host", "127.0.0.1", "--port", str(port), *args]


@contextmanager
def server_process(
    data_dir: Path, *, demo: bool = True, timeout_s: float = 180.0, args: tuple[str, ...] = (), **env: str
) -> Iterator[tuple[subprocess.Popen, str]]:
    """`recassist serve` in a subprocess with `data_dir` (its log in data_dir/server.log); yields
    the process (its pid, e.g. to read its memory) and its base URL once /health answers. `args`
    are more `serve` options, `env` RECASSIST_* settings over the offline defaults of server_env."""
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command = serve_command(port, *(["--demo"] if demo else []), *args)
    with loopback_process(command, base + "/health", what="server", log_path=data_dir / "server.log",
                          timeout_s=timeout_s, env=server_env(data_dir, **env), cwd=REPO) as proc:
        yield proc, base


# -- chroma run --------------------------------------------------------------------------------


def chroma_cli() -> str | None:
    """The `chroma` command of this interpreter's environment, else the one on PATH."""
    return shutil.which("chroma", path=str(Path(sys.executable).parent)) or shutil.which("chroma")


@contextmanager
def chroma_server(path: str | Path, timeout_s: float = 60.0) -> Iterator[tuple[str, int, subprocess.Popen]]:
    """`chroma run` on a free loopback port over the folder `path`; yields (host, port, process)
    once its heartbeat answers. Its log goes next to the folder."""
    cli = chroma_cli()
    if cli is None:
        raise RuntimeError("the `chroma` CLI is missing (it comes with `pip install chromadb`)")
    port = free_port()
    command = [cli, "run", "--path", str(path), "--host", "127.0.0.1", "--port", str(port)]
    with loopback_process(command, f"http://127.0.0.1:{port}/api/v2/heartbeat", what="`chroma run`",
                          log_path=Path(path).parent / f"chroma-{port}.log", timeout_s=timeout_s,
                          stop_timeout_s=15) as proc:
        yield "127.0.0.1", port, proc


# -- memory ------------------------------------------------------------------------------------


def peak_rss_mib(pid: int | None) -> float | None:
    """The process's peak resident memory (VmHWM) since start or the last reset, in MiB (None: unknown)."""
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def reset_peak_rss(pid: int | None) -> None:
    """Start VmHWM afresh so each measurement reports its own peak (Linux; harmless elsewhere)."""
    if pid is None:
        return
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        pass  # the peak then covers the whole run so far; the report says which
