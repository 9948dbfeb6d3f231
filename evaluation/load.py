"""Load on `recassist serve` (a script and a check): N concurrent chat sessions and event posts.
(Over 400 lines on purpose: a benchmark reads top to bottom, the server it starts, the sessions,
the checks and the report it writes, and none of its pieces is used elsewhere.)

    python -m evaluation.load --sessions 1 8 32 --turns 3 --out evaluation/reports/load
    python -m evaluation.load --llm none --sessions 1 8 32 --turns 3      # server overhead only
    python -m evaluation.load --url http://127.0.0.1:7860 --data-dir ~/.recassist
    python -m evaluation.load --sessions 8 --env RECASSIST_LLM_TIMEOUT_S=3   # any setting of the server

Starts its own `recassist serve --demo` on a free loopback port with a fresh data dir (the real
embedded model and MiniLM by default, what users run), or drives an already running loopback
server. Each session alternates a chat turn (asks, refinements, feedback in words, several
languages, emoji; half of them streamed as SSE) with a batch of events about what it was shown.
Per level it reports throughput, chat/event latency, time to the first SSE event, the server's
peak RSS, and whether every event posted is stored and every reply well formed. Exits 1 if an
event was lost, a reply was empty or malformed, or a request failed: it doubles as a check.

Bounded: `--turns` per session and `--max-seconds` for the whole run (sessions stop starting
turns when it passes; a turn in flight ends within `--request-timeout`).
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from evaluation.metrics import percentile
from evaluation.servers import peak_rss_mib, reset_peak_rss, server_process

ASKS = [
    "a witty romance",
    "something like Dracula 🧛",
    "推荐一本轻松的小说",
    "a sea voyage adventure, nothing too long",
    "hello 👋",
    "books by Jane Austen",
    "una novela de misterio, por favor",
    "science fiction written before 1950",
]
FOLLOW_UPS = [
    "more like the first one",
    "not that author, something older",
    "I've seen the second one",
    "why the first one?",
    "tell me about the third one",
    "I loved the first one ❤️",
    "换一批，不要太长的",
    "shorter ones please 🙏",
]
EVENT_KINDS = [("view", None), ("click", None), ("rate", 4)]


def message_for(session: int, turn: int) -> str:
    """Concurrent sessions say different things: each starts at its own place in the lists."""
    if turn == 0:
        return ASKS[session % len(ASKS)]
    return FOLLOW_UPS[(session + turn - 1) % len(FOLLOW_UPS)]


# --- checking replies --------------------------------------------------------------------------


@dataclass
class Reply:
    """What one chat answer said, or why it is not an answer (`problem`)."""

    problem: str | None = None
    items: list[str] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    model_reasons: int = 0  # items whose reason the LLM wrote (the rest come from the evidence)
    stages: dict = field(default_factory=dict)  # the server's milliseconds per stage of the turn (timings_ms)


def check_chat_json(body) -> Reply:
    """A /v1/chat JSON answer must list items (each with a title and a reason) or say something."""
    if not isinstance(body, dict) or not isinstance(body.get("items"), list) or not isinstance(body.get("summary"), str):
        return Reply("not a chat response (needs items: list and summary: str)")
    reply = _check_answer(body["items"], body["summary"], list(body.get("notices") or []))
    reply.stages = dict(body.get("timings") or {})
    return reply


def check_chat_sse(lines: list[str]) -> Reply:
    """An SSE chat answer: every data line is JSON of its event's type, no error event, ends with done."""
    events: list[dict] = []
    name = None
    for line in lines:
        if line.startswith("event: "):
            name = line[len("event: ") :]
        elif line.startswith("data: "):
            try:
                data = json.loads(line[len("data: ") :])
            except json.JSONDecodeError:
                return Reply(f"event {name!r} carries data that is not JSON")
            if name == "error":
                return Reply(f"error event: {data.get('error', data)}")
            if not isinstance(data, dict) or data.get("type") != name:
                return Reply(f"event {name!r} carries data of type {data.get('type') if isinstance(data, dict) else data!r}")
            events.append(data)
    if not events or events[-1]["type"] != "done":
        return Reply(f"the stream ended without a done event (after {len(events)} events)")
    cards = [e for e in events if e["type"] == "cards"]
    items = cards[-1].get("cards", []) if cards else []
    reasons = {e.get("item_id"): e for e in events if e["type"] == "reason"}
    items = [
        {**card, "reason": reasons[card["item_id"]].get("text", ""), "reason_source": reasons[card["item_id"]].get("source")}
        if isinstance(card, dict) and card.get("item_id") in reasons else card
        for card in items
    ]
    text = "\n".join(e.get("text", "") for e in events if e["type"] == "message")
    reply = _check_answer(items, text, [e.get("text", "") for e in events if e["type"] == "notice"])
    reply.stages = dict(events[-1].get("timings_ms") or {})
    return reply


def _check_answer(items: list, text: str, notices: list[str]) -> Reply:
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not item.get("item_id") or not item.get("title"):
            return Reply(f"item {i} lacks an item_id or a title")
        if not str(item.get("reason", "")).strip():
            return Reply(f"item {item['item_id']} has no reason")
    if not items and not text.strip():
        return Reply("empty answer: no items and no text")
    model = sum(1 for item in items if item.get("reason_source") == "llm")
    return Reply(None, [item["item_id"] for item in items], notices, model)


# --- one session -------------------------------------------------------------------------------


@dataclass
class Sample:
    """One request: what it was, how long it took, and what went wrong, if anything."""

    kind: str  # "chat" or "events"
    seconds: float
    status: int | None = None  # None: no HTTP answer (timeout, connection error)
    problem: str | None = None
    first_event_s: float | None = None  # streamed chats: time to the first SSE event
    notices: list[str] = field(default_factory=list)
    model_reasons: int = 0
    listed: int = 0  # items the reply listed (a "why the first one?" answer lists none: it has no reasons to write)
    message: str = ""  # what the chat turn said
    stages: dict = field(default_factory=dict)  # the server's milliseconds per stage (Reply.stages)
    posted: int = 0  # events in the request
    acknowledged: int = 0  # events the server said were new


def chat_turn(client: httpx.Client, user: str, session_id: str, message: str, stream: bool) -> tuple[Sample, Reply]:
    body = {"user_id": user, "message": message, "session_id": session_id, "stream": stream}
    start = time.perf_counter()
    first = None
    try:
        if stream:
            lines = []
            with client.stream("POST", "/v1/chat", json=body) as r:
                if r.status_code != 200:
                    r.read()
                    return _failed("chat", start, r), Reply()
                for line in r.iter_lines():
                    if first is None and line.startswith("event: "):
                        first = time.perf_counter() - start
                    lines.append(line)
            reply = check_chat_sse(lines)
        else:
            r = client.post("/v1/chat", json=body)
            if r.status_code != 200:
                return _failed("chat", start, r), Reply()
            try:
                reply = check_chat_json(r.json())
            except json.JSONDecodeError:
                reply = Reply("the body is not JSON")
    except httpx.HTTPError as exc:
        return Sample("chat", time.perf_counter() - start, None, f"{type(exc).__name__}: {exc}"), Reply()
    seconds = time.perf_counter() - start
    return Sample("chat", seconds, 200, reply.problem, first, reply.notices, reply.model_reasons, len(reply.items),
                  message, reply.stages), reply


def post_events(client: httpx.Client, rows: list[dict]) -> Sample:
    """One object when there is one event, else a list: the API takes both."""
    start = time.perf_counter()
    try:
        r = client.post("/v1/events", json=rows[0] if len(rows) == 1 else rows)
    except httpx.HTTPError as exc:
        return Sample("events", time.perf_counter() - start, None, f"{type(exc).__name__}: {exc}", posted=len(rows))
    if r.status_code != 200:
        return _failed("events", start, r, posted=len(rows))
    body = r.json()
    problem = None
    if body.get("rejected") or body.get("accepted") != len(rows):
        problem = f"accepted {body.get('accepted')} of {len(rows)}: {body.get('rejected')}"
    return Sample("events", time.perf_counter() - start, 200, problem, posted=len(rows), acknowledged=int(body.get("new", 0)))


def _failed(kind: str, start: float, r: httpx.Response, posted: int = 0) -> Sample:
    return Sample(kind, time.perf_counter() - start, r.status_code, f"HTTP {r.status_code}: {r.text[:200]}", posted=posted)


def event_batch(user: str, items: list[str], marker: str, turn: int) -> list[dict]:
    """Events about what the session was shown; each text is unique, so stored ones can be counted."""
    if not items:
        return [{"user_id": user, "type": "search", "text": f"{marker}:{turn}:0"}]
    size = 1 if turn % 2 else len(EVENT_KINDS)
    rows = []
    for j, (kind, value) in enumerate(EVENT_KINDS[:size]):
        row = {"user_id": user, "type": kind, "item_id": items[j % len(items)], "text": f"{marker}:{turn}:{j}"}
        if value is not None:
            row["value"] = value
        rows.append(row)
    return rows


def run_session(
    samples: list[Sample], base_url: str, run: str, level: int, session: int, turns: int, deadline: float, timeout_s: float
) -> None:
    """Chat, then post events about the answer, `turns` times (or until the deadline); appends to `samples`."""
    user = f"load-{run}-{level}-{session}"
    session_id = f"s-{uuid.uuid4().hex[:12]}"
    marker = f"load:{run}:{level}:{session}"
    shown: list[str] = []
    with httpx.Client(base_url=base_url, timeout=timeout_s) as client:
        for turn in range(turns):
            if time.monotonic() > deadline:
                break
            sample, reply = chat_turn(client, user, session_id, message_for(session, turn), stream=session % 2 == 0)
            samples.append(sample)
            shown = reply.items or shown
            samples.append(post_events(client, event_batch(user, shown, marker, turn)))


# --- one level and a whole run -----------------------------------------------------------------


def summarize(level: int, turns: int, samples: list[Sample], wall_s: float) -> dict:
    """The figures of one level from its samples (stored events and memory are added by the caller)."""
    chats = [s for s in samples if s.kind == "chat"]
    posts = [s for s in samples if s.kind == "events"]
    firsts = [s.first_event_s for s in chats if s.first_event_s is not None]
    problems = Counter((s.problem or "").split(":")[0] for s in samples if s.problem)

    def ms(values: list[float], q: float):
        return round(percentile(values, q) * 1000, 1) if values else None

    chat_s = [s.seconds for s in chats]
    post_s = [s.seconds for s in posts]
    listing = sum(1 for s in chats if s.listed)
    with_model = sum(1 for s in chats if s.model_reasons)
    return {
        "sessions": level,
        "turns_planned": level * turns,
        "turns_done": len(chats),
        "requests": len(samples),
        "errors": sum(1 for s in samples if s.status != 200),
        "server_errors": sum(1 for s in samples if s.status is not None and s.status >= 500),
        "malformed": sum(1 for s in chats if s.status == 200 and s.problem),
        "rejected_events": sum(1 for s in posts if s.status == 200 and s.problem),
        "problems": dict(problems.most_common(5)),
        "examples": [s.problem for s in samples if s.problem][:5],
        "wall_s": round(wall_s, 2),
        "throughput_rps": round(len(samples) / wall_s, 2) if wall_s > 0 else None,
        "chat_p50_ms": ms(chat_s, 50),
        "chat_p95_ms": ms(chat_s, 95),
        "chat_max_ms": ms(chat_s, 100),
        "first_event_p50_ms": ms(firsts, 50),
        "first_event_p95_ms": ms(firsts, 95),
        "events_p50_ms": ms(post_s, 50),
        "events_p95_ms": ms(post_s, 95),
        "replies_with_notice": sum(1 for s in chats if s.notices),
        "replies_listing_items": listing,
        "replies_with_model_reasons": with_model,
        # Of the replies that list items (answers such as "why the first one?" list none).
        "model_reasons_share": round(with_model / listing, 3) if listing else None,
        "notices": dict(Counter(n for s in chats for n in s.notices).most_common(5)),
        # Which messages' lists had no model-written reason: a pattern (one language) is a finding.
        "listed_without_model_reasons": dict(Counter(s.message for s in chats if s.listed and not s.model_reasons).most_common(8)),
        "events_posted": sum(s.posted for s in posts),
        "events_acknowledged": sum(s.acknowledged for s in posts),
        # Where the slowest turns' time went, as the server counted it (the rest is queueing and HTTP).
        "slowest": [{"ms": round(s.seconds * 1000), "message": s.message, "stages": s.stages}
                    for s in sorted(chats, key=lambda s: -s.seconds)[:3] if s.stages],
    }


def run_level(base_url: str, level: int, turns: int, deadline: float, *, run: str, timeout_s: float = 300.0) -> dict:
    """N concurrent sessions, each `turns` chat turns and event posts; the level's figures."""
    results: list[list[Sample]] = [[] for _ in range(level)]

    def work(i: int) -> None:
        try:
            run_session(results[i], base_url, run, level, i, turns, deadline, timeout_s)
        except Exception as exc:  # a bug in this script must show as a failure, not as a quiet thread
            results[i].append(Sample("chat", 0.0, None, f"load client failed: {exc!r}"))

    threads = [threading.Thread(target=work, args=(i,), name=f"load-session-{i}") for i in range(level)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return summarize(level, turns, [s for r in results for s in r], time.perf_counter() - start)


def stored_events(db_path: Path, prefix: str) -> int:
    """Events whose text starts with `prefix`, counted in the server's SQLite file opened read-only."""
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30) as db:
        return db.execute("SELECT COUNT(*) FROM events WHERE substr(text, 1, ?) = ?", (len(prefix), prefix)).fetchone()[0]


def run_load(
    base_url: str,
    levels: list[int],
    turns: int,
    *,
    max_seconds: float = 600.0,
    timeout_s: float = 300.0,
    db_path: Path | None = None,
    pid: int | None = None,
) -> dict:
    """Every level in turn against one server; stored events checked in `db_path` (SQLite)."""
    host = urlsplit(base_url).hostname or ""
    from server.auth import is_loopback

    if not is_loopback(host):
        raise SystemExit(f"refusing to load {base_url}: only loopback servers (127.0.0.1, ::1, localhost) may be loaded")
    run = uuid.uuid4().hex[:8]
    deadline = time.monotonic() + max_seconds
    out = []
    for level in levels:
        if time.monotonic() > deadline:
            out.append({"sessions": level, "skipped": f"the --max-seconds {max_seconds:g} bound was reached"})
            continue
        reset_peak_rss(pid)
        figures = run_level(base_url, level, turns, deadline, run=run, timeout_s=timeout_s)
        figures["peak_rss_mib"] = peak_rss_mib(pid)
        figures["events_stored"] = stored_events(db_path, f"load:{run}:{level}:") if db_path else None
        if figures["events_stored"] is None:  # no database to read: the API's word for it
            figures["events_stored"] = figures["events_acknowledged"]
            figures["stored_checked_by"] = "api (events reported new)"
        else:
            figures["stored_checked_by"] = "sqlite"
        figures["events_lost"] = figures["events_posted"] - figures["events_stored"]
        figures["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
        out.append(figures)
    return {"run": run, "levels": out}


def failures(result: dict) -> list[str]:
    """What makes the run fail as a check: lost events, malformed replies, failed requests."""
    found = []
    for level in result["levels"]:
        if "skipped" in level:
            continue
        n = level["sessions"]
        if level["events_lost"]:
            found.append(f"N={n}: {level['events_lost']} of {level['events_posted']} events were not stored")
        if level["malformed"]:
            found.append(f"N={n}: {level['malformed']} chat replies were empty or malformed")
        if level["errors"] or level["rejected_events"]:
            found.append(f"N={n}: {level['errors']} failed requests, {level['rejected_events']} event batches rejected")
    return found


# --- report ------------------------------------------------------------------------------------


def _cell(value) -> str:
    return "–" if value is None else (f"{value:,}" if isinstance(value, int) else f"{value:g}")


def report_markdown(result: dict, settings: dict) -> str:
    """The figures as Markdown: a speed table, a correctness table, and the notices seen."""
    lines = [
        f"`{settings.get('command', 'python -m evaluation.load')}`",
        "",
        f"{settings.get('date', '')}: backend `{settings.get('llm')}`, embeddings `{settings.get('embedding')}`, "
        f"{settings.get('turns')} turns per session, {settings.get('cpus')} CPUs, load average before "
        f"{settings.get('loadavg_before')}; the whole run took {result.get('total_s', '?')} s.",
        *(["", f"Before the load the server was left idle: remembered reasons {settings['written_ahead']}."]
          if settings.get("written_ahead") else []),
        "",
        "| sessions | turns | requests | req/s | chat p50 ms | chat p95 ms | chat max ms | first SSE event p50 ms | "
        "events p50 ms | events p95 ms | peak RSS MiB |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    levels = [lv for lv in result["levels"] if "skipped" not in lv]
    for lv in levels:
        cells = [
            lv["sessions"], f"{lv['turns_done']}/{lv['turns_planned']}", lv["requests"], lv["throughput_rps"],
            lv["chat_p50_ms"], lv["chat_p95_ms"], lv["chat_max_ms"], lv["first_event_p50_ms"], lv["events_p50_ms"],
            lv["events_p95_ms"], lv["peak_rss_mib"],
        ]
        lines.append("| " + " | ".join(c if isinstance(c, str) else _cell(c) for c in cells) + " |")
    lines += [
        "",
        "| sessions | errors | 5xx | malformed replies | replies with a notice | replies listing items "
        "| of them with model-written reasons | events posted | stored | lost | share with model-written reasons |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for lv in levels:
        share = lv.get("model_reasons_share")
        cells = [
            lv["sessions"], lv["errors"], lv["server_errors"], lv["malformed"], lv["replies_with_notice"],
            lv.get("replies_listing_items"), lv["replies_with_model_reasons"], lv["events_posted"], lv["events_stored"], lv["events_lost"],
            None if share is None else f"{share:.0%}",
        ]
        lines.append("| " + " | ".join(c if isinstance(c, str) else _cell(c) for c in cells) + " |")
    for lv in result["levels"]:
        if "skipped" in lv:
            lines.append(f"\nN={lv['sessions']} skipped: {lv['skipped']}.")
        else:
            if lv["notices"]:
                seen = "; ".join(f"{text!r} x{count}" for text, count in lv["notices"].items())
                lines.append(f"\nN={lv['sessions']} notices: {seen}.")
            if lv.get("listed_without_model_reasons"):
                seen = "; ".join(f"{text!r} x{count}" for text, count in lv["listed_without_model_reasons"].items())
                lines.append(f"\nN={lv['sessions']} lists without a model-written reason, by message: {seen}.")
            if lv.get("slowest"):
                seen = "; ".join(f"{t['ms']} ms {t['message']!r} ({', '.join(f'{k} {v:.0f}' for k, v in t['stages'].items())})"
                                 for t in lv["slowest"])
                lines.append(f"\nN={lv['sessions']} slowest turns, server stages in ms: {seen}.")
            if lv["examples"]:
                lines.append(f"\nN={lv['sessions']} problems: {lv['examples']}.")
    return "\n".join(lines) + "\n"


# --- command line ------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, nargs="+", default=[1, 8, 32], help="concurrency levels")
    parser.add_argument("--turns", type=int, default=3, help="chat turns (each followed by an event post) per session")
    parser.add_argument("--max-seconds", type=float, default=600.0, help="no turn starts after this (whole run)")
    parser.add_argument("--request-timeout", type=float, default=300.0, help="client timeout per request, seconds")
    parser.add_argument("--llm", choices=["llama", "fake", "none"], default="llama", help="the server's LLM backend")
    parser.add_argument("--embedding", choices=["minilm", "hash"], default="minilm")
    parser.add_argument("--url", help="load this running loopback server instead of starting one")
    parser.add_argument("--data-dir", type=Path, help="with --url: its data dir, to count stored events in SQLite")
    parser.add_argument("--out", type=Path, help="folder for report.md and results.json")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help="a RECASSIST_* setting for the server this starts (repeatable), e.g. RECASSIST_LLM_TIMEOUT_S=3")
    parser.add_argument("--idle-first", type=float, default=0.0, metavar="SECONDS",
                        help="before the load, leave the server idle until its model has written the reason hooks "
                             "ahead (llm_write_ahead), at most this long: a server that was up before the rush")
    args = parser.parse_args(argv)
    if min(args.sessions) < 1 or args.turns < 1:
        parser.error("--sessions and --turns must be at least 1")
    for pair in args.env:
        if not pair.startswith("RECASSIST_") or "=" not in pair:
            parser.error(f"--env takes RECASSIST_NAME=VALUE, not {pair!r}")
        if args.url:
            parser.error("--env sets the server this script starts; a running server (--url) keeps its own settings")

    settings = {
        "command": " ".join(["python -m evaluation.load", *(argv if argv is not None else sys.argv[1:])]),
        "llm": args.llm if not args.url else "(the running server's)",
        "embedding": args.embedding if not args.url else "(the running server's)",
        "env": dict(pair.split("=", 1) for pair in args.env),
        "sessions": args.sessions,
        "turns": args.turns,
        "max_seconds": args.max_seconds,
        "idle_first_s": args.idle_first,
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "cpus": os.cpu_count(),
        "loadavg_before": [round(x, 2) for x in os.getloadavg()],
    }
    started = time.perf_counter()
    if args.url:
        db = args.data_dir / "recassist.db" if args.data_dir else None
        settings["written_ahead"] = idle_until_written(args.url.rstrip("/"), args.idle_first)
        result = run_load(args.url.rstrip("/"), args.sessions, args.turns, max_seconds=args.max_seconds,
                          timeout_s=args.request_timeout, db_path=db)
    else:
        result = _with_own_server(args, settings)
    result["settings"] = settings
    result["total_s"] = round(time.perf_counter() - started, 1)
    report = report_markdown(result, settings)
    print(report)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        (args.out / "report.md").write_text(report, encoding="utf-8")
    found = failures(result)
    for line in found:
        print("FAIL", line)
    return 1 if found else 0


def idle_until_written(base: str, max_s: float, quiet_s: float = 10.0) -> str | None:
    """Leave the server idle until what its model wrote ahead stops growing for `quiet_s` (at most
    `max_s`); returns what /v1/info then says of the remembered reasons (None without waiting)."""
    if max_s <= 0:
        return None
    started, last, same_since = time.monotonic(), None, time.monotonic()
    said = None
    while time.monotonic() - started < max_s:
        said = httpx.get(base + "/v1/info", timeout=30).json().get("llm_reasons_remembered")
        if said != last:
            last, same_since = said, time.monotonic()
        elif time.monotonic() - same_since >= quiet_s:
            break
        time.sleep(2.0)
    print(f"after {time.monotonic() - started:.0f} s idle: {said}", flush=True)
    return said


def _with_own_server(args, settings: dict) -> dict:
    with tempfile.TemporaryDirectory(prefix="recassist-load-") as tmp:
        data_dir = Path(tmp) / "data"
        env = {**dict(pair.split("=", 1) for pair in args.env),
               "RECASSIST_LLM_BACKEND": args.llm, "RECASSIST_EMBEDDING_BACKEND": args.embedding}
        print(f"starting recassist serve --demo ({args.llm} LLM, {args.embedding} embeddings) in {data_dir} ...", flush=True)
        with server_process(data_dir, timeout_s=900, **env) as (proc, base):
            _warm_up(base, args.request_timeout)
            settings["written_ahead"] = idle_until_written(base, args.idle_first)
            return run_load(base, args.sessions, args.turns, max_seconds=args.max_seconds,
                            timeout_s=args.request_timeout, db_path=data_dir / "recassist.db", pid=proc.pid)


def _warm_up(base: str, timeout_s: float) -> None:
    """One turn before measuring: lazy parts (the retriever, prompt templates) are built by then."""
    r = httpx.post(base + "/v1/chat", json={"user_id": "load-warm-up", "message": "a classic novel"}, timeout=timeout_s)
    r.raise_for_status()


if __name__ == "__main__":
    raise SystemExit(main())
