"""Offline evaluation: data preparation, leave-one-out splits, metrics with bootstrap CIs, reports.

Run it as `recassist eval ...` (see evaluation/cli.py); every module here is importable without
the heavy dependencies (torch, llama_cpp, chromadb, matplotlib are imported where they are used).
"""
