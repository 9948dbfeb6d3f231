"""The assistant's fixed sentences (no model involved), in English and Chinese.

The conversation's language picks one (`Understanding.language`); a message in another language
gets the English text. Values are filled with str.format.
"""

from __future__ import annotations

REPLIES: dict[str, dict[str, str]] = {
    "why_which": {
        "en": "Which one? Say for example 'why the second one?'.",
        "zh": "哪一个？比如说“为什么推荐第二个？”",
    },
    "about_which": {
        "en": "Which title do you mean? Name it, or say 'tell me about the first one'.",
        "zh": "你指的是哪一本？说出书名，或者说“介绍一下第一本”。",
    },
    "feedback_which": {
        "en": "Which one do you mean? Say for example 'I've seen the second one'.",
        "zh": "你指的是哪一本？比如说“第二本我看过了”。",
    },
    "feedback_seen": {"en": "Noted that you've seen {titles}.", "zh": "记下了，你已经读过{titles}。"},
    "feedback_like": {"en": "Glad you liked {titles}.", "zh": "很高兴你喜欢{titles}。"},
    "feedback_dislike": {"en": "Noted, no more like {titles}.", "zh": "好的，记下了你不喜欢{titles}，之后少推荐这类作品。"},
    "feedback_not_interested": {"en": "Got it, not interested in {titles}.", "zh": "明白，你对{titles}不感兴趣。"},
    "catalog_empty": {
        "en": "The catalog is empty. Load one with `recassist ingest-catalog FILE` "
        "(or start with `recassist serve --demo` for the demo books).",
        "zh": "目录是空的。请用 `recassist ingest-catalog FILE` 导入作品（或用 `recassist serve --demo zh` 加载中文演示）。",
    },
    "nothing_matches": {
        "en": "Nothing in the catalog matches all of that. Try loosening a constraint (for example a year range or a category).",
        "zh": "目录里没有同时满足这些条件的作品。试着放宽一个条件，比如年代范围或类别。",
    },
    "nothing_found": {
        "en": "I found nothing to go on for that: no item matches those words, and there is no history or popularity "
        "to suggest from yet. Name a title you liked, or describe what you want in other words.",
        "zh": "这次没找到可推荐的：没有作品和这些词相符，也还没有浏览记录或热度可以参考。说一部你喜欢的作品，或换个说法描述你想要的。",
    },
    "no_lengths": {
        "en": "This catalog has no length information, so I could not pick shorter ones.",
        "zh": "这个目录没有篇幅信息，所以没法挑更短的。",
    },
    "long_message": {
        "en": "Your message was long; I read its first {chars} characters.",
        "zh": "你的消息太长了，我只读了前 {chars} 个字符。",
    },
    "model_busy": {
        "en": "Many requests at once: this answer skips the language model (retrieval order; reasons it wrote earlier, or from the evidence).",
        "zh": "同时请求太多：这次回答没有用语言模型（按检索顺序排列；理由是它先前写的，或来自证据）。",
    },
    "model_slow": {
        "en": "The model was slow; some reasons come straight from the evidence.",
        "zh": "模型响应太慢，部分理由直接来自证据。",
    },
    "reasons_failed": {
        "en": "The model failed while writing reasons ({failure}); they come from the evidence.",
        "zh": "模型在写推荐理由时出错（{failure}），理由改为来自证据。",
    },
}


def reply(key: str, language: str = "en", **values) -> str:
    """The fixed sentence `key` in the conversation's language (English when there is no version in it)."""
    texts = REPLIES[key]
    text = texts.get("zh" if language.lower().startswith("zh") else "en", texts["en"])
    return text.format(**values) if values else text


def quoted(title: str, language: str = "en") -> str:
    """A title as the language writes it in running text: 《边城》 in Chinese, as is in English."""
    return f"《{title}》" if language.lower().startswith("zh") else title


def year_text(year: int | None, language: str = "en") -> str:
    """A year for display; years before the common era as "公元前91" or "91 BC"."""
    if year is None:
        return ""
    if year >= 0:
        return str(year)
    return f"公元前{-year}" if language.lower().startswith("zh") else f"{-year} BC"
