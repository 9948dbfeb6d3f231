"""Settings: defaults, TOML file, RECASSIST_* environment, and errors that say how to fix them."""

from pathlib import Path

import pytest

from core.errors import ConfigError
from assistant.settings import Settings


def test_defaults_work_offline():
    s = Settings.load(env={})
    assert s.llm_backend == "llama" and s.embedding_backend == "minilm" and s.chroma_mode == "persistent"
    assert s.data_dir == Path("~/.recassist").expanduser()
    assert s.resolved_database_url == f"sqlite:///{s.data_dir / 'recassist.db'}"


def test_precedence_file_then_env_then_overrides(tmp_path):
    config = tmp_path / "recassist.toml"
    config.write_text('[recassist]\ntop_k = 7\nllm_backend = "openai"\nrank_blend = 0.5\n')
    env = {"RECASSIST_TOP_K": "3", "RECASSIST_DATA_DIR": str(tmp_path / "d")}
    s = Settings.load(env=env, config_file=config, rank_blend=0.1)
    assert (s.top_k, s.llm_backend, s.rank_blend, s.data_dir) == (3, "openai", 0.1, tmp_path / "d")


def test_config_file_named_by_environment(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text("candidates = 30\n")
    assert Settings.load(env={"RECASSIST_CONFIG": str(config)}).candidates == 30


@pytest.mark.parametrize(
    "env,needle",
    [
        ({"RECASSIST_TOP_K": "many"}, "top_k"),
        ({"RECASSIST_LLM_BACKEND": "gpt5"}, "llm_backend"),
        ({"RECASSIST_API_KEYS": "abc"}, "KEY=admin"),
        ({"RECASSIST_CONFIG": "/nonexistent/x.toml"}, "does not exist"),
    ],
)
def test_bad_settings_name_the_setting(env, needle):
    with pytest.raises(ConfigError, match=needle):
        Settings.load(env=env)


@pytest.mark.parametrize(
    "env, blend",
    [
        ({}, 0.0),  # the embedded model: the evaluation's choice, so it is not asked to rank
        ({"RECASSIST_LLM_MODEL_PATH": "/models/qwen.gguf"}, 0.3),  # another GGUF: the unmeasured prior
        ({"RECASSIST_LLM_BACKEND": "openai"}, 0.3),
        ({"RECASSIST_RANK_BLEND": "0.7"}, 0.7),  # a pinned weight wins, for any model
        ({"RECASSIST_RANK_BLEND": "auto", "RECASSIST_LLM_BACKEND": "fake"}, 0.3),
    ],
)
def test_rank_blend_auto_follows_the_evaluation_for_the_embedded_model(env, blend):
    assert Settings.load(env=env).effective_rank_blend == blend


@pytest.mark.parametrize(
    "env, on",
    [
        ({}, False),  # the embedded model: its summaries failed the check in the evaluation
        ({"RECASSIST_LLM_MODEL_PATH": "/models/qwen.gguf"}, True),
        ({"RECASSIST_LLM_BACKEND": "openai"}, True),
        ({"RECASSIST_LLM_SUMMARY": "true"}, True),  # a pinned value wins
        ({"RECASSIST_LLM_SUMMARY": "false", "RECASSIST_LLM_BACKEND": "openai"}, False),
    ],
)
def test_llm_summary_auto_is_off_for_the_embedded_model_only(env, on):
    assert Settings.load(env=env).effective_llm_summary is on


def test_llm_summary_must_be_a_boolean_or_auto():
    with pytest.raises(ConfigError, match="llm_summary"):
        Settings.load(env={"RECASSIST_LLM_SUMMARY": "sometimes"})


@pytest.mark.parametrize("raw", ["1.5", "-0.1", "often"])
def test_rank_blend_must_be_a_weight_or_auto(raw):
    with pytest.raises(ConfigError, match="rank_blend"):
        Settings.load(env={"RECASSIST_RANK_BLEND": raw})


def test_unknown_key_in_file_is_an_error(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text("tpo_k = 3\n")
    with pytest.raises(ConfigError, match="tpo_k"):
        Settings.load(env={}, config_file=config)


def test_api_keys_parse():
    s = Settings.load(env={"RECASSIST_API_KEYS": "k1=admin, k2=user:ana"})
    assert s.api_keys == {"k1": "admin", "k2": "user:ana"}


def test_importing_the_package_reads_no_environment(monkeypatch):
    import importlib

    import assistant.settings as module

    monkeypatch.setenv("RECASSIST_TOP_K", "not-a-number")
    importlib.reload(module)  # would raise if settings were read at import time
