"""LLM backends come from one registry (built-ins and installed packages alike), and callers ask
an LLM about its capabilities (remote, one call at a time), never about its backend's name."""

from __future__ import annotations

import importlib.metadata
import json
import sys
import textwrap
import threading

import pytest

from assistant.engine import Engine
from core.errors import ConfigError
from assistant.llm import registry
from assistant.llm.fake import FakeLLM
from assistant.llm.redact import RedactingLLM
from assistant.settings import Settings

OUTSIDE = '''
from assistant.llm.fake import FakeLLM


class HostedModel(FakeLLM):
    """What an outside package ships: a model behind somebody's server."""

    backend = "outside"

    def __init__(self, settings):
        super().__init__(model="outside-model", prompt_style="chat", remote=True)
        self.settings = settings


def create(settings):
    return HostedModel(settings)


def incomplete(settings):
    return object()
'''


@pytest.fixture
def outside_package(tmp_path, monkeypatch):
    """A really installed distribution (a dist-info folder on sys.path) with two entry points."""
    site = tmp_path / "site"
    (site / "recassist_outside-0.1.dist-info").mkdir(parents=True)
    (site / "recassist_outside.py").write_text(OUTSIDE)
    (site / "recassist_outside-0.1.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: recassist-outside\nVersion: 0.1\n"
    )
    (site / "recassist_outside-0.1.dist-info" / "entry_points.txt").write_text(textwrap.dedent("""\
        [recassist.llm_backends]
        outside = recassist_outside:create
        incomplete = recassist_outside:incomplete
        """))
    monkeypatch.syspath_prepend(str(site))
    yield site
    for name in ("outside", "incomplete"):
        registry.REGISTRY.unregister(name)  # loaded entry points are remembered: forget them
    sys.modules.pop("recassist_outside", None)


def settings(tmp_path, **values) -> Settings:
    return Settings.load(env={}, data_dir=tmp_path / "data", embedding_backend="hash", **values)


# The registry ---------------------------------------------------------------------------------

def test_builtins_are_registered_and_llama_stays_the_default():
    assert {"llama", "openai", "fake", "none", "langchain"} <= set(registry.names())
    assert Settings.load(env={}).llm_backend == "llama"
    assert registry.backend("llama").local_model and not registry.backend("openai").local_model
    assert not registry.backend("none").makes_llm


@pytest.mark.parametrize("setting, value, known, group", [
    ("RECASSIST_LLM_BACKEND", "gpt5", "fake, langchain, llama, none, openai", "recassist.llm_backends"),
    ("RECASSIST_EMBEDDING_BACKEND", "bert", "e5, hash, minilm, openai, st", "recassist.embedders"),
])
def test_an_unknown_name_lists_the_known_ones_and_how_to_add_one(setting, value, known, group):
    with pytest.raises(ConfigError) as error:
        Settings.load(env={setting: value})
    text = str(error.value)
    assert f"{value!r}" in text and known in text and group in text


def test_an_installed_package_adds_a_backend_through_its_entry_point(tmp_path, outside_package):
    assert "outside" in registry.names()  # listed without being imported
    assert "recassist_outside" not in sys.modules
    s = settings(tmp_path, llm_backend="outside")
    llm = registry.create_llm(s)
    assert (llm.backend, llm.model, llm.settings) == ("outside", "outside-model", s)


def test_a_simulated_entry_point_is_enough(tmp_path, monkeypatch):
    """An entry point is all the registry needs: here one made up in the test, pointing at a module."""
    def create(settings):
        return FakeLLM(model="simulated", remote=False)

    module = type(sys)("recassist_simulated")
    module.create = create
    monkeypatch.setitem(sys.modules, "recassist_simulated", module)
    real = importlib.metadata.entry_points

    def entry_points(**select):
        if select.get("group") == registry.GROUP:
            return importlib.metadata.EntryPoints([importlib.metadata.EntryPoint(
                name="simulated", value="recassist_simulated:create", group=registry.GROUP)])
        return real(**select)

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    try:
        assert registry.create_llm(settings(tmp_path, llm_backend="simulated")).model == "simulated"
    finally:
        registry.REGISTRY.unregister("simulated")


def test_a_backend_missing_part_of_the_contract_is_named(tmp_path, outside_package):
    with pytest.raises(ConfigError, match=r"'incomplete'.*without backend, model, .*remote, one_call_at_a_time.*base\.py"):
        registry.create_llm(settings(tmp_path, llm_backend="incomplete"))


def test_a_broken_entry_point_names_the_package_and_how_to_fix_it(tmp_path, outside_package):
    (outside_package / "recassist_outside-0.1.dist-info" / "entry_points.txt").write_text(
        "[recassist.llm_backends]\nbroken = recassist_outside:nothing_here\n")
    importlib.invalidate_caches()
    try:
        with pytest.raises(ConfigError, match=r"'broken' \(package recassist-outside\).*nothing_here.*reinstall or fix"):
            registry.create_llm(settings(tmp_path, llm_backend="broken"))
    finally:
        registry.REGISTRY.unregister("broken")


def test_backends_registered_in_code_work_like_the_others(tmp_path):
    registry.register(registry.Backend("inhouse", lambda s: FakeLLM(model="in-house"), describe=lambda s: "in-house v2"))
    try:
        engine = Engine(settings(tmp_path, llm_backend="inhouse"))
        assert engine.info()["llm_model"] == "in-house v2"  # described without building it
        assert engine.llm.model == "in-house"
    finally:
        registry.REGISTRY.unregister("inhouse")


def test_the_cli_takes_a_plugin_backend_by_name(cli_env, capsys, monkeypatch, outside_package):
    from server.cli import main

    assert main(["info", "--json", "--llm-backend", "outside", "--load-llm"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["llm_backend"], info["llm_model"]) == ("outside", "outside-model")
    assert (info["embedding_backend"], info["embedding_model"], info["embedding_dim"]) == ("hash", "hashing-bow", 512)


# langchain: a reserved name, imported only when chosen --------------------------------------------

def test_langchain_is_reserved_and_has_its_model_setting(tmp_path):
    s = settings(tmp_path, llm_backend="langchain", langchain_model="openai:gpt-4o-mini")
    assert s.langchain_model == "openai:gpt-4o-mini"
    assert Settings.load(env={"RECASSIST_LANGCHAIN_MODEL": "ollama:qwen3"}).langchain_model == "ollama:qwen3"
    assert Engine(s).info()["llm_model"] == "openai:gpt-4o-mini"
    assert registry.backend("langchain").factory == "integrations.langchain.llm:create"  # a string until used


def test_langchain_without_its_module_is_a_clear_config_error(tmp_path, monkeypatch):
    # As in an install without the integrations package (its modules may be imported by earlier tests).
    for name in ("integrations", "integrations.langchain", "integrations.langchain.llm"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ConfigError, match=r"'langchain' lives in the module integrations\.langchain\.llm, which is not installed"):
        registry.create_llm(settings(tmp_path, llm_backend="langchain", langchain_model="openai:gpt-4o-mini"))


def test_a_backend_whose_module_needs_a_missing_package_says_what_to_install(tmp_path, monkeypatch):
    (tmp_path / "needs_missing.py").write_text("import langchain_not_installed_here\n\ndef create(settings):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry.register(registry.Backend("needy", "needs_missing:create"))
    try:
        with pytest.raises(ConfigError, match=r"needs the Python package 'langchain_not_installed_here'.*pip install langchain-not-installed-here"):
            registry.create_llm(settings(tmp_path, llm_backend="needy"))
    finally:
        registry.REGISTRY.unregister("needy")
        sys.modules.pop("needs_missing", None)


def test_langchain_when_the_integration_is_present(tmp_path):
    pytest.importorskip("integrations.langchain.llm", reason="integrations/langchain/llm.py is not in this tree yet")
    create = registry.REGISTRY.factory("langchain")
    assert callable(create) and create.__name__ == "create"


# Capabilities, not names -----------------------------------------------------------------------

@pytest.mark.parametrize("llm, redacted", [
    (FakeLLM(remote=True), True),  # prompts leave the machine
    (FakeLLM(remote=False), False),  # a local model sees them as they are
])
def test_remote_models_get_redacted_prompts_whatever_their_backend_is_called(tmp_path, monkeypatch, llm, redacted):
    import assistant.llm.factory as factory

    monkeypatch.setattr(factory, "create_llm", lambda settings: llm)
    engine = Engine(settings(tmp_path, llm_backend="fake"))
    assert isinstance(engine.llm, RedactingLLM) is redacted
    list(engine.llm.stream("write to ann@example.com", max_tokens=3))
    assert (llm.prompts[-1] == "write to [email]") is redacted


def test_outside_remote_backend_is_redacted_end_to_end(tmp_path, outside_package):
    engine = Engine(settings(tmp_path, llm_backend="outside"))
    list(engine.llm.stream([{"role": "user", "content": "call +44 20 7946 0958"}], max_tokens=3))
    assert engine.llm.inner.prompts[-1][0]["content"] == "call [phone]"


@pytest.mark.parametrize("remote, asked", [(False, True), (True, False)])
def test_only_models_on_this_machine_are_calibrated_at_start_up(make_engine, remote, asked):
    llm = FakeLLM(remote=remote)
    engine = make_engine(llm=llm, demo=False, rank_blend=0.5)
    engine.agent.warm_up()
    assert bool(llm.prompts) is asked


@pytest.mark.parametrize("one_call_at_a_time, second_turn_gets_the_model", [(True, False), (False, True)])
def test_turns_queue_only_for_a_model_that_runs_one_call_at_a_time(make_engine, one_call_at_a_time, second_turn_gets_the_model):
    llm = FakeLLM(one_call_at_a_time=one_call_at_a_time)
    engine = make_engine(llm=llm, demo=False, llm_timeout_s=0.2)
    got = {}

    def second_turn():
        with engine.agent._model() as second:
            got["second"] = second

    with engine.agent._model() as first:
        thread = threading.Thread(target=second_turn)
        thread.start()
        thread.join(5)
    assert first is llm
    assert (got["second"] is llm) is second_turn_gets_the_model


@pytest.mark.parametrize("values, embedded, has_llm", [
    ({}, True, True),
    ({"llm_model_path": "/models/qwen.gguf"}, False, True),
    ({"llm_backend": "openai"}, False, True),
    ({"llm_backend": "none"}, False, False),
    ({"llm_backend": "langchain"}, False, True),
])
def test_settings_read_backend_facts_from_the_registry(values, embedded, has_llm):
    s = Settings.load(env={}, **values)
    assert (s.uses_embedded_model, s.has_llm) == (embedded, has_llm)


def test_no_backend_name_is_tested_outside_the_registry():
    """The capability refactor stays done: nothing compares llm_backend or .backend to a name."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    pattern = re.compile(r"""(llm_backend|\.backend)\s*(==|!=|not in|in)\s*[("']""")
    offenders = [
        f"{path.relative_to(root)}:{n}"
        for folder in ("assistant", "retrieval", "prompts")
        for path in (root / folder).rglob("*.py")
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if pattern.search(line)
    ]
    assert offenders == []
