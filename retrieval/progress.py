"""One progress bar for long loops (ingest, evaluation): tqdm on stderr, or a silent stand-in."""

from __future__ import annotations

import sys


class _NoBar:
    """Stands in for a tqdm bar where none is drawn: the same calls, doing nothing."""

    def __enter__(self) -> "_NoBar":
        return self

    def __exit__(self, *exc) -> None:
        return None

    def update(self, n: int = 1) -> None:
        return None

    def close(self) -> None:
        return None


def progress_bar(total: int, desc: str, enabled: bool, unit: str = "user", terminal_only: bool = False):
    """A tqdm bar on stderr when `enabled` (and, with `terminal_only`, when stderr is a terminal)."""
    if not enabled or (terminal_only and not sys.stderr.isatty()):
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, leave=False)
