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
