"""Search recassist's catalog vectors from LangChain: the same Chroma collection, the same embedder.

    python examples/langchain_vectorstore.py --demo "a whale hunt at sea"

recassist writes one content collection per embedding model (`content-<model>`) in
$RECASSIST_DATA_DIR/chroma. LangChain's Chroma opens it by name, from the engine's client or from
the same path, with `RecassistEmbeddings` so queries land in the same vector space. (The file is
not called langchain_chroma.py: run as a script, it would shadow the langchain_chroma package.)
"""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("query", help="what to search for")
    parser.add_argument("--k", type=int, default=3, help="how many items")
    parser.add_argument("--demo", action="store_true", help="load the demo catalog first")
    parser.add_argument("--data-dir", help="recassist's data directory (default: RECASSIST_DATA_DIR or ~/.recassist)")
    parser.add_argument("--embedding", help="recassist's embedding backend (default: RECASSIST_EMBEDDING_BACKEND or minilm)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)

    import chromadb
    from langchain_chroma import Chroma

    from assistant.engine import Engine
    from assistant.settings import Settings
    from integrations.langchain import RecassistEmbeddings, content_vectorstore, write_item_texts

    settings = Settings.load(data_dir=args.data_dir, embedding_backend=args.embedding, llm_backend="none")
    engine = Engine(settings)
    try:
        if args.demo:
            engine.load_demo(progress=False)
        write_item_texts(engine)  # LangChain's Chroma returns only rows that carry text
        # 1. Through the engine's own Chroma client.
        same_client = content_vectorstore(engine).similarity_search_with_relevance_scores(args.query, k=args.k)
        # 2. The way any LangChain program opens it: the collection's name and the same directory.
        name, embeddings = engine.retriever.content.name, RecassistEmbeddings(engine.embedder)
        if settings.chroma_mode == "http":
            store = Chroma(collection_name=name, host=settings.chroma_host, port=settings.chroma_port,
                           embedding_function=embeddings, create_collection_if_not_exists=False)
        else:
            store = Chroma(collection_name=name, persist_directory=str(settings.chroma_path), embedding_function=embeddings,
                           client_settings=chromadb.config.Settings(anonymized_telemetry=False),  # as recassist opens it
                           create_collection_if_not_exists=False)
        same_path = store.similarity_search_with_relevance_scores(args.query, k=args.k)
    finally:
        engine.close()
    rows = {
        "collection": name,
        "same_client": [_row(doc, score) for doc, score in same_client],
        "same_path": [_row(doc, score) for doc, score in same_path],
    }
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return 0
    print(f"collection {name}:")
    for row in rows["same_path"]:
        print(f"  {row['relevance']:.3f}  {row['title']} [{row['id']}]  {row['text'][:80]}...")
    return 0


def _row(doc, score: float) -> dict:
    return {"id": doc.id, "title": doc.metadata.get("title"), "relevance": round(float(score), 4), "text": doc.page_content}


if __name__ == "__main__":
    sys.exit(main())
