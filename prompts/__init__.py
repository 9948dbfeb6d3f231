"""Prompt templates (YAML files in prompts/templates/) and their loader."""

from prompts.loader import (
    Output,
    Prompts,
    PromptTemplate,
    Variable,
    check_templates,
    list_templates,
    load_template,
    parse_template,
    save_variant,
    shipped_dir,
)

__all__ = [
    "Output",
    "Prompts",
    "PromptTemplate",
    "Variable",
    "check_templates",
    "list_templates",
    "load_template",
    "parse_template",
    "save_variant",
    "shipped_dir",
]
