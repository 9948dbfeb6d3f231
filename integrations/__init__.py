"""Adapters that connect recassist to other frameworks; each imports its framework only inside itself."""
