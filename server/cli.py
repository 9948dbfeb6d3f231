"""The `recassist` command line: ingest, recommend, chat, serve, eval, prompts, info."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path

from assistant import __version__
from assistant.demos import DEMOS
from core.errors import ConfigError, LLMError, RecassistError
from assistant.settings import Settings


def _settings(args) -> Settings:
    overrides = {}
    for name in ("data_dir", "llm_backend", "embedding_backend", "prompt_variant"):
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    return Settings.load(config_file=getattr(args, "config", None), **overrides)


def _engine(args):
    from assistant.engine import Engine

    return Engine(_settings(args), demo=getattr(args, "demo", None))


def _ready_model(engine) -> None:
    """Before the first answer: the prompt files the loaded model will use are valid, and the
    ranking's one-off calibration call is made (a local model), so the first turn is not slower."""
    if engine.llm is None:
        return  # retrieval order and evidence reasons: no prompts
    from prompts import Prompts

    s = engine.settings
    Prompts.for_llm(engine.llm, s.prompt_variant, s.prompt_variants_dir).check()
    engine.agent.warm_up()


def _mapping(pairs: list[str] | None, constants: list[str] | None = None) -> dict[str, str] | None:
    """--map FIELD=COLUMN pairs, plus --set FIELD=VALUE constants (the same as --map FIELD==VALUE)."""
    from retrieval.ingest import parse_mapping

    mapping = parse_mapping(pairs or [], "--map")
    mapping.update({field: "=" + value for field, value in parse_mapping(constants or [], "--set").items()})
    return mapping or None


def cmd_ingest_catalog(args) -> int:
    from retrieval.ingest import format_report

    engine = _engine(args)
    report = engine.ingest_catalog_file(args.file, mapping=_mapping(args.map, args.set), progress=not args.quiet)
    print(format_report(report))
    return report.exit_code


def cmd_ingest_events(args) -> int:
    from retrieval.ingest import format_report

    engine = _engine(args)
    report = engine.ingest_events_file(args.file, mapping=_mapping(args.map, args.set), progress=not args.quiet)
    print(format_report(report))
    return report.exit_code


def cmd_fit(args) -> int:
    engine = _engine(args)
    if not args.quiet:
        print(f"Fitting the global signals from {engine.store.event_count():,} events...", file=sys.stderr, flush=True)
    m = engine.fit()
    t = m.get("timings", {})
    print(f"fitted {m['events']:,} events of {m['users']:,} users over {m['items']:,} items in {t.get('total_s', 0):.1f} s "
          f"(read {t.get('read_s', 0):.1f} s); {m.get('asked_rows', 0):,} moments of people asking in words; "
          + (f"content vectors {c['vectors']:,} and {c['searched'] + c['lent']:,} searches of the most popular items "
             f"({c['searched']:,} new) in {c['seconds']:.1f} s; " if (c := m.get("content")) else "")
          + f"published {m['version']} in {engine.signals_dir}")
    return 0


BULK_BATCH = 8  # hooks per model call when no turn waits (serve writes two, to give way at once)


def cmd_write_ahead(args) -> int:
    """Have the local model write the reason hooks of the most popular items now (what `serve`
    does in its idle time), so that every worker starts with them; safe to stop and re-run."""
    from assistant.prewrite import HookWriter

    engine = _engine(args)
    try:
        if engine.agent.write_ahead_setup() is None:
            raise ConfigError(
                f"the configured model ({engine.settings.llm_backend}) has no reasons to write ahead: that takes a local "
                "model whose reason template depends on the item alone (the default embedded model, RECASSIST_LLM_BACKEND="
                "llama, completion-style prompts)" + (f"; it failed to load: {engine.llm_error}" if engine.llm_error else ""))
        if engine.store.item_count() == 0:
            raise ConfigError(f"the catalog in {engine.store.url} is empty: ingest it first (recassist ingest-catalog FILE)")
        items = min(args.items or engine.settings.llm_write_ahead or 1000, engine.store.item_count())
        writer = HookWriter(engine.agent, lambda: engine.retriever, items=items, idle_s=0.0, batch=BULK_BATCH)
        pending = writer.pending()
        print(f"Writing the reason hooks of {len(pending):,} of the {items:,} most popular items ahead "
              f"(the others are kept already or have no description to sum up)...", file=sys.stderr, flush=True)
        started, done, said = time.monotonic(), 0, time.monotonic()
        while done < len(pending):
            wrote = writer.write_some(n=writer.batch)
            if wrote == 0:
                raise LLMError("the model wrote nothing (busy or failing); run it again: what was written is kept")
            done += wrote
            if time.monotonic() - said >= 5 and not args.quiet:
                said = time.monotonic()
                print(f"  {done:,}/{len(pending):,} ({(said - started) / done:.2f} s each)", file=sys.stderr, flush=True)
        spent = time.monotonic() - started
        kept = engine.agent.remembered_stats()["stored"]
        print(f"wrote {done:,} hooks in {spent:.1f} s" + (f" ({spent / done:.2f} s each)" if done else "")
              + f"; {kept:,} kept in the store {engine.store.url}")
        return 0
    finally:
        engine.close()


def cmd_upgrade_store(args) -> int:
    from retrieval.migrations import upgrade_events
    from retrieval.store import Store

    settings = _settings(args)
    logging.getLogger("recassist.store").setLevel(logging.ERROR)  # not the warning that says to run this
    store = Store.open(settings.resolved_database_url)
    try:
        print(f"Upgrading the events table of {store.url} (about 5 s per million events on SQLite)...", file=sys.stderr, flush=True)
        done = upgrade_events(store.database)
    finally:
        store.close()
    if done["upgraded"]:
        print(f"upgraded {done['events']:,} events to the keyed-by-time layout in {done['seconds']:.1f} s")
    else:
        print(f"nothing to do: {store.url} already has the current layout ({done['events']:,} events)")
    return 0


def cmd_ingest_dialogs(args) -> int:
    engine = _engine(args)
    report = engine.ingest_dialogs_file(args.file, user_prefix=args.user_prefix)
    print(f"{args.file}: {report['dialogs']} dialogs -> {report['events']} events ({report['stored']} new), "
          f"by type {report['by_type']}; {report['linked_by_title']} linked by title, "
          f"{report['works_not_in_catalog']} named works not in the catalog")
    for line in report["rejected"][:20]:
        print("  rejected " + line)
    if len(report["rejected"]) > 20:
        print(f"  ... and {len(report['rejected']) - 20} more rejected lines")
    return 1 if report["rejected"] and not report["dialogs"] else (2 if report["rejected"] else 0)


def cmd_recommend(args) -> int:
    engine = _engine(args)
    _ready_model(engine)
    filters = {}
    if args.category:
        filters["categories"] = args.category
    if args.exclude_category:
        filters["exclude_categories"] = args.exclude_category
    if args.year_min is not None:
        filters["year_min"] = args.year_min
    if args.year_max is not None:
        filters["year_max"] = args.year_max
    result = engine.agent.recommend(args.user, query=args.query or "", k=args.k, filters=filters)
    if args.json:
        print(json.dumps(result, ensure_ascii=False, indent=2))
        return 0
    for note in result["notices"]:
        print(f"note: {note}")
    for i, item in enumerate(result["items"], 1):
        meta = ", ".join(str(x) for x in (item.get("creator"), item.get("year")) if x is not None)
        print(f"{i}. {item['title']} ({meta})  score {item['score']:.3f}")
        print(f"   {item['reason']}")
    if result["summary"]:
        print(f"\n{result['summary']}")
    return 0


def cmd_chat(args) -> int:
    from assistant.events import CardsEvent, DoneEvent, MessageEvent, NoticeEvent, ReasonDelta, ReasonEvent

    engine = _engine(args)
    _ready_model(engine)
    session = args.session
    print(f"recassist chat as {args.user!r}. Empty line or Ctrl-D to quit.", file=sys.stderr)
    tty = sys.stdout.isatty()
    while True:
        try:
            message = input("you> ")
        except EOFError:
            break
        if not message.strip():
            break
        streaming = None
        names: dict[str, str] = {}  # item id -> "2. Title", for the reasons under the list
        for event in engine.agent.respond(args.user, message, session_id=session):
            if isinstance(event, CardsEvent) and event.stage == "ranked":
                print()
                for i, card in enumerate(event.cards, 1):
                    meta = ", ".join(str(x) for x in (card.creator, card.year) if x is not None)
                    print(f"  {i}. {card.title} ({meta})")
                    names[card.item_id] = f"{i}. {card.title}"
                print()
            elif isinstance(event, ReasonDelta):
                if streaming != event.item_id:
                    print(f"  {names.get(event.item_id, event.item_id)}: ", end="")
                    streaming = event.item_id
                print(event.text, end="", flush=True)
            elif isinstance(event, ReasonEvent):
                label = names.get(event.item_id, event.item_id)
                if streaming == event.item_id and event.source == "llm":
                    print()
                elif streaming == event.item_id and tty:
                    print(f"\r\033[K  {label}: {event.text}")  # the checked reason replaces the streamed one
                else:
                    if streaming == event.item_id:
                        print(" [not supported by the evidence; replaced]")
                    print(f"  {label}: {event.text}")
                streaming = None
            elif isinstance(event, MessageEvent):
                print(f"\nassistant> {event.text}")
            elif isinstance(event, NoticeEvent):
                if streaming is not None:
                    print()  # a notice never lands in the middle of a streamed reason
                    streaming = None
                print(f"note: {event.text}")
            elif isinstance(event, DoneEvent):
                session = event.session_id
                if args.verbose:
                    print(f"[{event.intent}; {event.timings_ms}]")
    print(f"session {session}", file=sys.stderr)
    return 0


def cmd_serve(args) -> int:
    from server.app import serve

    settings = _settings(args)
    settings.host, settings.port = args.host or settings.host, args.port or settings.port
    if args.workers < 1:
        raise RecassistError(f"--workers must be 1 or more, not {args.workers}")
    if args.workers > 1 and settings.chroma_mode != "http":
        raise RecassistError(
            "--workers N needs the vector store as a server (RECASSIST_CHROMA_MODE=http with `chroma run`): "
            "several processes cannot share an on-disk Chroma; or serve with one worker"
        )
    from assistant.engine import Engine

    engine = Engine(settings, demo=args.demo)
    if settings.has_llm:
        print(f"Loading the language model ({engine.info()['llm_model']})...", file=sys.stderr)
        engine.llm  # load before serving so the first chat is not slow
        if engine.llm_error:
            print(f"warning: {engine.llm_error}\nAnswers use retrieval order and evidence-based reasons.", file=sys.stderr)
        _ready_model(engine)  # before the demo: a broken prompt file fails in seconds, not after embedding
    if args.demo:
        if engine.store.item_count() == 0 or args.reload_demo:
            print(f"Loading the {engine.demo.name!r} demo catalog and users into {engine.data_dir} "
                  f"({engine.demo.loading})...", file=sys.stderr)
        engine.load_demo(progress=True)
    print(engine.warm_up(), file=sys.stderr)  # before listening: the first turn is not slower
    # uvicorn shuts down on SIGTERM, then raises it again for the handler it found: make that handler
    # an exit, so the `finally` below runs (the default one would end the process on the spot).
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        if args.workers > 1:
            from server.app import serve_workers

            serve_workers(engine, args.workers, _setting_env(args))
        else:
            serve(engine, settings.host, settings.port)
    finally:  # stopped (Ctrl+C, SIGTERM): the model process ends and its socket's folder goes
        engine.close()
    return 0


def _setting_env(args) -> dict[str, str]:
    """The command line's settings as RECASSIST_* variables, for worker processes that read the environment."""
    env = {"RECASSIST_CONFIG": str(args.config)} if getattr(args, "config", None) else {}
    for name in ("data_dir", "llm_backend", "embedding_backend"):
        value = getattr(args, name, None)
        if value is not None:
            env["RECASSIST_" + name.upper()] = str(value)
    return env


def cmd_eval(args) -> int:
    from evaluation.cli import main as eval_main

    return eval_main(args.eval_args)


def cmd_prompts(args) -> int:
    from prompts import check_templates, list_templates

    settings = _settings(args)
    if args.action == "list":
        for name in list_templates():
            print(name)
        return 0
    problems = check_templates([settings.prompt_variants_dir])
    if problems:
        for problem in problems:
            print(problem)
        return 1
    print("all prompt templates are valid")
    return 0


def cmd_check_model(args) -> int:
    """Load the local model in a child process and evaluate a few tokens (setup runs this)."""
    from assistant.llm.llama import ensure_embedded_model
    from assistant.llm.process import check_model

    settings = _settings(args)
    from assistant.llm.registry import backend

    if not backend(settings.llm_backend).local_model:
        print(f"nothing to check: the LLM backend is {settings.llm_backend!r}, not a local model")
        return 0
    try:
        path = settings.llm_model_path or ensure_embedded_model(settings.models_dir)
        info = check_model(path, n_ctx=settings.llm_context, threads=settings.llm_threads)
    except LLMError as exc:
        print(f"error: the local model does not run here: {exc}", file=sys.stderr)
        return 1
    not_isa = {"LLAMAFILE", "OPENMP", "REPACK", "KLEIDIAI"}  # build options llama.cpp lists beside the instruction sets
    features = ", ".join(f for f in info.get("cpu_features", []) if f.isupper() and f not in not_isa) or "?"
    print(f"the local model runs: {info['model']} loaded and evaluated a few tokens in {info['self_test_ms']:.0f} ms "
          f"in a child process; llama.cpp built for: {features}")
    return 0


def cmd_info(args) -> int:
    engine = _engine(args)
    info = engine.info(load_llm=args.load_llm)
    if args.json:
        print(json.dumps(info, indent=2, ensure_ascii=False))
    else:
        width = max(map(len, info))
        for key, value in info.items():
            if value is not None:
                print(f"{key:<{width}}  {value}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recassist",
        description="A conversational recommendation assistant. Settings come from RECASSIST_* "
        "environment variables and an optional TOML file (--config or RECASSIST_CONFIG).",
    )
    parser.add_argument("--version", action="version", version=f"recassist {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", help="TOML settings file (also RECASSIST_CONFIG)")
    common.add_argument("--data-dir", type=Path, help="where the database, vectors and model live (RECASSIST_DATA_DIR, default ~/.recassist)")
    # No argparse choices: installed packages add backends (checked by Settings, which lists the known ones).
    common.add_argument("--llm-backend", help="language model backend: llama, openai, langchain, fake, none, or a "
                        "plug-in's (RECASSIST_LLM_BACKEND)")
    common.add_argument("--embedding-backend",
                        help="embedding model: minilm (English), e5 (multilingual, Chinese), st (a sentence-transformers "
                        "folder, RECASSIST_EMBEDDING_MODEL), openai (a /v1/embeddings server), hash (tests), or a "
                        "plug-in's (RECASSIST_EMBEDDING_BACKEND)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name, func, help_text):
        p = sub.add_parser(name, parents=[common], help=help_text, description=help_text)
        p.set_defaults(func=func)
        return p

    mapping_help = "our field = your column, e.g. --map id=movieId --map text=overview (repeatable)"
    p = add("ingest-catalog", cmd_ingest_catalog, "Load or update catalog items from a CSV or JSONL file.")
    p.add_argument("file", type=Path, help="CSV (with a header) or JSONL file of items; required fields id and title")
    p.add_argument("--map", action="append", metavar="FIELD=COLUMN", help=mapping_help)
    p.add_argument("--set", action="append", metavar="FIELD=VALUE", help="a constant for a field missing from the file")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = add("ingest-events", cmd_ingest_events, "Load user behaviour (views, likes, ratings, ...) from a CSV or JSONL file.")
    p.add_argument("file", type=Path, help="CSV or JSONL of events: user_id, item_id, type, timestamp, value, text")
    p.add_argument("--map", action="append", metavar="FIELD=COLUMN", help=mapping_help)
    p.add_argument("--set", action="append", metavar="FIELD=VALUE", help="a constant, e.g. --set type=rate for a ratings file")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = add("ingest-dialogs", cmd_ingest_dialogs, "Load past conversations (ReDial's JSONL format) as behaviour: the works each one named, and what the seeker asked in words.")
    p.add_argument("file", type=Path, help="one dialog a line: conversationId, messages (@<id> names a work), movieMentions, initiatorQuestions")
    p.add_argument("--user-prefix", default="dialog:", help="user id of each dialog: PREFIX + conversationId (default dialog:)")

    p = add("fit", cmd_fit, "Fit popularity, trending, sequential, collaborative and asked-in-words signals from every event and "
            "publish them for the API workers (serve also does this on its own schedule).")
    p.add_argument("--quiet", action="store_true", help="no start line")

    p = add("write-ahead", cmd_write_ahead, "Have the local model write the reason hooks of the most popular items now "
            "(serve does this in its idle time), so that every worker starts with them. Safe to stop and re-run.")
    p.add_argument("--items", type=int, help="how many of the most popular items (default: llm_write_ahead, 1000)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")

    add("upgrade-store", cmd_upgrade_store, "Rebuild a store made by an older recassist in the current events layout "
        "(2-5x faster bulk ingest; small stores are upgraded on their own when opened). One transaction: safe to stop and re-run. "
        "Stop the servers that use the store first (a server started before it must be restarted).")

    p = add("recommend", cmd_recommend, "Recommend items for a user once (no conversation).")
    p.add_argument("--user", required=True, help="user id")
    p.add_argument("--query", help="what the user asks for, in words")
    p.add_argument("--k", type=int, default=None, help="how many items (default: top_k setting, 5)")
    p.add_argument("--category", action="append", help="only these categories (repeatable)")
    p.add_argument("--exclude-category", action="append", help="never these categories (repeatable)")
    p.add_argument("--year-min", type=int)
    p.add_argument("--year-max", type=int)
    p.add_argument("--json", action="store_true", help="print JSON with id, title, score, reason and evidence per item")

    p = add("chat", cmd_chat, "Chat with the assistant in the terminal, streamed.")
    p.add_argument("--user", required=True, help="user id")
    p.add_argument("--session", help="resume this session id")
    p.add_argument("--verbose", action="store_true", help="show intent and timings per turn")

    p = add("serve", cmd_serve, "Serve the Gradio UI at / and the HTTP API under /v1.")
    p.add_argument("--host", help="bind address (default 127.0.0.1; API keys are required off loopback)")
    p.add_argument("--port", type=int, help="port (default 7860)")
    p.add_argument("--demo", nargs="?", const="en", choices=sorted(DEMOS),
                   help="load a shipped demo catalog and its users first (idempotent): en, the default, 302 English "
                   "books in the data dir; zh, 211 Chinese works in DATA_DIR/demo-zh, embedded with e5 (multilingual)")
    p.add_argument("--reload-demo", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--workers", type=int, default=1,
                   help="API worker processes sharing one model process (default 1; more needs RECASSIST_CHROMA_MODE=http)")

    p = add("eval", cmd_eval, "Offline evaluation: metrics.json, a Markdown report and plots (`recassist eval --help`).")
    p.add_argument("eval_args", nargs=argparse.REMAINDER, help="options for the evaluation harness")

    p = add("prompts", cmd_prompts, "Check or list the prompt templates and saved variants.")
    p.add_argument("action", choices=["check", "list"], help="check: validate every template; list: names")
    p.add_argument("--prompt-variant", help=argparse.SUPPRESS)

    add("check-model", cmd_check_model,
        "Load the local model in a child process and evaluate a few tokens: does it run on this CPU?")

    p = add("info", cmd_info, "Show version, data directory, catalog size, users, LLM and embedding model.")
    p.add_argument("--json", action="store_true")
    p.add_argument("--load-llm", action="store_true", help="load the model to confirm it works")
    p.add_argument("--demo", choices=sorted(DEMOS), help="the store of this demo (zh lives in DATA_DIR/demo-zh)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["eval"]:
        # The evaluation harness owns its options (and its --help).
        from evaluation.cli import main as eval_main

        return eval_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except RecassistError as exc:
        print(f"recassist: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`recassist recommend --json | head`): stop quietly, like other tools.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
