"""Reasons and summaries: LLM-written where it stays grounded, evidence-built where it does not.

Every LLM sentence is checked against what we know (the item's own data and the retrieval
evidence); one that names another title, a number or a name we cannot trace is replaced by a
deterministic sentence built from the evidence, which is always available.
"""

from __future__ import annotations

import logging
import re
import time
from collections import Counter
from dataclasses import dataclass
from typing import Collection, Iterable, Iterator, Sequence

from assistant.claims import Support, content_words, inflections
from assistant.evidence import (
    ABOUT_WORDS,
    card_item,
    first_sentence,
    evidence_facts,
    evidence_reason,
    evidence_summary,
    is_chinese,
    item_about,
    language_name,
    predicates,
    without_dangling,
)
from assistant.grounding import copies_example, grounding_problems, reason_problems
from assistant.ranking import item_line
from retrieval.records import Candidate, Item

log = logging.getLogger(__name__)

MAX_REASON_TOKENS = 60  # a base model left alone babbles; one sentence fits easily
MAX_REASON_CHARS = 300
_CJK = re.compile(r"[\u3400-\u9fff]")




def clean_generated(text: str, max_sentences: int = 2) -> str:
    """Trim quotes and whitespace and keep the first sentences (a base model rarely stops on its own)."""
    text = text.strip().strip('"“”').strip()
    # An initial ("H. G. Wells") does not end a sentence.
    sentences = [s.strip() for s in re.findall(r".+?(?:(?<!\b[A-Z])[.!?](?=\s|$)|[。！？]|$)", text) if s.strip()]
    joiner = "" if _CJK.search(text) else " "
    return joiner.join(sentences[:max_sentences]) or text


def _until_stop(pieces: Iterable[str], stops: Sequence[str], max_chars: int) -> Iterator[str]:
    """Pass pieces through up to the first stop sequence (not every server honours `stop`) or max_chars."""
    text = ""
    try:
        for piece in pieces:
            cut = min((i for i in ((text + piece).find(s) for s in stops if s) if i >= 0), default=-1)
            if cut >= 0:
                if cut > len(text):
                    yield (text + piece)[len(text) : cut]
                return
            text += piece
            yield piece
            if len(text) > max_chars:
                return
    finally:
        # Stopping early must end the generation now: a local model holds its lock until then.
        close = getattr(pieces, "close", None)
        if close is not None:
            close()


# LLM-written reasons -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ReasonChunk:
    """A streamed piece (delta set, final None) or the checked final reason (final set)."""

    item_id: str
    delta: str | None
    final: str | None
    source: str  # "llm" or "evidence"
    failure: str | None = None  # set once, on the final chunk of the reason where the model failed
    # On final chunks of reasons the model was asked for: what it was asked, what it wrote, and
    # why that was not kept (empty when it was), for the prompt lab's trace.
    prompt: str | list | None = None
    raw: str | None = None
    problems: tuple[str, ...] = ()
    earlier: bool = False  # the model wrote it for the same prompt in an earlier turn (llm/memo.py)


OUT_OF_TIME = "out of time"  # a final chunk's failure when the turn's time ended before its reason
HOOK_MAX_WORDS = 16  # a hook longer than this copied the description instead of summing it up
HOOK_JOINS = {"en": "; it ", "zh": "，它"}  # phrase + join + evidence predicate (hook_reason)
CUT_MARK = "…"  # ends a hook the model was still writing at max_tokens (`marked_if_cut`)


def marked_if_cut(llm, text: str, max_tokens: int) -> str:
    """`text` with CUT_MARK when the model wrote max_tokens of it (it stopped because it had to,
    likely inside a clause: `hook_reason` keeps only its whole clauses). Set where the text is
    written, so what is remembered carries it to every later turn."""
    try:
        cut = text.strip() != "" and llm.count_tokens(text) >= max_tokens
    except Exception:  # noqa: BLE001 - no count: judged as written
        return text
    return text + CUT_MARK if cut else text


def _says_only_the_line(text: str, item: Item) -> bool:
    """True when every content word of `text` is in the item's title, categories or year."""
    if _CJK.search(text):  # Chinese has no spaces to find words by: every character, then
        return all(ch in item.title + "".join(item.categories) for ch in _CJK.findall(text))
    line = Support.of([item.title, " ".join(item.categories), str(item.year or "")])
    return all(line.covers(w) for w in content_words(text) if not w.isdigit())


def hook_reason(hook: str, candidate: Candidate, language: str = "en", max_words: int | None = None) -> str | None:
    """A reason from a model's phrase about the item plus the strongest evidence fact: the liked
    items it is close to where there are any, else the request match, a creator or categories.

    The phrase may have at most HOOK_MAX_WORDS words. A longer one copied the description instead
    of summing it up: it is kept up to the last clause that starts within the limit (`clause_cut`,
    as the description's own opening is cut in `extracted_hook`), never cut inside a clause, which
    reads broken. So is one the model was still writing when it reached max_tokens (CUT_MARK).
    None when no clause ends in time, when it is empty, or when it says nothing beyond the item's
    line ("Wonder Woman", "a comedy film from 1994"); the caller then uses the evidence sentence,
    which says more.
    """
    zh = is_chinese(language)
    raw = hook.rstrip()
    cut, raw = raw.endswith(CUT_MARK), raw.removesuffix(CUT_MARK)
    text = clean_generated(raw, max_sentences=1)
    cut = cut and clean_generated(raw, max_sentences=2) == text  # else its first sentence ended before the cut
    text = text.strip().rstrip(".。!！?？;；:：…").strip()
    if zh != bool(_CJK.search(text)):
        return None  # a phrase in the other script: a translation, nothing in the description to check it by
    if zh and cut:  # up to the end of its first clause, when one ended before the cut
        clauses = re.split(r"[，,；;：:、]", text)
        text = clauses[0] if len(clauses) > 1 and len(clauses[0]) >= 4 else ""
    elif not zh:
        words, limit = text.split(), max_words or HOOK_MAX_WORDS
        if cut or len(words) > limit:
            text = clause_cut(words, limit) or ""
        else:
            text = without_dangling(words)
    if not text or _says_only_the_line(text, candidate.item):
        return None
    return _with_fact(text if zh else text[:1].upper() + text[1:], candidate, zh)


def _with_fact(phrase: str, candidate: Candidate, zh: bool) -> str:
    """The phrase, then the strongest evidence fact: the phrase already says what the item is; the
    fact ties it to what the user did."""
    preds = predicates(candidate, zh, history_first=True)[:1]
    join, end = (HOOK_JOINS["zh"], "。") if zh else (HOOK_JOINS["en"], ".")
    return phrase + (join + preds[0] if preds else "") + end


def quoted_hook_reason(reason: str, candidate: Candidate, language: str) -> str:
    """A hook reason written in the item's own language (`hook_reason`, checked there) as a reply in
    another: its phrase quoted as the item's own words, the evidence fact in the reply's language.
    A Chinese reply about an English book: "「A human child raised by wolves」，它与你喜欢的《Kim》相近。"
    (the title stays as the catalog writes it, and so does what the book is about)."""
    phrase = hook_of(reason) or reason.rstrip(".。")
    zh = is_chinese(language)
    return _with_fact(f"「{phrase}」" if zh else f"“{phrase}”", candidate, zh)


def hook_language(item: Item, language: str) -> str:
    """The language a hook about `item` is asked and checked in for a reply in `language`: the
    reply's, unless the item is described in the other script (Chinese against Latin letters),
    then the description's own. The embedded model's translations passed the check 1 time in 60
    (`python -m evaluation.reason_check collect out.json --language zh`); a phrase copied from the
    description passes as often as for a reply in its own language, and what was written ahead
    for the item serves both."""
    own = about_language(item)
    return language if is_chinese(language) == is_chinese(own) else own


HOOK_MIN_WORDS = 6  # a clause cut shorter than this says too little to stand for the item
EXTRACT_MAX_WORDS = ABOUT_WORDS  # the item's own first sentence, whole up to this (a model's phrase: HOOK_MAX_WORDS)
_CLAUSE_STARTS = frozenset("who whose which that where when while and or but after before because".split())


def extracted_hook(item: Item, language: str = "en") -> str | None:
    """The opening clause of the item's own description, short enough to be a hook (None if it
    is not): what a reason without the model says about the item itself."""
    about = first_sentence(item)
    if not about or is_chinese(language) != _mostly_cjk(about):  # hook_reason checks what it says
        return None
    if about.count("“") != about.count("”") or about.count('"') % 2 or about[:1] in "“\"「":
        about = re.sub(r"[“”\"「」]", "", about)  # a cut (or a cleaned opening) would leave a quote unpaired
    if is_chinese(language):
        clause = re.split(r"[，,；;：:。！？]", about)[0].strip()
        return clause if 4 <= len(clause) <= 30 else None
    words = about.rstrip(".!?").split()
    return " ".join(words) if len(words) <= EXTRACT_MAX_WORDS else clause_cut(words, EXTRACT_MAX_WORDS)


def clause_cut(words: Sequence[str], max_words: int) -> str | None:
    """The words up to the last clause that starts within `max_words` ("A young sailor signs aboard
    a whaling ship | whose one-legged captain ..."), never in the middle of one; None when no
    clause starts between HOOK_MIN_WORDS and the limit.

    "and" and "or" join words as often as clauses ("before her looks and credit run out"), so a
    cut before them is taken only where no other clause starts in time; one that ends a list
    ("questions on love, marriage, work, joy and death") joins its last member, never a clause.
    """
    def start(j: int) -> int:  # 2: a clause starts here; 1: perhaps ("and", "or"); 0: none
        word = words[j].lower()
        if word in ("and", "or"):
            return 0 if any(w.endswith(",") for w in words[max(0, j - 3): j]) else 1
        return 2 if word in _CLAUSE_STARTS else 0

    starts = [(start(j), j) for j in range(HOOK_MIN_WORDS, min(max_words, len(words) - 1) + 1) if start(j)]
    return without_dangling(list(words[: max(starts)[1]])) if starts else None


def evidence_reasons(candidates: Sequence[Candidate], language: str = "en") -> dict[str, str]:
    """Each candidate's evidence sentence; where several in one list would read the same ("It is
    close to Emma, which you liked" five times), each opens with what its own description says
    first, so the cards do not repeat each other when the model writes none."""
    plain = {c.item.id: evidence_reason(c, language) for c in candidates}
    repeated = {text for text, n in Counter(plain.values()).items() if n > 1}
    out = {}
    for c in candidates:
        text = plain[c.item.id]
        if text in repeated:
            own = hook_language(c.item, language)
            hook = extracted_hook(c.item, own)
            hooked = hook_reason(hook, c, own, max_words=EXTRACT_MAX_WORDS) if hook else None
            if hooked and own != language:
                hooked = quoted_hook_reason(hooked, c, language)
            text = hooked or text
        out[c.item.id] = text
    return out


def hook_of(reason: str) -> str | None:
    """The phrase of a hook reason, before the evidence fact hook_reason joined to it (None if none)."""
    head = re.split("|".join(map(re.escape, HOOK_JOINS.values())), reason, maxsplit=1)[0]
    return head.rstrip(".。") if head != reason else None


def _unsupported_characters(phrase: str, candidate: Candidate) -> str:
    """The Chinese characters of a phrase that neither the item's data nor its evidence contains.

    Chinese has no spaces to check words by (assistant.claims checks English words); characters
    catch what the embedded model copies from its template's example ("牧师的冬景" for a winter
    essay) or invents ("夏丏尊的父亲"). One stray character is allowed, for a paraphrase. An item
    described in English has nothing to compare with: its hook is asked and checked in English
    (`hook_language`), and a Chinese phrase about it is refused as a translation (`hook_reason`).
    """
    item, ev = candidate.item, candidate.evidence
    if not _CJK.search(item.text or ""):
        return ""
    support = set("".join([item.title, item.text or "", item.creator or "", *item.categories, *item.tags,
                           *ev.matched_words, *(t for _, t, _ in ev.near_history)]))
    strange = [ch for ch in _CJK.findall(phrase) if ch not in support]
    return "".join(strange) if len(strange) > 1 else ""


def nothing_to_sum_up(item: Item) -> bool:
    """No description, or one that only restates the item's line ("A comedy film from 1994."): a
    hook template's model is not asked, and the evidence sentence says more."""
    about = item_about(item)
    return not about or _says_only_the_line(about, item)


def about_language(item: Item) -> str:
    """The language a hook about this item is written in: its description's ("zh" or "en")."""
    return "zh" if _mostly_cjk(item_about(item)) else "en"


def _mostly_cjk(text: str) -> bool:
    """Chinese prose: more CJK characters than Latin letters (a Chinese line may name a Latin title)."""
    return len(_CJK.findall(text)) > len(re.findall(r"[A-Za-z]", text))


def judge_reason(
    text: str,
    candidate: Candidate,
    template,
    known_titles: Collection[str] = (),
    request: str = "",
    other_categories: Collection[str] = (),
    liked_titles: Collection[str] = (),
    language: str = "en",
) -> tuple[str, list[str]]:
    """What the model wrote (`text`) as the reason to show, and why not ([] when it is kept).

    A hook template's phrase becomes a sentence through `hook_reason` first; a sentence or phrase
    that repeats the template's own example is not kept; the rest is `reason_problems`.
    """
    hook_form = template.output.form == "hook"
    if hook_form and (own := hook_language(candidate.item, language)) != language:
        # Asked in the description's language (`llm_reasons`): checked in it, then quoted.
        reason, problems = judge_reason(text, candidate, template, known_titles, request, other_categories, liked_titles, own)
        return (reason if problems else quoted_hook_reason(reason, candidate, language)), problems
    reason = (hook_reason(text, candidate, language) or "") if hook_form else clean_generated(text)
    if hook_form and not reason:
        return "", ["the phrase was unusable (empty, only the item line, too long, or not in the user's language)"]
    if copies_example(text, template, [candidate.item.text]):  # `about` is a clause of this text
        return reason, ["it repeats the template's example, which is about another item"]
    if hook_form and is_chinese(language) and (strange := _unsupported_characters(hook_of(reason) or "", candidate)):
        return reason, [f"says {strange}: characters found neither in the item's data nor in the evidence"]
    return reason, reason_problems(reason, candidate, known_titles, request, other_categories, liked_titles, language)


def reason_limits(template) -> tuple[int, list[str]]:
    """The reason template's (max_tokens, stops), as every reason prompt is generated (and remembered) with."""
    return min(template.output.max_tokens, MAX_REASON_TOKENS), list(template.output.stop or ["\n"])


def _offered(candidate: Candidate, request: str, language: str) -> dict:
    return {
        "item": item_line(candidate.item), "about": item_about(candidate.item), "facts": evidence_facts(candidate),
        "request": request, "language": language_name(language),
    }


def reason_prompt(template, candidate: Candidate, request: str = "", language: str = "en"):
    """The reason prompt for one card: the template with those of its values it declares."""
    return template.render_offered(_offered(candidate, request, language))


def reason_words(template, candidate: Candidate, request: str = "", language: str = "en") -> str | None:
    """The words the reason template lets the model write for this card (`output.words_from`, the
    hook's About line, and `output.also_words`), or None when it may write any."""
    output = template.output
    if not output.words_from:
        return None
    offered = _offered(candidate, request, language)
    values = [v if isinstance(v, str) else " ".join(map(str, v)) for v in (offered[name] for name in output.words_from)]
    # The check takes "families" for "family" (claims.stem): the model may write either.
    return " ".join([*values, *inflections(" ".join(values)), output.also_words])


ITEM_ONLY_VARIABLES = frozenset({"item", "about", "language"})


def item_only(template) -> bool:
    """True when the reason prompt depends on the item (and reply language) alone, not on the user
    or the turn: its generation can be written ahead for any user (assistant/prewrite.py)."""
    return template.variable_names <= ITEM_ONLY_VARIABLES


def llm_reasons(
    llm,
    prompts,
    candidates: Sequence[Candidate],
    user_context: str = "",
    language: str = "en",
    known_titles: Collection[str] = (),
    liked_titles: Collection[str] = (),
    *,
    remembered=None,
    quota: int | None = None,
    fallback: dict[str, str] | None = None,
    wait_s: float = 0.0,
    until: float | None = None,
) -> Iterator[ReasonChunk]:
    """Per candidate: the reason's pieces as the model writes them, then one final checked reason.

    `user_context` is the user's request this turn; `known_titles` the catalog titles (for the check);
    `liked_titles` the user's liked items (a reason may say they were liked).
    Without an LLM, or after it fails once, reasons come from the evidence.

    `remembered` (llm/memo.RememberedFor): what the model wrote earlier for the same prompt is
    used without asking it again (even with `llm` None: a busy model's earlier work is still its
    work); what it writes now to the end is remembered. `quota`: at most this many prompts go to
    the model (a busy model's share); the others get the evidence sentence (`fallback`, by item id,
    when the caller has made them: `evidence_reasons`). A prompt that a concurrent turn is having
    the model write is not asked again: its text is awaited, up to `wait_s` seconds after this
    turn's own reasons (even when the busy model granted this turn none), then checked as ours.

    The template's `output.form` says what the model writes: the whole sentence ("sentence"), or
    a phrase on what the item is about ("hook", the embedded model's template), which
    `hook_reason` joins with the strongest evidence fact. Either way the final sentence is
    checked, and an evidence sentence replaces it if it invents anything. A template may use any
    of the values offered: item, about, facts, request, language.
    """
    llm_ok = llm is not None
    fallback = evidence_reasons(candidates, language) if fallback is None else fallback
    template = prompts.get("reason") if llm_ok or remembered is not None else None
    if template is None:
        for candidate in candidates:
            yield ReasonChunk(candidate.item.id, None, fallback[candidate.item.id], "evidence")
        return
    hook_form = template.output.form == "hook"
    batch_categories = {cat for c in candidates for cat in c.item.categories}
    max_tokens, stops = reason_limits(template)
    about_item_only = item_only(template)  # else the prompt holds the user's words: kept (and looked up) in memory only

    def final(candidate: Candidate, prompt: str, text: str, failed: bool, failure: str | None = None,
              earlier: bool = False) -> ReasonChunk:
        """The checked reason; `failure` (said once a turn) is why the model could not write it."""
        item_id = candidate.item.id
        if not failed:
            reason, problems = judge_reason(text, candidate, template, known_titles, user_context, batch_categories, liked_titles, language)
        else:
            reason, problems = "", ["llm failed"]
        if problems:
            log.info("reason for %s rejected (%s): %r", item_id, "; ".join(problems), reason or text)
            return ReasonChunk(item_id, None, fallback[item_id], "evidence", failure, prompt, text,
                               tuple(problems), earlier)
        return ReasonChunk(item_id, None, reason, "llm", None, prompt, text, (), earlier)

    wait_until = time.monotonic() + wait_s
    jobs: list[tuple[Candidate, str]] = []
    words: list[str | None] = []  # per job: the words its generation may use (None: any)
    waiting: list[tuple[Candidate, str]] = []  # written by a concurrent turn now
    for candidate in candidates:
        if hook_form and nothing_to_sum_up(candidate.item):
            yield ReasonChunk(candidate.item.id, None, fallback[candidate.item.id], "evidence")
            continue
        asked_in = hook_language(candidate.item, language) if hook_form else language
        prompt = reason_prompt(template, candidate, user_context, asked_in)
        text = remembered.get(prompt, max_tokens, stops, stored=about_item_only) if remembered is not None else None
        if text is not None:
            yield final(candidate, prompt, text, False, earlier=True)
        elif remembered is not None and remembered.flying(prompt, max_tokens, stops):
            waiting.append((candidate, prompt))
        elif llm_ok and (quota is None or len(jobs) < quota):
            if remembered is None or remembered.claim(prompt, max_tokens, stops):
                jobs.append((candidate, prompt))
                words.append(reason_words(template, candidate, user_context, asked_in))
            else:  # claimed by another turn since flying() looked
                waiting.append((candidate, prompt))
        else:
            yield ReasonChunk(candidate.item.id, None, fallback[candidate.item.id], "evidence")
    released: set[int] = set()

    def release(index: int, text: str | None) -> None:
        """Job `index`'s generation ended (None: unfinished): remembered, and its waiters woken."""
        if remembered is not None and index not in released:
            released.add(index)
            whole = text if text is not None and len(text) <= MAX_REASON_CHARS else None
            remembered.release(jobs[index][1], max_tokens, stops, whole, keep_stored=about_item_only)

    try:
        yield from _written(llm, jobs, final, release, max_tokens, stops, mark_cut=hook_form, words=words, until=until)
    finally:
        for index in range(len(jobs)):  # failed, or the caller stopped reading: the waiters must not wait on
            release(index, None)
    for candidate, prompt in waiting:
        text = remembered.wait(prompt, max_tokens, stops, wait_until - time.monotonic(), stored=about_item_only)
        if text is not None:
            yield final(candidate, prompt, text, False, earlier=True)
        else:
            yield ReasonChunk(candidate.item.id, None, fallback[candidate.item.id], "evidence")


def _written(llm, jobs, final, release, max_tokens: int, stops, mark_cut: bool = False,
             words: Sequence[str | None] = (), until: float | None = None) -> Iterator[ReasonChunk]:
    """The model's reasons for `jobs` ((candidate, prompt) pairs): streamed pieces, then each one's
    final chunk (`final`); `release(index, text)` as each generation ends. `mark_cut`: a text the
    model wrote to max_tokens ends with CUT_MARK (hooks). `words`: per job, the words its
    generation may use (a model that `writes_given_words` is held to them; None: any).
    `until` (time.monotonic()): the turn's time ends then; the batch stops, a hook still being
    written keeps its whole clauses (as at max_tokens, not remembered), the rest get the evidence
    (their final chunk says OUT_OF_TIME)."""
    if not jobs:
        return
    llm_ok = llm is not None

    def ended(text: str) -> str:
        return marked_if_cut(llm, text, max_tokens) if mark_cut else text

    held = getattr(llm, "writes_given_words", False) and any(words)
    if getattr(llm, "supports_batch", False) and (len(jobs) > 1 or held):
        # One decode for all of them: each step writes a token of every reason (llm.stream_many).
        texts = [""] * len(jobs)
        done: set[int] = set()
        failure = None
        late = False
        try:
            extra = {"words": list(words)} if held else {}
            pieces = llm.stream_many([prompt for _, prompt in jobs], max_tokens=max_tokens, stop=stops, **extra)
            try:
                for index, piece in pieces:
                    candidate, prompt = jobs[index]
                    if piece is None:
                        done.add(index)
                        texts[index] = ended(texts[index])
                        release(index, texts[index])
                        yield final(candidate, prompt, texts[index], False)
                    elif len(texts[index]) <= MAX_REASON_CHARS:
                        texts[index] += piece
                        yield ReasonChunk(candidate.item.id, piece, None, "llm")
                    if until is not None and len(done) < len(jobs) and time.monotonic() > until:
                        late = True
                        break
            finally:
                pieces.close()  # stopping early must end the generation now
        except Exception as exc:  # the backend failed: the rest come from the evidence
            log.warning("LLM reasons failed, using evidence reasons: %s", exc)
            failure = f"{type(exc).__name__}: {exc}"
        for index, (candidate, prompt) in enumerate(jobs):
            if index in done:
                continue
            if late and mark_cut and texts[index].strip():
                kept = final(candidate, prompt, texts[index] + CUT_MARK, False)  # its whole clauses, if any
                if kept.source == "llm":
                    yield kept
                    continue
            if late:
                yield final(candidate, prompt, texts[index], True, OUT_OF_TIME)
            else:
                yield final(candidate, prompt, texts[index], True, failure)
                failure = None  # one notice is enough
        return
    for index, (candidate, prompt) in enumerate(jobs):
        text = ""
        failure = None
        failed = not llm_ok
        if llm_ok:
            try:
                pieces = llm.stream(prompt, max_tokens=max_tokens, stop=stops)
                for piece in _until_stop(pieces, stops, MAX_REASON_CHARS):
                    text += piece
                    yield ReasonChunk(candidate.item.id, piece, None, "llm")
                text = ended(text)
                release(index, text)
            except Exception as exc:  # the backend failed: stop asking it this turn, keep answering
                log.warning("LLM reason failed, using evidence reasons: %s", exc)
                llm_ok, failed = False, True
                failure = f"{type(exc).__name__}: {exc}"
        yield final(candidate, prompt, text, failed, failure)


# Summaries ------------------------------------------------------------------------------------




def _generate_checked(llm, template, values: dict, allowed_texts, allowed_titles, known_titles, years, min_overlap=0.5) -> str | None:
    """One generation with the template's limits, cleaned and checked; None if it fails either."""
    stops = template.output.stop or ["\n"]
    try:
        pieces = llm.stream(template.render(**values), max_tokens=template.output.max_tokens, stop=stops)
        out = "".join(_until_stop(pieces, stops, MAX_REASON_CHARS * 2))
    except Exception as exc:
        log.warning("LLM summary failed, using the fallback: %s", exc)
        return None
    text = clean_generated(out)
    if copies_example(text, template, allowed_texts):
        log.info("summary rejected (it repeats the template's example): %r", text)
        return None
    problems = grounding_problems(
        text,
        allowed_texts=allowed_texts,
        allowed_titles=allowed_titles,
        known_titles=known_titles,
        years=years,
        min_overlap=min_overlap,
    )
    if problems:
        log.info("summary rejected (%s): %r", "; ".join(problems), text)
        return None
    return text


def summarize_list(llm, prompts, cards: Sequence, language: str = "en", request: str = "", known_titles: Collection[str] = ()) -> str:
    """One sentence about the shown list; an evidence-only sentence when there is no LLM or it strays."""
    items = [card_item(c) for c in cards]
    if llm is None or not items:
        return evidence_summary(items, language)
    template = prompts.get("summary")
    values = {"items": [item_line(it) for it in items], "request": request, "language": language_name(language)}
    allowed = [item_line(it) for it in items] + [request, str(len(items))]
    text = _generate_checked(llm, template, values, allowed, [it.title for it in items], known_titles, [it.year for it in items])
    return text or evidence_summary(items, language)


def summarize_item(llm, prompts, item: Item, language: str = "en", known_titles: Collection[str] = ()) -> str:
    """Two sentences about one item from its own description; falls back to that description."""
    if llm is not None:
        template = prompts.get("item_summary")
        values = {"item": item_line(item), "text": item.text, "language": language_name(language)}
        allowed = [item_line(item), item.text, " ".join(item.tags)]
        text = _generate_checked(llm, template, values, allowed, [item.title], known_titles, [item.year])
        if text:
            return text
    if item.text:
        return clean_generated(item.text, max_sentences=2)
    line = item_line(item)
    return f"{line}。" if is_chinese(language) else f"{line}."
