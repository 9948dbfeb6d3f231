"""The local model in its own supervised process: same answers as inline, and a crash, hang or
refused instruction in native code is an LLMError and a restart, never the caller's death."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from assistant.errors import LLMError
from assistant.llm.process import ModelProcessLLM, ModelSupervisor, _start, check_model, describe_exit

QUESTION = "Question: Which letter comes first in the alphabet, A or B?\nAnswer:"
STORY = "Once upon a time, in a small village by the sea, there lived"


# --- start-up: a process that cannot load or dies says why (no model needed) ------------------


@pytest.mark.parametrize(
    "code, expected",
    [
        ("import os, signal; os.kill(os.getpid(), signal.SIGILL)", ["killed by SIGILL", "Rebuild", "RECASSIST_LLAMA_CMAKE_ARGS"]),
        ("import os, signal; os.kill(os.getpid(), signal.SIGSEGV)", ["killed by SIGSEGV", "while loading"]),
        ("print('FAILED model file /x.gguf does not exist; set RECASSIST_LLM_MODEL_PATH', flush=True)",
         ["/x.gguf does not exist", "RECASSIST_LLM_MODEL_PATH"]),
        ("import sys; sys.exit('boom: no module named llama_cpp')", ["exited with status 1", "boom: no module named llama_cpp"]),
    ],
)
def test_a_model_process_that_dies_while_loading_says_what_happened_and_what_to_do(code, expected):
    with pytest.raises(LLMError) as caught:
        _start([sys.executable, "-c", code], timeout_s=30)
    for words in expected:
        assert words in str(caught.value)


def test_a_model_process_that_never_gets_ready_is_stopped_at_the_load_timeout():
    started = time.monotonic()
    with pytest.raises(LLMError, match="did not load within 1s"):
        _start([sys.executable, "-c", "import time; time.sleep(60)"], timeout_s=1)
    assert time.monotonic() - started < 10


def test_exit_codes_are_described_in_words():
    assert describe_exit(-signal.SIGKILL) == "killed by SIGKILL"
    assert describe_exit(3) == "exited with status 3"


# --- the real embedded model in its own process ----------------------------------------------


@pytest.fixture(scope="module")
def supervised(embedded_model_path):
    supervisor = ModelSupervisor(embedded_model_path, n_ctx=2048, threads=2, backoff_s=(0.2, 2.0))
    info = supervisor.start()
    llm = ModelProcessLLM(supervisor.socket_path, timeout_s=5.0, queue_timeout_s=20.0, supervisor=supervisor, info=info)
    yield llm
    supervisor.stop()


@pytest.fixture(scope="module")
def inline(embedded_model_path):
    from assistant.llm.llama import LlamaCppLLM

    model = LlamaCppLLM(embedded_model_path, n_ctx=2048, n_threads=2)
    yield model
    model.close()


def _wait_up(llm: ModelProcessLLM, old_pid: int, timeout_s: float = 60.0) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        st = llm.supervisor.status()
        if st["state"] == "up" and st["pid"] not in (None, old_pid):
            return st["pid"]
        time.sleep(0.05)
    raise AssertionError(f"the model process did not come back: {llm.supervisor.status()}")


@pytest.mark.integration
def test_the_process_answers_exactly_as_the_model_does_inline(supervised, inline):
    assert (supervised.model, supervised.prompt_style, supervised.context_window) == (inline.model, "completion", 2048)
    labels = ["A", "B", "C"]
    remote, local = supervised.label_logprobs(QUESTION, labels), inline.label_logprobs(QUESTION, labels)
    assert remote.keys() == local.keys()
    for label in labels:
        assert remote[label] == pytest.approx(local[label], abs=1e-4)
    assert "".join(supervised.stream(STORY, max_tokens=12)) == "".join(inline.stream(STORY, max_tokens=12))
    assert supervised.count_tokens("hello world") == inline.count_tokens("hello world") == 2
    assert supervised.label_token_ids(labels) == inline.label_token_ids(labels)


@pytest.mark.integration
def test_prompt_prefixes_are_reused_across_the_process_boundary(supervised):
    supervised.forget_prompt_cache()
    head = "Instructions that every ranking prompt of this template shares. " * 12
    before = supervised.stats
    for tail in ("First request: A", "Second request: B", "Third request: C"):
        supervised.label_logprobs(head + tail, ["A"])
    after = supervised.stats
    read = after["evaluated_tokens"] - before["evaluated_tokens"]
    total = after["prompt_tokens"] - before["prompt_tokens"]
    assert read < total * 0.6, f"read {read} of {total} prompt tokens: the shared head was read again"


@pytest.mark.integration
def test_a_closed_stream_frees_the_model_for_the_next_caller(supervised):
    pieces = supervised.stream(STORY, max_tokens=200)
    next(pieces)
    pieces.close()
    started = time.monotonic()
    supervised.label_logprobs(QUESTION, ["A", "B"])
    assert time.monotonic() - started < 5


@pytest.mark.integration
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSEGV])
def test_a_model_process_killed_mid_stream_is_an_error_then_a_restart(supervised, sig):
    pid = supervised.supervisor.pid
    restarts = supervised.supervisor.restarts
    pieces = supervised.stream(STORY, max_tokens=400)
    next(pieces)
    os.kill(pid, sig)
    with pytest.raises(LLMError, match=f"died during stream.*killed by {sig.name}.*restarts"):
        for _ in pieces:
            pass
    # While it restarts, calls fail at once with the reason instead of waiting.
    started = time.monotonic()
    try:
        supervised.label_logprobs(QUESTION, ["A"])
    except LLMError as exc:
        assert "restarting" in str(exc) or "died" in str(exc)
        assert time.monotonic() - started < 2
    new_pid = _wait_up(supervised, pid)
    assert supervised.supervisor.restarts == restarts + 1
    assert new_pid != pid
    assert set(supervised.label_logprobs(QUESTION, ["A", "B"])) == {"A", "B"}
    assert "".join(supervised.stream(STORY, max_tokens=4))


@pytest.mark.integration
def test_a_hung_model_process_is_killed_after_the_timeout_and_restarted(supervised):
    pid = supervised.supervisor.pid
    pieces = supervised.stream(STORY, max_tokens=400)
    next(pieces)
    os.kill(pid, signal.SIGSTOP)  # frozen, as a native deadlock would leave it
    started = time.monotonic()
    with pytest.raises(LLMError, match="did not answer within 5s"):
        for _ in pieces:
            pass
    assert time.monotonic() - started < 5 + 3
    _wait_up(supervised, pid)
    assert set(supervised.label_logprobs(QUESTION, ["A"])) == {"A"}


@pytest.mark.integration
def test_callers_in_many_threads_take_turns_on_one_process(supervised):
    results, errors = [], []

    def ask():
        try:
            results.append(supervised.label_logprobs(QUESTION, ["A", "B"]))
        except LLMError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=ask) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert all(r == pytest.approx(results[0], abs=1e-4) for r in results)


@pytest.mark.integration
def test_a_model_file_that_cannot_load_is_a_clear_error_at_start_up(tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + os.urandom(4096))
    with pytest.raises(LLMError, match="could not load .*broken.gguf"):
        ModelSupervisor(bad).start()
    with pytest.raises(LLMError, match="does not exist"):
        check_model(tmp_path / "missing.gguf")


@pytest.mark.integration
def test_check_model_command_proves_the_model_runs_here(cli_env, embedded_model_path):
    env = {**os.environ, "RECASSIST_LLM_BACKEND": "llama", "RECASSIST_LLM_MODEL_PATH": str(embedded_model_path)}
    proc = subprocess.run([sys.executable, "-m", "assistant.cli", "check-model"], capture_output=True, text=True,
                          timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "the local model runs" in proc.stdout and "AVX2" in proc.stdout
    bad = cli_env / "broken.gguf"
    bad.write_bytes(b"not a model")
    env["RECASSIST_LLM_MODEL_PATH"] = str(bad)
    proc = subprocess.run([sys.executable, "-m", "assistant.cli", "check-model"], capture_output=True, text=True,
                          timeout=120, env=env)
    assert proc.returncode == 1 and "does not run here" in proc.stderr and "broken.gguf" in proc.stderr


# --- the build: no instructions beyond the level it was built for ----------------------------

AMX = ("tileloadd", "tilestored", "tdpbssd", "tdpbsud", "tdpbusd", "tdpbuud", "tdpbf16ps", "tdpfp16ps", "ldtilecfg",
       "tilerelease", "tilezero")


def _native_libraries() -> list[Path]:
    llama_cpp = pytest.importorskip("llama_cpp", reason="pip install 'recassist[local]' for llama-cpp-python")
    libs = sorted(Path(llama_cpp.__file__).parent.glob("lib/*.so*"))
    if not libs:
        pytest.skip(f"no native libraries found next to {llama_cpp.__file__}")
    return libs


def _disassembly(lib: Path) -> str:
    if shutil.which("objdump") is None:
        pytest.skip("objdump (binutils) is missing; apt-get install binutils")
    return subprocess.run(["objdump", "-d", "--no-show-raw-insn", str(lib)], capture_output=True, text=True,
                          check=True).stdout


@pytest.mark.integration
def test_the_built_llama_cpp_has_no_amx_instructions():
    for lib in _native_libraries():
        text = _disassembly(lib)
        found = sorted({m for m in AMX if f"\t{m}" in text or f" {m} " in text})
        assert not found, f"{lib.name} uses AMX ({', '.join(found)}): rebuild without GGML_AMX_* and GGML_NATIVE"


@pytest.mark.integration
def test_the_default_build_runs_on_any_x86_64_v3_machine():
    """The default flags (x86-64-v3) leave no AVX-512 code, which a v3 machine would refuse."""
    if not (Path(sys.prefix) / ".recassist-llama-build").exists() or os.environ.get("RECASSIST_LLAMA_CMAKE_ARGS"):
        pytest.skip("llama-cpp-python was not installed by scripts/bootstrap.sh with the default flags")
    for lib in _native_libraries():
        assert "%zmm" not in _disassembly(lib), f"{lib.name} uses AVX-512 (zmm registers); the default targets x86-64-v3"
