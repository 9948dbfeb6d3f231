"""Basics every layer may import: the error types. Nothing here imports another recassist package."""
