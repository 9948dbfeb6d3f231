"""Prompt templates are data: every shipped file validates, renders, and bad files fail with clear errors."""

from __future__ import annotations

import textwrap

import pytest

from core.errors import PromptError
from prompts import Prompts, check_templates, list_templates, load_template, parse_template, save_variant

PRODUCT_TEMPLATES = ["rank", "rank_list", "reason", "summary", "item_summary", "understand"]

GOOD = textwrap.dedent(
    """\
    name: greet
    description: says hello
    style: completion
    variables:
      - {name: who, type: str, description: a name, example: Ada}
    output: {type: text, max_tokens: 5, stop: ["\\n"]}
    template: |-
      Hello {{ who }}:
    """
)


def test_every_shipped_template_validates_and_renders():
    assert check_templates() == []


@pytest.mark.parametrize("name", PRODUCT_TEMPLATES)
@pytest.mark.parametrize("style", ["completion", "chat"])
def test_each_product_template_exists_in_both_styles(name, style):
    template = load_template(name, style)
    rendered = template.render(**template.examples())
    if style == "completion":
        assert isinstance(rendered, str) and rendered == rendered.rstrip()
    else:
        assert [m["role"] for m in rendered][-1] == "user"


def test_completion_rank_prompt_ends_where_the_label_comes_next():
    template = load_template("rank", "completion")
    prompt = template.render(history=["Heat (1995; Crime)"], request="", candidates=["A. Up (2009)", "B. Heat (1995)"])
    assert prompt.endswith("B. Heat (1995)\nAnswer:")
    assert template.output.type == "label"


def test_understand_declares_its_json_schema():
    schema = load_template("understand", "chat").output.json_schema
    assert schema["properties"]["intent"]["enum"] == ["recommend", "refine", "why", "about_item", "feedback", "smalltalk"]
    assert set(schema["required"]) == set(schema["properties"])
    assert schema["additionalProperties"] is False


@pytest.mark.parametrize(
    "values, message",
    [
        ({}, "missing variable(s) ['who']"),
        ({"who": "Ada", "age": 3}, "unexpected variable(s) ['age']"),
        ({"who": 3}, "variable 'who' should be str, got int"),
    ],
)
def test_rendering_with_wrong_variables_names_file_and_variable(values, message):
    template = parse_template(GOOD, "greet.completion.yaml")
    with pytest.raises(PromptError) as err:
        template.render(**values)
    assert "greet.completion.yaml" in str(err.value) and message in str(err.value)


@pytest.mark.parametrize(
    "change, message",
    [
        (("Hello {{ who }}:", "Hello {{ who }} {{ when }}:"), "undeclared variable(s) ['when']"),
        (("Hello {{ who }}:", "Hello:"), "declared but never used"),
        (("template: |-", "template: |"), "must not end with whitespace"),
        (("style: completion", "style: poem"), "style"),
        (("description: says hello", "description: says hello\ncolour: red"), "colour"),
        (("{{ who }}:", "{{ who }:"), "Jinja syntax error"),
        (("type: text,", "type: json,"), "needs a `schema`"),
        (("template: |-\n  Hello {{ who }}:\n", "messages: []\n"), "completion template needs `template`"),
        (("template: |-", "lines: {years: false}\ntemplate: |-"), "lines.years: Extra inputs"),
        (("template: |-", "lines: {categories: -1}\ntemplate: |-"), "lines.categories"),
        (('stop: ["\\n"]}', 'stop: ["\\n"], words_from: [whom]}'), "output.words_from names ['whom'], which are not among"),
    ],
)
def test_invalid_template_files_are_rejected_with_the_reason(change, message):
    text = GOOD.replace(*change)
    assert text != GOOD
    with pytest.raises(PromptError) as err:
        parse_template(text, "greet.completion.yaml")
    assert "greet.completion.yaml" in str(err.value) and message in str(err.value)


def test_lines_default_to_every_fact_and_a_file_may_trim_them():
    assert parse_template(GOOD).lines.model_dump() == {"year": True, "categories": 2, "creator": True, "evidence": True}
    trimmed = parse_template(GOOD.replace("template: |-", "lines: {year: false, categories: 1}\ntemplate: |-"))
    assert (trimmed.lines.year, trimmed.lines.categories, trimmed.lines.creator) == (False, 1, True)


def test_a_saved_variant_overrides_the_shipped_template(tmp_path):
    shipped = load_template("summary", "completion")
    text = (shipped_text := _shipped("summary.completion")).replace("Sum up a list", "Summarise a list")
    assert text != shipped_text
    save_variant("terse", "summary.completion", text, tmp_path)
    variant = load_template("summary", "completion", variant="terse", variants_dir=tmp_path)
    assert "Summarise a list" in variant.render(**shipped.examples())
    # Templates the variant does not override still come from the package.
    assert load_template("rank", "completion", variant="terse", variants_dir=tmp_path).source.endswith("rank.completion.yaml")
    assert check_templates([tmp_path]) == []


@pytest.mark.parametrize(
    "name, template_name, mutate, message",
    [
        ("bad name!", "summary.completion", lambda t: t, "variant name"),
        ("v1", "summary.completion", lambda t: t.replace("{{ request }}", "{{ reqest }}"), "reqest"),
        ("v1", "summary.chat", lambda t: t, "declares summary.completion"),
        ("v1", "nonexistent.completion", lambda t: t.replace("name: summary", "name: nonexistent"), "not a shipped template"),
    ],
)
def test_save_variant_validates_before_writing(tmp_path, name, template_name, mutate, message):
    with pytest.raises(PromptError, match=message.replace("!", ".")):
        save_variant(name, template_name, mutate(_shipped("summary.completion")), tmp_path)
    assert not list(tmp_path.rglob("*.yaml"))


def test_check_templates_reports_a_broken_variant(tmp_path):
    (tmp_path / "v1").mkdir()
    (tmp_path / "v1" / "summary.completion.yaml").write_text(_shipped("summary.completion").replace("{{ language }}", "{{ lang }}"))
    problems = check_templates([tmp_path])
    assert len(problems) == 1 and "summary.completion.yaml" in problems[0] and "lang" in problems[0]


def test_prompts_follow_the_llm_style():
    class Chatty:
        prompt_style = "chat"

    assert isinstance(Prompts.for_llm(Chatty()).render("summary", **load_template("summary", "chat").examples()), list)
    assert "rank.completion" in list_templates()


def _shipped(stem: str) -> str:
    from prompts import shipped_dir

    return (shipped_dir() / f"{stem}.yaml").read_text(encoding="utf-8")


def test_an_override_replaces_one_template_of_the_same_style():
    prompts = Prompts("completion")
    edited = parse_template(_shipped("summary.completion").replace("Sum up a list", "Summarise a list"), "<lab>")
    prompts.override(edited)
    assert "Summarise a list" in prompts.render("summary", **edited.examples())
    with pytest.raises(PromptError, match="cannot override"):
        prompts.override(load_template("rank", "chat"))


def test_render_offered_takes_what_the_template_declares_and_names_what_is_missing():
    hook = Prompts("completion").get("reason")
    offered = {"item": "Heat (1995; Crime)", "about": "A detective hunts a thief.", "facts": ["you liked Ronin"],
               "request": "", "language": "English"}
    rendered = hook.render_offered(offered)
    assert rendered.endswith("\n\nAbout: A detective hunts a thief.\nLanguage: English\nHook:")
    assert "Heat" not in rendered, "the hook template does not show the title (the model echoed it)"
    chat = Prompts("chat").get("reason").render_offered(offered)
    assert "About: A detective hunts a thief." in chat[-1]["content"] and "Facts: you liked Ronin" in chat[-1]["content"]
    with pytest.raises(PromptError, match=r"uses \['about'\], which the caller does not offer; it offers \['facts', 'item'"):
        hook.render_offered({k: v for k, v in offered.items() if k != "about"})
