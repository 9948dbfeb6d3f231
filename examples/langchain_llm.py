"""recassist answering with a LangChain chat model as its LLM (RECASSIST_LLM_BACKEND=langchain).

    python examples/langchain_llm.py --demo --user ben "a sea adventure"                  # llamacpp: the embedded Gemma
    python examples/langchain_llm.py --demo --user ben --model openai:gpt-4o-mini "a sea adventure"

The same as `RECASSIST_LLM_BACKEND=langchain RECASSIST_LANGCHAIN_MODEL=openai:gpt-4o-mini recassist recommend ...`.
The model ranks with label log-probabilities when it returns them, else with structured output
restricted to the candidate labels; reasons stream through the model's `.stream`.
"""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("message", help="what the user asks for")
    parser.add_argument("--user", required=True, help="who is asking")
    parser.add_argument("--model", help="provider:model for init_chat_model, or llamacpp:PATH (default: "
                        "RECASSIST_LANGCHAIN_MODEL, else llamacpp: with the embedded Gemma)")
    parser.add_argument("--k", type=int, default=3, help="how many items")
    parser.add_argument("--demo", action="store_true", help="load the demo catalog and users first")
    parser.add_argument("--data-dir", help="recassist's data directory (default: RECASSIST_DATA_DIR or ~/.recassist)")
    parser.add_argument("--embedding", help="recassist's embedding backend (default: RECASSIST_EMBEDDING_BACKEND or minilm)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)

    from langchain_core.callbacks import BaseCallbackHandler

    from assistant.engine import Engine
    from assistant.settings import Settings

    class CountCalls(BaseCallbackHandler):
        """LangChain's callbacks see every call recassist makes: count them, and those with a schema."""

        def __init__(self):
            self.calls, self.structured = 0, 0

        def on_chat_model_start(self, serialized, messages, **kwargs):
            self.calls += 1
            self.structured += bool((kwargs.get("invocation_params") or {}).get("tools"))

    settings = Settings.load(data_dir=args.data_dir, embedding_backend=args.embedding, llm_backend="langchain")
    settings.langchain_model = args.model or settings.langchain_model or "llamacpp:"
    engine = Engine(settings)  # the registry builds the LLM with integrations.langchain.llm.create
    try:
        if args.demo:
            engine.load_demo(progress=False)
        llm = engine.llm
        if llm is None:
            print(f"error: {engine.llm_error}", file=sys.stderr)
            return 1
        counter = CountCalls()
        llm.chat_model.callbacks = [counter]
        # What `recassist recommend` and POST /v1/recommendations do: rank, explain, summarise.
        result = engine.agent.recommend(args.user, query=args.message, k=args.k)
    finally:
        engine.close()
    out = {
        "llm": {"backend": llm.backend, "model": llm.model, "logprobs": llm.supports_logprobs,
                "structured_output": llm.supports_json_schema, "streaming": llm.supports_streaming},
        "model_calls": counter.calls,
        "structured_calls": counter.structured,
        "items": [{"id": i["item_id"], "title": i["title"], "reason": i["reason"], "reason_source": i["reason_source"]}
                  for i in result["items"]],
        "summary": result["summary"],
        "notices": result["notices"],
    }
    if args.json:
        print(json.dumps(out, ensure_ascii=False, indent=2))
        return 0
    print(f"LLM: {llm.model} through LangChain ({counter.calls} calls, {counter.structured} with structured output)")
    for i, item in enumerate(out["items"], 1):
        print(f"  {i}. {item['title']} [{item['id']}]: {item['reason']} ({item['reason_source']})")
    for note in out["notices"]:
        print(f"note: {note}")
    print(out["summary"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
