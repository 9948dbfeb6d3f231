"""Helpers that run `recassist serve` in a subprocess on loopback for integration and browser tests.

The starters live in evaluation.servers (the load check uses them too); tests import them from here.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from evaluation.servers import (  # noqa: F401  (re-exported for the tests)
    REPO,
    chroma_cli,
    free_port,
    serve_command,
    server_env,
    server_process,
    stop,
    wait_until_ready,
)


@contextmanager
def running_server(data_dir: Path, *, demo: bool = True, timeout_s: float = 180.0, **env: str) -> Iterator[str]:
    """Start a server, wait until /health answers, yield its base URL, stop it afterwards."""
    with server_process(data_dir, demo=demo, timeout_s=timeout_s, **env) as (_, base):
        yield base


def wait_for_workers(base: str, workers: int, timeout_s: float = 180.0) -> set[str]:
    """Until `workers` distinct processes have answered /health (each reply names its worker):
    a worker takes connections only once it is warm, so the others may still be warming up
    (and using the shared model) when the first one answers."""
    import time

    import httpx

    seen: set[str] = set()
    deadline = time.monotonic() + timeout_s
    while len(seen) < workers:
        if time.monotonic() > deadline:
            raise AssertionError(f"only {len(seen)} of {workers} workers answered /health in {timeout_s:.0f} s")
        with httpx.Client(timeout=30) as client:  # a new connection each time, so the kernel spreads them
            seen.add(client.get(base + "/health").headers["x-recassist-worker"])
        time.sleep(0.05)
    return seen
