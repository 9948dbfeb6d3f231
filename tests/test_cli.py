"""The command line as a user types it (in-process, on a temp data dir, hashing embeddings, no LLM)."""

import json

import pytest

from server.cli import main


def test_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for name in ("ingest-catalog", "ingest-events", "recommend", "chat", "serve", "eval", "prompts", "info"):
        assert name in out


def test_ingest_recommend_json_and_info(cli_env, capsys):
    from assistant.engine import Engine
    from assistant.settings import Settings

    books, events = Engine(Settings.load(env={})).demo_paths()
    assert main(["ingest-catalog", str(books), "--quiet"]) == 0
    assert main(["ingest-events", str(events), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["recommend", "--user", "dara", "--query", "a detective story", "--k", "3", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert len(result["items"]) == 3
    assert {"item_id", "title", "score", "reason", "evidence"} <= set(result["items"][0])
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["catalog_items"] == 302 and info["users"] == 6 and info["llm_backend"] == "none"


@pytest.mark.parametrize(
    "env, shown",
    [
        ({"RECASSIST_LLM_BACKEND": "llama"}, "0 (auto: the evaluation's choice for the embedded model"),
        ({"RECASSIST_LLM_BACKEND": "openai"}, "0.3 (auto: unmeasured for this model; `recassist eval --backend openai`"),
        ({"RECASSIST_RANK_BLEND": "0.4"}, "0.4 (set)"),
    ],
)
def test_info_says_which_ranking_weight_is_in_use_and_why(cli_env, capsys, monkeypatch, env, shown):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert main(["info", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["rank_blend"].startswith(shown)


@pytest.mark.parametrize(
    "env, shown",
    [
        ({"RECASSIST_LLM_BACKEND": "llama"}, "off (auto: the embedded model's summaries failed the check"),
        ({"RECASSIST_LLM_BACKEND": "openai"}, "on (auto)"),
        ({"RECASSIST_LLM_BACKEND": "llama", "RECASSIST_LLM_SUMMARY": "true"}, "on (set)"),
    ],
)
def test_info_says_whether_the_llm_writes_the_summary(cli_env, capsys, monkeypatch, env, shown):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert main(["info", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["llm_summary"].startswith(shown)


def test_ingest_with_rejects_exits_2_and_names_the_line(cli_env, capsys):
    path = cli_env / "items.csv"
    path.write_text("sku,name\n1,Good item\n2,\n3,Another\n", encoding="utf-8")
    assert main(["ingest-catalog", str(path), "--map", "id=sku", "--map", "title=name", "--quiet"]) == 2
    out = capsys.readouterr().out
    assert "items.csv:3" in out and "inserted 2" in out


def test_chat_streams_in_the_terminal(cli_env, capsys, monkeypatch):
    from assistant.engine import Engine
    from assistant.settings import Settings

    Engine(Settings.load()).load_demo(progress=False)
    answers = iter(["recommend me something", "no horror", ""])
    monkeypatch.setattr("builtins.input", lambda prompt="": next(answers))
    assert main(["chat", "--user", "eli"]) == 0
    out = capsys.readouterr().out
    lists = [line for line in out.splitlines() if line.startswith("  1. ") and line.endswith(")")]
    reasons = [line for line in out.splitlines() if line.startswith("  1. ") and ": " in line and not line.endswith(")")]
    assert len(lists) == 2 and len(reasons) == 2 and out.count("assistant>") == 2
    # Each reason is labelled with the card it explains.
    assert reasons[0].startswith(lists[0].rsplit(" (", 1)[0] + ": ")


def test_chat_notice_never_lands_inside_a_streamed_reason(cli_env, capsys, monkeypatch):
    from assistant.events import Card, CardsEvent, DoneEvent, NoticeEvent, ReasonDelta, ReasonEvent

    card = Card(item_id="x1", title="Some Title", score=1.0, year=1900, creator="A. Writer", categories=[], reason="", reason_source="evidence", evidence={})
    turn = [CardsEvent([card], "ranked"), ReasonDelta("x1", "Because you"), NoticeEvent("The model was slow.", "info"),
            ReasonEvent("x1", "From the evidence.", "evidence"), DoneEvent("s1", "recommend", {}, {}, {})]

    class Agent:
        def respond(self, *args, **kwargs):
            return iter(turn)

    class FakeEngine:
        agent = Agent()

    monkeypatch.setattr("server.cli._engine", lambda args: FakeEngine())
    monkeypatch.setattr("server.cli._ready_model", lambda engine: None)
    answers = iter(["hello", ""])
    monkeypatch.setattr("builtins.input", lambda prompt="": next(answers))
    assert main(["chat", "--user", "eli"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "note: The model was slow." in lines
    assert "  1. Some Title: From the evidence." in lines


def test_bad_config_is_a_clear_error(cli_env, capsys, monkeypatch):
    monkeypatch.setenv("RECASSIST_TOP_K", "lots")
    assert main(["info"]) == 1
    assert "top_k" in capsys.readouterr().err


def test_a_closed_pipe_ends_quietly(cli_env):
    """`recassist recommend --json | head -c 0`: no BrokenPipeError traceback when the reader leaves."""
    import os
    import subprocess
    import sys

    from assistant.engine import Engine
    from assistant.settings import Settings

    books, _ = Engine(Settings.load(env={})).demo_paths()
    assert main(["ingest-catalog", str(books), "--quiet"]) == 0
    command = [sys.executable, "-m", "server.cli", "recommend", "--user", "dara", "--k", "20", "--json"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ))
    proc.stdout.close()  # the reader leaves before the answer is written
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0, stderr
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr
