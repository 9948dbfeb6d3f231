"""Turn by turn through a running server: total time, first card, model-written reasons, stages.

    recassist serve --demo &            # then, once it listens:
    python -m evaluation.bench_turns --url http://127.0.0.1:7860

Six demo users ask one thing each, then two ask again; each turn is a streamed POST /v1/chat.
The first row is the first turn after the server started: compare it with the others.
"""

from __future__ import annotations

import argparse
import json
import time

ASKS = [("eli", "something scary with ghosts"), ("ben", "a sea adventure, nothing too old"), ("ana", "a witty romance"),
        ("chen", "early science fiction about machines"), ("dara", "a clever detective story"),
        ("fay", "poetry about nature"), ("eli", "something scary with ghosts"), ("ben", "a sea adventure, nothing too old")]


def turn(client, url: str, user: str, message: str) -> dict:
    """One streamed turn through `client`, an httpx.Client kept for the run as an application keeps
    its connection pool: a client made per request (`httpx.stream`) spends 20-50 ms building its
    TLS context before it sends anything, which earlier runs counted into the first card."""
    started = time.perf_counter()
    first_card, llm_reasons, done, name = None, 0, {}, None
    with client.stream("POST", url + "/v1/chat", json={"user_id": user, "message": message, "stream": True}) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if line.startswith("event: "):
                name = line[len("event: "):]
            elif line.startswith("data: "):
                data = json.loads(line[len("data: "):])
                if name == "cards" and first_card is None:
                    first_card = time.perf_counter() - started
                elif name == "reason" and data.get("source") == "llm":
                    llm_reasons += 1
                elif name == "done":
                    done = data
    return {"user": user, "seconds": time.perf_counter() - started, "first_card_ms": (first_card or 0) * 1000,
            "llm_reasons": llm_reasons, "stages": done.get("timings_ms", {})}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", default="http://127.0.0.1:7860")
    args = p.parse_args(argv)
    print("| turn | user | seconds | first card | model-written reasons | stages (ms) |\n| ---: | --- | ---: | ---: | ---: | --- |")
    import httpx

    with httpx.Client(timeout=300) as client:
        for n, (user, message) in enumerate(ASKS, 1):
            t = turn(client, args.url.rstrip("/"), user, message)
            stages = ", ".join(f"{k} {v:.0f}" for k, v in t["stages"].items())
            print(f"| {n} | {user} | {t['seconds']:.2f} | {t['first_card_ms']:.0f} ms | {t['llm_reasons']} | {stages} |")


if __name__ == "__main__":
    main()
