"""Prompt templates as data: YAML files validated on load, rendered by a strict Jinja helper.

A template file is `<name>.<style>.yaml` in prompts/templates/ (shipped) or in
`<variants_dir>/<variant>/` (a prompt engineer's saved copy that overrides the shipped one).
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from core.errors import PromptError

STYLES = ("completion", "chat")
# The templates a chat turn may load (rank_titles is only the evaluation's baseline).
TURN_TEMPLATES = ("understand", "rank", "rank_list", "reason", "summary", "item_summary")
_TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    "list": (list, tuple),
    "dict": (dict,),
}


class Variable(BaseModel):
    """One declared input of a template."""

    model_config = ConfigDict(extra="forbid")

    name: str
    type: Literal["str", "int", "float", "bool", "list", "dict"] = "str"
    description: str
    example: Any  # used by `recassist prompts check` to test-render the template


class Output(BaseModel):
    """What the model is expected to produce, and the limits that keep a small model on track."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["label", "text", "json"]
    description: str = ""
    json_schema: dict | None = Field(default=None, alias="schema")
    max_tokens: int = Field(default=64, ge=1)
    stop: list[str] = Field(default_factory=list)
    # reason only: "sentence" = the whole reason; "hook" = a short phrase on what the item is
    # about, which the caller joins with the strongest evidence fact (assistant.explain).
    form: Literal["sentence", "hook"] = "sentence"
    # The model may write only the words of these variables' values and of `also_words` (and
    # punctuation): a local model is held to them token by token (assistant/llm/words.py), a
    # hosted one is not. Empty: any words.
    words_from: list[str] = Field(default_factory=list)
    also_words: str = ""

    @model_validator(mode="after")
    def _schema_for_json(self) -> "Output":
        if self.type == "json" and not self.json_schema:
            raise ValueError("output type 'json' needs a `schema`")
        return self


class Lines(BaseModel):
    """Which facts an item line carries: every fact is tokens the model reads on every call."""

    model_config = ConfigDict(extra="forbid")

    year: bool = True
    categories: int = Field(default=2, ge=0)  # how many, each ~2 tokens per line
    creator: bool = True
    evidence: bool = True  # candidates only: "- near: Heat", the closest liked item or matched words


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: str


class PromptTemplate(BaseModel):
    """A validated template file."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str
    description: str
    style: Literal["completion", "chat"]
    variables: list[Variable]
    output: Output
    lines: Lines = Field(default_factory=Lines)
    template: str | None = None
    messages: list[Message] | None = None
    source: str = Field(default="", exclude=True)  # the file it came from, for error messages

    @model_validator(mode="after")
    def _body_matches_style(self) -> "PromptTemplate":
        if self.style == "completion" and (self.template is None or self.messages is not None):
            raise ValueError("a completion template needs `template` (and no `messages`)")
        if self.style == "chat" and (not self.messages or self.template is not None):
            raise ValueError("a chat template needs `messages` (and no `template`)")
        if unknown := sorted(set(self.output.words_from) - self.variable_names):
            raise ValueError(f"output.words_from names {unknown}, which are not among its variables "
                             f"{sorted(self.variable_names)}")
        return self

    @property
    def variable_names(self) -> set[str]:
        return {v.name for v in self.variables}

    def examples(self) -> dict[str, Any]:
        return {v.name: v.example for v in self.variables}

    def render_offered(self, offered: dict[str, Any]) -> str | list[dict]:
        """Render with those `offered` values this template declares.

        For prompts whose caller offers more facts than a template needs (the reason prompt: a
        hook template reads the description, a sentence template the evidence). A declared
        variable the caller does not offer is still an error, with the offered names.
        """
        missing = self.variable_names - offered.keys()
        if missing:
            raise PromptError(
                f"{self.source or self.name}: uses {sorted(missing)}, which the caller does not offer; "
                f"it offers {sorted(offered)}"
            )
        return self.render(**{k: v for k, v in offered.items() if k in self.variable_names})

    def render(self, **values: Any) -> str | list[dict]:
        """The prompt: text for completion style, [{role, content}] for chat style."""
        where = self.source or self.name
        missing = self.variable_names - values.keys()
        extra = values.keys() - self.variable_names
        if missing:
            raise PromptError(f"{where}: missing variable(s) {sorted(missing)}; declared: {sorted(self.variable_names)}")
        if extra:
            raise PromptError(
                f"{where}: unexpected variable(s) {sorted(extra)}; declare them under `variables` or stop passing them"
            )
        for var in self.variables:
            if not isinstance(values[var.name], _TYPES[var.type]) or (
                var.type in ("int", "float") and isinstance(values[var.name], bool)
            ):
                raise PromptError(
                    f"{where}: variable {var.name!r} should be {var.type}, got {type(values[var.name]).__name__}"
                )
        if self.style == "completion":
            return _render(self.template or "", values, where)
        return [{"role": m.role, "content": _render(m.content, values, where)} for m in self.messages or []]


def _environment():
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    # Sandboxed: templates are edited in the prompt lab, and must not reach Python internals.
    return ImmutableSandboxedEnvironment(
        undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False, trim_blocks=True
    )


def _render(text: str, values: dict, where: str) -> str:
    import jinja2
    from jinja2.exceptions import SecurityError

    try:
        return _environment().from_string(text).render(**values)
    except jinja2.UndefinedError as exc:
        raise PromptError(f"{where}: {exc.message} while rendering; declare and pass that variable") from None
    except SecurityError as exc:
        raise PromptError(f"{where}: the template tried something unsafe ({exc}); templates may only format their variables") from None
    except jinja2.TemplateError as exc:
        raise PromptError(f"{where}: template error: {exc}") from None


def _referenced(text: str, where: str) -> set[str]:
    import jinja2
    from jinja2 import meta

    try:
        return set(meta.find_undeclared_variables(_environment().parse(text)))
    except jinja2.TemplateSyntaxError as exc:
        raise PromptError(f"{where}, line {exc.lineno}: Jinja syntax error: {exc.message}") from None


def parse_template(text: str, source: str = "<string>") -> PromptTemplate:
    """Validate YAML text as a template: schema, Jinja syntax, and declared == used variables."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PromptError(f"{source}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise PromptError(f"{source}: a template file must be a YAML mapping with name, style, variables, output")
    try:
        template = PromptTemplate.model_validate({**data, "source": source})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(file)'}: {e['msg']}" for e in exc.errors())
        raise PromptError(f"{source}: {problems}") from None
    if template.style == "completion" and template.template != (template.template or "").rstrip():
        # "Answer:\n" makes the next token a newline, not the answer (and spaces tokenize apart).
        raise PromptError(f"{source}: a completion template must not end with whitespace; write `template: |-`")
    bodies = [template.template] if template.style == "completion" else [m.content for m in template.messages or []]
    used = set().union(*(_referenced(b or "", source) for b in bodies))
    if undeclared := used - template.variable_names:
        raise PromptError(f"{source}: the template uses undeclared variable(s) {sorted(undeclared)}; add them to `variables`")
    if unused := template.variable_names - used:
        raise PromptError(f"{source}: variable(s) {sorted(unused)} are declared but never used; remove them")
    return template


def shipped_dir() -> Path:
    return Path(str(files("prompts.templates")))


def _filename(name: str, style: str) -> str:
    if style not in STYLES:
        raise PromptError(f"unknown prompt style {style!r}; use one of {STYLES}")
    return f"{name}.{style}.yaml"


def load_template(
    name: str, style: str, variant: str = "", variants_dir: str | Path | None = None
) -> PromptTemplate:
    """The template `name` in `style`: the saved variant's copy if it has one, else the shipped file."""
    filename = _filename(name, style)
    path = shipped_dir() / filename
    if variant:
        if variants_dir is None:
            raise PromptError(f"prompt variant {variant!r} asked for but no variants directory given")
        candidate = Path(variants_dir) / variant / filename
        if candidate.exists():
            path = candidate
    if not path.exists():
        raise PromptError(f"no prompt template {filename} in {shipped_dir()}; known: {list_templates()}")
    template = parse_template(path.read_text(encoding="utf-8"), str(path))
    if (template.name, template.style) != (name, style):
        raise PromptError(f"{path}: declares name={template.name!r} style={template.style!r}; the file name says {name}.{style}")
    return template


def list_templates(directory: str | Path | None = None) -> list[str]:
    """Template file stems ('rank.completion', ...) in the shipped directory or the one given."""
    base = Path(directory) if directory else shipped_dir()
    return sorted(p.name[: -len(".yaml")] for p in base.glob("*.yaml"))


def check_templates(dirs: list[str | Path] | None = None) -> list[str]:
    """Problems found in every template file (shipped, plus each variant directory under `dirs`)."""
    problems: list[str] = []
    paths = sorted(shipped_dir().glob("*.yaml"))
    for d in dirs or []:
        paths += sorted(Path(d).glob("*.yaml")) + sorted(Path(d).glob("*/*.yaml"))
    for path in paths:
        try:
            template = parse_template(path.read_text(encoding="utf-8"), str(path))
            stem = path.name[: -len(".yaml")]
            if stem != f"{template.name}.{template.style}":
                raise PromptError(f"{path}: file name should be {template.name}.{template.style}.yaml")
            template.render(**template.examples())
        except PromptError as exc:
            problems.append(str(exc))
    return problems


def save_variant(name: str, template_name: str, yaml_text: str, variants_dir: str | Path) -> Path:
    """Validate `yaml_text` (template `template_name`, e.g. 'rank.completion') and save it in variant `name`."""
    if not name or not name.replace("-", "").replace("_", "").isalnum():
        raise PromptError(f"variant name {name!r} must be letters, digits, '-' or '_'")
    target = Path(variants_dir) / name / f"{template_name}.yaml"
    template = parse_template(yaml_text, str(target))
    if f"{template.name}.{template.style}" != template_name:
        raise PromptError(f"{target}: the YAML declares {template.name}.{template.style}, not {template_name}")
    if template_name not in list_templates():
        raise PromptError(f"{template_name} is not a shipped template; variants override one of {list_templates()}")
    template.render(**template.examples())
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(yaml_text, encoding="utf-8")
    return target


class Prompts:
    """The templates one LLM uses: its prompt style plus an optional saved variant (cached per name)."""

    def __init__(self, style: str = "completion", variant: str = "", variants_dir: str | Path | None = None):
        if style not in STYLES:
            raise PromptError(f"unknown prompt style {style!r}; use one of {STYLES}")
        self.style = style
        self.variant = variant
        self.variants_dir = variants_dir
        self._cache: dict[str, PromptTemplate] = {}

    @classmethod
    def for_llm(cls, llm, variant: str = "", variants_dir: str | Path | None = None) -> "Prompts":
        return cls(getattr(llm, "prompt_style", "completion"), variant, variants_dir)

    def check(self) -> None:
        """Load and test-render every template a turn uses (the variant's copies first).

        Run at start-up: a broken or missing file, or a variant name with no saved folder, is then
        a PromptError naming the file instead of a failure in the middle of someone's chat.
        """
        problems: list[str] = []
        if self.variant:
            folder = Path(self.variants_dir or ".") / self.variant
            if not folder.is_dir():
                saved = sorted(p.name for p in folder.parent.glob("*") if p.is_dir())
                raise PromptError(
                    f"prompt variant {self.variant!r} not found: {folder} does not exist (saved variants: "
                    f"{', '.join(saved) or 'none'}); fix RECASSIST_PROMPT_VARIANT"
                )
            problems += check_templates([folder])
            known = list_templates()
            problems += [
                f"{path}: overrides no shipped template; name it after one of {known}"
                for path in sorted(folder.glob("*.yaml"))
                if path.name[: -len(".yaml")] not in known
            ]
        for name in TURN_TEMPLATES:
            try:
                template = self.get(name)
                template.render(**template.examples())
            except PromptError as exc:
                problems.append(str(exc))
        if problems:
            problems = list(dict.fromkeys(problems))
            raise PromptError(f"{len(problems)} prompt template problem(s):\n  " + "\n  ".join(problems))

    def get(self, name: str) -> PromptTemplate:
        if name not in self._cache:
            self._cache[name] = load_template(name, self.style, self.variant, self.variants_dir)
        return self._cache[name]

    def render(self, name: str, **values: Any) -> str | list[dict]:
        return self.get(name).render(**values)

    def with_overrides(self, texts: dict[str, str]) -> "Prompts":
        """A copy that uses these template texts (YAML, e.g. from the prompt lab) for their names;
        what this one already loaded is shared, not read again."""
        copy = Prompts(self.style, self.variant, self.variants_dir)
        copy._cache = dict(self._cache)
        for key, text in texts.items():
            copy.override(parse_template(text, f"<prompt lab: {key}>"))
        return copy

    def override(self, template: PromptTemplate) -> None:
        """Use `template` (e.g. one being edited in the prompt lab) instead of the file for its name."""
        if template.style != self.style:
            raise PromptError(
                f"{template.source or template.name}: a {template.style} template cannot override this "
                f"model's {self.style} prompts; edit {template.name}.{self.style}.yaml instead"
            )
        self._cache[template.name] = template
