"""Retrieval: catalog and event ingest, embeddings, Chroma stores, candidate generation."""
