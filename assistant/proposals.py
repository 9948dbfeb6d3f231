"""The propose step (optional): a language model names titles from the conversation, the zero-shot
CRS way (He et al., CIKM 2023); the title linker ties each line to the catalog, and the linked
items join retrieval as one more signal ("proposed"). Lines that link to nothing are counted as
invented and dropped: a model never shows an item the catalog does not have.

On under `llm_proposals=auto` for chat (instruction-tuned) models only; for the embedded base
model it was measured on the ReDial tuning dialogs (README, "Evaluation on human dialogs").
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from assistant.turn import Understood
from assistant.vocabulary import CatalogVocabulary
from core.errors import RecassistError
from retrieval.titles import normalize_title

log = logging.getLogger(__name__)

PROPOSALS = 10  # titles asked for
CONVERSATION_CHARS = 1500  # the newest user words that fit
_LIST_MARK = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s*")


@dataclass(frozen=True)
class Proposals:
    item_ids: tuple[str, ...] = ()  # linked, best first, one id per work
    lines: int = 0  # titles the model wrote
    invented: tuple[str, ...] = ()  # lines that link to no catalog title
    copied: int = 0  # lines that repeat the template's own example (dropped: a small model echoes it)
    tokens: dict = field(default_factory=dict)
    trace: tuple[dict, ...] = ()

    def stats(self) -> dict:
        return {"proposed": self.lines, "linked": len(self.item_ids), "invented": len(self.invented), "copied": self.copied}


def wants_proposals(setting, llm) -> bool:
    """llm_proposals resolved: "auto" asks chat models only (a base model was measured not to help)."""
    if llm is None:
        return False
    if setting == "auto":
        return getattr(llm, "prompt_style", "completion") == "chat"
    return bool(setting)


def conversation_text(understood: Understood, limit: int = CONVERSATION_CHARS) -> str:
    """What the user said in this session (this message included), newest last, within `limit`."""
    said = [content for role, content in understood.conversation.recent_text(turns=12) if role == "user"]
    text = "\n".join(said)
    return text[-limit:]


def link_lines(text: str, vocab: CatalogVocabulary, example: str = "") -> tuple[list[str], list[str], int, int]:
    """(linked item ids best first, invented lines, lines written, lines copied from `example`):
    each line's first linked title; a line the template's own example holds is dropped."""
    linked: list[str] = []
    invented: list[str] = []
    lines = [_LIST_MARK.sub("", line).strip() for line in text.splitlines()]
    lines = [line for line in lines if line]
    shown = {normalize_title(line) for line in example.splitlines() if line.strip()}
    kept = [line for line in lines if normalize_title(line) not in shown]
    for line in kept:
        # The whole line as one title first; else a title inside it ("Dracula by Bram Stoker").
        ids = vocab.title_index.title_line(line) or [m.item_id for m in vocab.find_mentions(line)[:1]]
        if not ids:
            invented.append(line)
        elif ids[0] not in linked:
            linked.append(ids[0])
    return linked, invented, len(lines), len(lines) - len(kept)


def propose(llm, prompts, understood: Understood, vocab: CatalogVocabulary, named_titles: Sequence[str], n: int = PROPOSALS) -> Proposals:
    """Ask the model for `n` titles; never raises for a model failure (no proposals instead)."""
    template = prompts.get("propose")
    prompt = template.render(conversation=conversation_text(understood), named=list(named_titles), n=n)
    out = template.output
    try:
        text = "".join(llm.stream(prompt, max_tokens=out.max_tokens, stop=out.stop or None))
    except RecassistError as exc:
        log.warning("title proposals failed, retrieval alone: %s", exc)
        return Proposals(trace=({"stage": "propose", "prompt": prompt, "raw": None, "failure": str(exc)},))
    example = template.template or "\n".join(m.content for m in template.messages or [])
    linked, invented, lines, copied = link_lines(text, vocab, example)
    trace = {"stage": "propose", "prompt": prompt, "raw": text, "linked": linked, "invented": invented, "copied": copied}
    tokens = {"completion": llm.count_tokens(text)}
    return Proposals(tuple(linked), lines, tuple(invented), copied, tokens, (trace,))
