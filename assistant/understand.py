"""Understanding a chat message: intent, constraints, references and linked catalog items.

The rule-based parser always works (any model, no model); an LLM with structured output may
refine it, but the rules stay the fallback and own references and title linking.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Callable

from assistant.vocabulary import CatalogVocabulary


INTENTS = ("recommend", "refine", "why", "about_item", "feedback", "smalltalk")


@dataclass
class Understanding:
    """What one message asks for. Constraints are deltas to merge into the conversation's."""

    intent: str = "recommend"
    query: str = ""
    categories: list[str] = field(default_factory=list)
    exclude_categories: list[str] = field(default_factory=list)
    prefer_categories: list[str] = field(default_factory=list)  # named while talking about taste: a preference, no filter
    creators: list[str] = field(default_factory=list)
    exclude_creators: list[str] = field(default_factory=list)
    exclude_terms: list[str] = field(default_factory=list)  # "no vampires": not a category, a word to avoid
    year_min: int | None = None
    year_max: int | None = None
    era: str = ""  # "old" / "new": "I like old movies", "any new releases?" (a preference, relative to the catalog)
    older: bool = False  # "older ones": relative to the last list
    newer: bool = False
    shorter: bool = False
    more_like: bool = False  # "more like the second one": the reference becomes a seed
    others: bool = False  # "something else", "换一批": nothing shown before in this session
    reference: int | None = None  # 0-based index into the list shown last
    item_ids: list[str] = field(default_factory=list)  # catalog items named in the message
    mentions: list[dict] = field(default_factory=list)  # each named title: item_ids (with twins), text, stance
    feedback: str | None = None  # like, dislike, seen, not_interested
    greeting: bool = False  # the message only greets ("Hi! How are you?"): a conversation's opener
    acknowledgement: bool = False  # it only acknowledges ("thanks, I'll check it out"): the list in view stays
    language: str = "en"

    def to_dict(self) -> dict:
        return asdict(self)



# --- the rules ------------------------------------------------------------------------------

_ORDINALS = {
    "first": 0, "1st": 0, "second": 1, "2nd": 1, "third": 2, "3rd": 2, "fourth": 3, "4th": 3,
    "fifth": 4, "5th": 4, "sixth": 5, "last": -1, "top": 0,
    "第一": 0, "第二": 1, "第三": 2, "第四": 3, "第五": 4, "最后": -1,
    "一": 0, "二": 1, "三": 2, "四": 3, "五": 4,
}
_ORDINAL_RE = re.compile(
    r"\b(first|1st|second|2nd|third|3rd|fourth|4th|fifth|5th|sixth|last|top)\s+(one|item|book|film|movie|title|pick|suggestion|recommendation)?"
    r"|(?:#|number\s+|no\.\s*)(\d{1,2})\b"
    r"|(第[一二三四五]|最后)\s*[个本部项]?"
)
_NEGATION = re.compile(
    r"(?:\bno\b|\bnot\b|\bwithout\b|\bexcept\b|\bavoid\b|\bhated?\b|\bdisliked?\b|\bdon'?t\s+(?:want|like|show)\b|\bnothing\b|\bskip\b|\bless\b|\bstop\b|不要|别|不想|没有|除了)"
)
_NOT_BY_THAT = re.compile(r"not\s+(?:by\s+)?(?:that|this|the same)\s+(?:author|writer|director|creator|one)|不要这个作者|换个作者")
_BY_CREATOR = re.compile(r"\b(?:by|from|written by|directed by)\s+([A-Z][\w.'-]+(?:\s+[A-Z][\w.'-]+){0,3})")

_FEEDBACK_RULES: list[tuple[re.Pattern, str]] = [
    (re.compile(r"\b(?:i'?ve|i have|already)\s+(?:already\s+)?(?:seen|read|watched|finished)\b|\balready (?:seen|read|watched)\b|看过|读过|已经看"), "seen"),
    (re.compile(r"\bnot interested\b|\bnot for me\b|不感兴趣"), "not_interested"),
    (re.compile(r"\b(?:hated?|disliked?|didn'?t like|did not like|boring|awful|terrible)\b|不喜欢|讨厌"), "dislike"),
    (re.compile(r"\b(?:loved?|liked|adored?|enjoyed|favou?rite|amazing|great)\b|喜欢|太棒|很好看|爱"), "like"),
]
_WHY = re.compile(r"\bwhy\b|\bhow come\b|\breasons?\s+(?:for|why|behind|you)\b|\bany reason\b|\bwhat(?:'s| is| was) the reason\b|为什么|为何|理由")
# "I don't know why but I like old movies", "that's why I loved it": a why that asks nothing.
_WHY_TOLD = re.compile(r"\b(?:know|knows|knew|see|understand|wonder|idea|sure|that's|thats|this is|that is|explains?)\s+why\b|不知道为什么")
_ABOUT = re.compile(r"\b(?:tell me (?:more )?about|what(?:'s| is) .{1,60} about|more about|describe|summary of|summari[sz]e|plot of)\b|介绍一下|讲什么|是关于什么")
# "Can you tell me about other funny movies?" asks for items, not about one.
_ABOUT_KINDS = re.compile(r"\babout\s+(?:[\w'-]+\s+){0,3}(?:movies|films|books|shows|series|ones|titles|options|novels|recommendations|suggestions)\b")
_SENTENCE_ENDS = re.compile(r"[.!?\n。！？]+")
_SENTENCE = re.compile(r"[^.!?\n。！？]+" + "(?:" + _SENTENCE_ENDS.pattern + ")?")  # one sentence with its end
_MORE_LIKE = re.compile(r"\b(?:more|others?|something|anything|books?|films?|movies?|titles?|stuff)\s+(?:\w+\s+){0,2}(?:like|similar to)\b|\blike that\b|\bsimilar\b|类似|像.{0,12}(?:一样|那样|的)")
# "Classic." or "it's a classic" praises a film; "more classic ones" asks for older ones ("classics"
# alone is an era, _ERA_OLD).
_OLDER = re.compile(r"\bolder\b|\bmore classic\b|\bclassic ones\b|\bearlier\b|\bless recent\b|更老|更早|老一点|老一些|年代久")
_NEWER = re.compile(r"\bnewer\b|\bmore recent\b|\brecent\b|\bmodern\b|\blater\b|更新|新一点|新一些|近一点")
# An era wanted in absolute terms (no list needed): a preference for the catalog's oldest or newest.
# "the old one" names a work, and "new ones" asks for others: neither is an era.
_ERA_OLD = re.compile(
    r"\b(?:old|older|classic|vintage|old[- ]school)\s+(?:movies|films|books|novels|stuff|titles|shows|music|songs)\b"
    r"|\bclassics\b|\boldies\b|\bgolden age\b|老电影|老片|老书|经典老|老歌")
_ERA_NEW = re.compile(
    r"\b(?:new|newer|recent|latest|current)\s+(?:movies|films|books|novels|stuff|titles|shows|music|songs|releases?)\b"
    r"|\bnew releases?\b|\bjust (?:came|come) out\b|\bin theaters? now\b|新片|新电影|新书|最新|新上映|新出的|近几年")
_SHORTER = re.compile(r"\bshort(?:er)?\b|\bquick(?:er)?\b|\blight(?:er)? read\b|更短|短一点|短一些|短的")
_SMALLTALK = re.compile(
    r"^\s*(?:hi|hello|hey|yo|thanks?|thank you|ok(?:ay)?|cool|bye|good (?:morning|evening|night)|how are you|who are you|what can you do|你好|谢谢|再见|您好)\b[\W_]*$"
    r"|\b(?:weather|joke|capital of|stock price|bitcoin|president|football score|recipe)\b|天气|笑话"
)
# Greetings and pleasantries. A clause made of them asks for nothing ("Hi! How are you?", "hey
# there", "good evening, I'm fine thanks"), so its words are no request; a message made of them
# alone, with a hello among them, is a greeting (ReDial's seekers open most dialogs so, and "hi how
# are you" searched the catalog for those words).
_HELLO = (
    r"(?:hi+|hello+|hey+|hiya|howdy|greetings|yo|hallo|ello|heya)(?:\s+(?:there|again|all|everyone|friend|buddy))?"
    r"|good\s+(?:morning|afternoon|evening|night|day)"
    r"|how(?:'?s|\s+is)\s+(?:it\s+going|everything|your\s+(?:day|evening|night|morning|weekend))"
    r"|how\s+(?:are|r)\s+(?:you|u|ya)(?:\s+doing)?(?:\s+(?:today|tonight|this\s+(?:morning|afternoon|evening)))?"
    r"|how\s+(?:have\s+you\s+been(?:\s+doing)?|do\s+you\s+do)|what'?s\s+up|sup"
)
_PLEASANTRY = (
    r"(?:it'?s\s+|it\s+was\s+|was\s+)?nice\s+(?:to\s+(?:meet|chat\s+with|talk\s+(?:to|with))|(?:chatting|talking)\s+(?:with|to))\s+you(?:\s+too)?"
    r"|(?:i'?m|i\s+am|im)\s+(?:good|fine|great|well|ok(?:ay)?|doing\s+(?:well|good|great|fine|ok(?:ay)?))(?:\s+(?:thanks?|thank\s+you))?"
    r"|(?:and|how\s+about|what\s+about)\s+(?:you|u|yourself)|you"
    r"|(?:thanks?|thank\s+you)(?:\s+(?:for\s+asking|so\s+much))?|ok(?:ay)?|cool|fine|good|great|well|oh|so"
)
# Acknowledgements and goodbyes: a clause of them says nothing of what to look for ("okey dokey",
# "thanks for the info", "I'll check it out", "I haven't seen that one", "take it easy"); a
# message of them only is small talk, and the list in view stays.
_ACK = (
    r"(?:ha)+|lol|lmao|yes+|yeah|yep|yup|ya|sure|okey\s+dokey|alright|all\s+right|right|nice|awesome|perfect|wow|hmm+|ah+|uh+|um+"
    r"|sorry|no\s+(?:problem|worries)|my\s+bad|oops|good\s+night|good\s+bye|(?:good|nice|great)\s+job(?:\s+(?:on|with)\s+(?:the|your|those)\s+(?:suggestions?|picks?|recommendations?))?"
    r"|sounds?\s+(?:good|great|interesting|fun|awesome|cool)|that\s+sounds\s+(?:good|great|interesting|fun|awesome|cool)"
    r"|(?:thanks?|thank\s+you)(?:\s+(?:so\s+much|a\s+lot|again))?(?:\s+for\s+(?:the|your|all\s+the)\s+(?:info|information|help|suggestions?|recommendations?|recs?|picks?|advi[cs]e|ideas?|chat|time))?"
    r"|(?:good)?bye|see\s+(?:you|ya)|take\s+(?:care|it\s+easy)|have\s+a\s+(?:good|great|nice)\s+(?:one|day|night|evening|weekend)|you\s+too"
    r"|(?:i'?ll|i\s+will|i'?m\s+going\s+to|i\s+should|i\s+(?:may|might)|will)\s+(?:definitely\s+|have\s+to\s+|probably\s+)?"
    r"(?:check\s+(?:it|that|them|those)\s+out|look\s+(?:it|that|them)\s+up|look\s+at\s+the\s+reviews|watch\s+(?:it|that|them)|add\s+(?:it|that|them)\s+to\s+my\s+(?:list|watchlist))"
    r"|(?:i\s+)?(?:haven'?t|have\s+not|never|havent)\s+(?:even\s+)?(?:seen|heard\s+of|watched)\s+(?:that|it|this|them|those)(?:\s+(?:one|ones|either|yet|before))*"
    r"|(?:(?:it'?s|it\s+is|that'?s|that\s+is|such)\s+)?(?:a\s+)?(?:true\s+|real\s+|total\s+)?classic"
    r"|(?:i'?m|im|i\s+am)\s+sure\s+(?:it\s+is|it\s+was)|(?:that'?s|that\s+is|it'?s|it\s+is)\s+(?:a\s+)?(?:good|great|fine|ok(?:ay)?|true)(?:\s+one)?"
)
_ACK_CLAUSE = re.compile(rf"^(?:(?:{_ACK}|{_HELLO}|{_PLEASANTRY})(?:\s+|$))+$")
_GREETING_CLAUSE = re.compile(rf"^(?:(?:{_HELLO}|{_PLEASANTRY})(?:\s+|$))+$|^(?:你好|您好|嗨|哈喽|早上好|上午好|下午好|晚上好|你好吗|大家好)+$")
_THANKS_ONLY = re.compile(r"^(?:(?:thanks?|thank\s+you|so\s+much|ok(?:ay)?|cool|fine|good|great|well|oh|so|you)(?:\s+|$))+$")
_LEADING_HELLO = re.compile(rf"^\s*(?:(?:{_HELLO})\s+)+(?=\w)", re.IGNORECASE)
# Where a clause ends for the constraint and request readers (a spaced dash too: "I like
# thrillers - not slashers"); _CLAUSES, for what asks for nothing, also ends one at ":", "~", "…".
_CLAUSE_BREAK = r"[,.;!?\n，。；！？]|\s[-–—]+\s|\bbut\b"
_CLAUSES = re.compile(r"[,.;:!?\n，。；：！？~…]+|\s[-–—]+\s|\bbut\b")


def _words_of(clause: str) -> str:
    """A clause lower-cased, its punctuation gone and spaces single: what the clause patterns read."""
    return " ".join(re.sub(r"[^\w'\s]", " ", clause.lower()).split())


def _clauses_of(text: str) -> list[str]:
    """The message's clauses as _words_of reads them; ":)" is no clause."""
    return [_words_of(c) for c in _CLAUSES.split(text) if re.search(r"\w", c)]


def _is_greeting(words: str) -> bool:
    """A clause (as _words_of reads it) of greetings and pleasantries only ("hey there", "how are you doing today")."""
    return bool(words) and bool(_GREETING_CLAUSE.match(words))


def _says_nothing(words: str) -> bool:
    """A clause (as _words_of reads it) of greetings, pleasantries and acknowledgements only: no words of a request."""
    return _is_greeting(words) or (bool(words) and bool(_ACK_CLAUSE.match(words)))


def _only_acknowledges(text: str) -> bool:
    """Every clause greets or acknowledges: "okey dokey", "Thanks for the info!", "haha yes"."""
    clauses = _clauses_of(text)
    return bool(clauses) and all(_says_nothing(c) for c in clauses)


def _only_greets(text: str) -> bool:
    """Every clause greets, and one does more than thank or agree: "Hi! How are you?", "Good
    evening", "I'm doing good, how about you?", "你好" (not "thanks" or "ok")."""
    clauses = _clauses_of(text)
    if not clauses or not all(_is_greeting(c) for c in clauses):
        return False
    return not all(_THANKS_ONLY.match(c) for c in clauses)


_RECOMMEND = re.compile(
    r"\b(?:recommend|suggest|suggestions?|something|anything|what should i|looking for|in the mood|want to (?:read|watch)|give me|show me|find me|any ideas|more)\b|推荐|想看|想读|来点|有没有"
)
# Asking for other items than those shown: only then is everything shown before left out (a
# reaction to the list, "I've seen the second one" or "no horror", keeps what still fits).
_OTHERS = re.compile(
    r"\b(?:others|other ones|something else|anything else|different ones|new ones|another (?:list|batch|set|few)"
    r"|(?:any|some|a few)\s+more|more (?:suggestions|recommendations|ideas|options|titles))\b|换一批|换一些|换几|(?<!特)别的|其他的|还有吗"
)
_FRESH_REQUEST = re.compile(r"\b(?:recommend|suggest|what should i|looking for|in the mood|want to (?:read|watch))\b|推荐")
_DECADE = re.compile(r"\b(1[5-9]\d0|20[0-2]0)s\b|(1[5-9]\d0|20[0-2]0)年代")
_YEAR_BEFORE = re.compile(r"\b(?:before|earlier than|older than|pre)[\s-]*(1[0-9]\d\d|20\d\d)\b|(1[0-9]\d\d|20\d\d)\s*年?(?:之前|以前)")
_YEAR_AFTER = re.compile(r"\b(?:after|since|newer than|later than|post)[\s-]*(1[0-9]\d\d|20\d\d)\b|(1[0-9]\d\d|20\d\d)\s*年?(?:之后|以后)")
_CENTURY = re.compile(r"\b(1[5-9]|2[01])(?:th|st)[\s-]century\b")
_CJK = re.compile(r"[\u4e00-\u9fff]")


def detect_language(text: str) -> str:
    """'zh' when the message is mostly Chinese, else 'en' (what reasons are written in)."""
    cjk = len(_CJK.findall(text))
    letters = len(re.findall(r"[A-Za-z]", text))
    return "zh" if cjk and cjk * 2 >= letters / 3 else "en"


def parse_message(message: str, vocab: CatalogVocabulary, has_last_list: bool = False) -> Understanding:
    """Rule-based understanding of one message; never fails."""
    text = message.strip()
    lowered = text.lower()
    u = Understanding(language=detect_language(text))
    mentions = vocab.find_mentions(text)
    u.item_ids = list(dict.fromkeys(m.item_id for m in mentions))
    u.mentions = [{"item_ids": list(m.item_ids), "text": m.text, "stance": m.stance} for m in mentions]
    untitled = text  # the message without the titles it names: their words are no request
    for m in reversed(mentions):
        untitled = untitled[: m.start] + " " + untitled[m.end :]
    remaining = untitled.lower()

    # "the second one", "#2", "第二本" point at a card (without a list in view the reply asks which);
    # a bare "first" does only while a list is in view: a new conversation's "I cried the first
    # time I saw it" names no card.
    match = _ORDINAL_RE.search(lowered)
    if match and not has_last_list and not (match.group(2) or match.group(3) or match.group(0)[-1:] in "个本部项"):
        match = None
    if match:
        word = match.group(1) or match.group(4)
        u.reference = int(match.group(3)) - 1 if match.group(3) else _ORDINALS.get(word.rstrip("个本部项"), None)
    elif has_last_list and not mentions and re.search(r"\b(?:it|this one|that one|this|that)\b|这本|那本|这部|那部|这个|那个", lowered):
        # (With a title named, "it" is that title: "I've heard great things about Blade, do you recommend it?")
        # "it", "this one": the first card; "that one" could be any of them ("I have seen that one,
        # I like it" asks which), so it points nowhere and the reply asks.
        pointed = re.search(r"\b(?:it|this one|this)\b|这", lowered) and not re.search(r"\bthat(?: one)?\b|那", lowered)
        u.reference = 0 if pointed else None

    _parse_constraints(text, remaining, vocab, u)
    u.others = bool(_OTHERS.search(lowered))

    feedback = next((kind for rule, kind in _FEEDBACK_RULES if rule.search(lowered)), None)
    # "I love horror novels" with a list in view says what they like, not which card: no feedback.
    names_taste = _has_constraint(u) or bool(u.era)
    asks_for_more = bool(_RECOMMEND.search(lowered) or _MORE_LIKE.search(lowered) or "?" in text)

    if _asked_last(text, mentions, _asks_why) and (u.reference is not None or u.item_ids or has_last_list):
        u.intent = "why"
    elif _asked_last(text, mentions, _asks_about) and (u.reference is not None or u.item_ids):
        u.intent = "about_item"
    elif feedback and (u.reference is not None or (has_last_list and not u.item_ids and not asks_for_more and not names_taste)) and not _MORE_LIKE.search(lowered):
        u.intent, u.feedback = "feedback", feedback
    elif feedback and u.item_ids:
        # "I loved The Matrix, anything like it?" is a signal AND a request.
        u.feedback = feedback
        u.intent = "recommend"
        u.more_like = True
    elif _MORE_LIKE.search(lowered) and (u.reference is not None or u.item_ids):
        u.intent, u.more_like = ("refine" if u.reference is not None else "recommend"), True
    elif _has_constraint(u) and has_last_list and not _FRESH_REQUEST.search(lowered):
        u.intent = "refine"
    elif not (_has_constraint(u) or u.item_ids or u.era) and (_SMALLTALK.search(lowered) or _only_acknowledges(text)):
        # (A message that only greets also only acknowledges: _ACK_CLAUSE holds the greetings.)
        u.intent, u.greeting = "smalltalk", _only_greets(text)
        u.acknowledgement = not u.greeting and _only_acknowledges(text)
    elif feedback and has_last_list and not names_taste:
        u.intent, u.feedback = "feedback", feedback
    else:
        u.intent = "recommend"
    u.query = _query_text(untitled, u)
    if u.categories and _talks_about_taste(untitled, mentions):
        # "I love musicals ... horror terrifies me ... any 90's comedies?": genres said along the way
        # are preferences; only a direct request ("something romantic") filters.
        u.prefer_categories, u.categories = u.categories, []
    return u


_TASTE = re.compile(r"\b(?:i|we)\s+(?:\w+\s+){0,2}(?:like|love|enjoy|prefer|adore)\b|\b(?:into|fan of|favou?rites?)\b|我(?:很|也|比较)?喜欢|爱看")


def _asks_why(sentence: str) -> bool:
    return bool(_WHY.search(sentence)) and not _WHY_TOLD.search(sentence)


def _asks_about(sentence: str) -> bool:
    return bool(_ABOUT.search(sentence)) and not _ABOUT_KINDS.search(sentence)


def _asked_last(text: str, mentions: list, asks: Callable[[str], bool]) -> bool:
    """Whether the message's last say is this question: a sentence asks it and nothing after it asks
    or tells more (another question, a request, a taste, a title). A message that holds a
    conversation so far ("What is it about? ... I like comedy") is answered on what it says last."""
    found = None
    for match in _SENTENCE.finditer(text):
        if asks(match.group(0).lower()):
            found = match
    if found is None:
        return False
    later = text[found.end():].lower()
    return not ("?" in later or "？" in later or _RECOMMEND.search(later) or _MORE_LIKE.search(later)
                or _TASTE.search(later) or any(m.start >= found.end() for m in mentions))


def _talks_about_taste(text: str, mentions: list) -> bool:
    """Several sentences, titles named, or "I like ...": talk about taste rather than one request."""
    sentences = [part for part in _SENTENCE_ENDS.split(text) if len(part.split()) >= 3 or len(_CJK.findall(part)) >= 4]
    return len(sentences) >= 2 or bool(mentions) or bool(_TASTE.search(text.lower()))


def _parse_constraints(text: str, remaining: str, vocab: CatalogVocabulary, u: Understanding) -> None:
    # Split on clause boundaries so "no horror, something romantic" negates only horror.
    for clause in re.split(_CLAUSE_BREAK + r"|\band\b|但是|而且", remaining):
        if not clause.strip():
            continue
        negated = bool(_NEGATION.search(clause.replace("有没有", "")))
        cats = vocab.find_categories(clause, subjects=not negated)
        creators = vocab.find_creators(clause)
        (u.exclude_categories if negated else u.categories).extend(c for c in cats if c not in u.categories + u.exclude_categories)
        (u.exclude_creators if negated else u.creators).extend(c for c in creators if c not in u.creators + u.exclude_creators)
        if negated and not cats and not creators:
            u.exclude_terms.extend(t for t in _avoided_terms(clause) if t not in u.exclude_terms)
    if _NOT_BY_THAT.search(text.lower()):
        u.exclude_creators.append("<last>")  # resolved against the referenced/last item by the agent
    if not u.creators and not _NEGATION.search(text.lower()):
        by = _BY_CREATOR.search(text)
        if by:
            u.creators.extend(vocab.find_creators(by.group(1)))
    low = text.lower()
    if (m := _DECADE.search(low)):
        decade = int(m.group(1) or m.group(2))
        u.year_min, u.year_max = decade, decade + 9
    if (m := _CENTURY.search(low)):
        century = int(m.group(1))
        u.year_min, u.year_max = (century - 1) * 100, (century - 1) * 100 + 99
    if (m := _YEAR_BEFORE.search(low)):
        u.year_max = int(m.group(1) or m.group(2)) - 1
    if (m := _YEAR_AFTER.search(low)):
        u.year_min = int(m.group(1) or m.group(2)) + 1
    if u.year_min is None and u.year_max is None:
        # Read without the titles named ("I loved Old School (2003)" says no era).
        wanted = " ".join(clause for clause in re.split(_CLAUSE_BREAK, remaining) if not _NEGATION.search(clause))
        u.era = "old" if _ERA_OLD.search(wanted) else "new" if _ERA_NEW.search(wanted) else ""
    u.older = bool(_OLDER.search(low)) and u.year_max is None
    u.newer = bool(_NEWER.search(low)) and u.year_min is None and not u.older
    u.shorter = bool(_SHORTER.search(low))


# Words that follow "no"/"not" without naming a subject to avoid ("not too long", "no more of those").
_NOT_A_SUBJECT = set(
    """about again all also anymore any anything are aren bit book books but can could did didn does doesn
    don else enough ever film films for from good great have interested it its just kind kinda know last less like
    liked long longer lot maybe more movie movies much new newer novel novels now old older one ones other please pick
    read really recent same see seen short shorter show so some something sort still stuff such sure than thanks that
    the them then there these they thing things this those too type very want watch watched way what which with
    would yet you your author writer director creator first second third fourth fifth
    picky fussy particular fan big huge sure certain believe i'm it's that's you're i've i'd he's she's they're
    we're can't won't isn't wasn't aren't really actually nah nope will be been being watching reading seeing
    fact havent haven't didn't don't doesn't think guess""".split()
)
_NEGATION_WORDS = re.compile(
    r"\b(?:no|not|without|except|avoid|hated?|disliked?|don'?t|do not|want|like|show|nothing|skip|less|stop|please|any|more)\b|不要|别|不想|没有|除了|了|的"
)


def _avoided_terms(clause: str) -> list[str]:
    """The subject of a negated clause that is no category or creator: "no vampires" -> vampires."""
    rest = _NEGATION_WORDS.sub(" ", clause.lower())
    if _CJK.search(rest):
        return [w for w in re.findall(r"[\u4e00-\u9fff]{2,6}", rest)][:2]
    if _ORDINAL_RE.search(rest):
        return []  # "not the second one" is about the list, not a subject
    terms = []
    for part in re.split(r"\b(?:or|and|nor)\b|/", rest):
        words = [w for w in re.findall(r"[^\W\d_][\w'-]*", part) if len(w) > 2 and w not in _NOT_A_SUBJECT]
        if words:
            terms.append(" ".join(words[:3]))
    return terms[:3]


def _has_constraint(u: Understanding) -> bool:
    return bool(
        u.categories or u.exclude_categories or u.creators or u.exclude_creators or u.exclude_terms
        or u.year_min is not None or u.year_max is not None or u.older or u.newer or u.shorter
    )


_FILLER = re.compile(
    r"\b(?:(?:for\s+)?the\s+first\s+time|first\s+of\s+all|at\s+first|please|can you|could you|would you|you can|you could|i want|i'd like|i would like|recommend|suggest|me|some|something|anything|"
    r"give|show|find|looking for|what should i (?:read|watch)|any|ideas|more|like|similar to|a|an|the|and|with|about|i|to|read|watch|"
    r"books?|novels?|films?|movies?|titles?|stuff|ones?|one)\b|我想看|我想读|我想要|我要看|我要读|想看点|想读点|关于|推荐|给我|帮我|一些|一本|一部|请|想看|想读|来点|来些|来一[本部点]|有没有|有什么|第一次",
)
# A kind word closing a Chinese clause says a book or a film, as "novel" and "movie" do above
# ("轻松的小说": the words to search for are 轻松); 的 closing a run of characters is a particle.
_ZH_KIND = re.compile(r"(?:[的本部])?(?:小说|书籍|书|作品|电影|片子)(?=\s|$)")
_ZH_DE = re.compile(r"(?<=[\u4e00-\u9fff])的(?=\s|$)")
_CJK_CHAR = re.compile(r"[\u4e00-\u9fff]")


def _query_text(text: str, u: Understanding) -> str:
    """What remains of the message as free-text interest (after fillers and negated parts)."""
    if u.intent in ("smalltalk", "feedback", "why", "about_item"):
        return ""  # "tell me about the third one" says nothing of what to look for
    kept = []
    for clause in re.split(_CLAUSE_BREAK, text):
        if _NEGATION.search(clause.lower().replace("有没有", "")):  # "有没有…" asks, it does not refuse
            continue
        if _says_nothing(_words_of(clause)):  # "Hi! How are you?", "thanks for the info" ask for nothing
            continue
        clause = _LEADING_HELLO.sub(" ", clause)  # "Hello I need a good comedy"
        kept.append(clause)
    query = " ".join(kept)
    query = _ERA_NEW.sub(" ", _ERA_OLD.sub(" ", query.lower()))  # an era is a preference, not a topic ("old movies")
    query = _FILLER.sub(" ", query)
    query = re.sub(r"(?<![\w'])'(?:m|re|ve|ll|d|s)\b", " ", query)  # what "i" leaves of "i'm", "i've"
    query = re.sub(r"(?<!\w)['\"‘’“”]+|['\"‘’“”]+(?!\w)", " ", query)  # quotes around a title taken out
    for said in (_SHORTER, _OLDER, _NEWER):  # constraints, not a topic ("要短一点的", "older ones")
        query = said.sub(" ", query)
    query = re.sub(r"(?<![\u4e00-\u9fff])(?:一点|什么|[点要些的了吧呢啊])+(?![\u4e00-\u9fff])", " ", query)  # particles left alone
    query = _ZH_DE.sub(" ", _ZH_KIND.sub(" ", " ".join(query.split())))
    query = re.sub(r"\s+", " ", query).strip(" -?!.")
    # Two Chinese characters are a word (轻松, 武侠); two Latin letters are not.
    return query if len(query) > 2 or len(_CJK_CHAR.findall(query)) >= 2 else ""


# --- merging into the conversation's state ------------------------------------------------

def merge_constraints(active: dict, u: Understanding, last_years: list[int]) -> dict:
    """Constraints in force after this message: earlier ones persist unless contradicted."""
    merged = {
        "categories": list(active.get("categories", [])),
        "exclude_categories": list(active.get("exclude_categories", [])),
        "creators": list(active.get("creators", [])),
        "exclude_creators": list(active.get("exclude_creators", [])),
        "exclude_terms": list(active.get("exclude_terms", [])),
        "year_min": active.get("year_min"),
        "year_max": active.get("year_max"),
        "shorter": active.get("shorter", False),
    }
    if u.intent == "recommend" and (u.categories or u.creators) and not u.more_like:
        # A fresh request for a kind of thing replaces the earlier kind, not the exclusions.
        merged["categories"], merged["creators"] = [], []
    elif u.intent == "recommend" and not u.more_like:
        # A new request that names no kind ("anything else?", "I haven't seen that"): the kind asked
        # for before is a preference now (planning), not a filter that outlives the request.
        merged["categories"] = []
    for cat in u.categories:
        if cat in merged["exclude_categories"]:
            merged["exclude_categories"].remove(cat)
        if cat not in merged["categories"]:
            merged["categories"].append(cat)
    for cat in u.exclude_categories:
        if cat in merged["categories"]:
            merged["categories"].remove(cat)
        if cat not in merged["exclude_categories"]:
            merged["exclude_categories"].append(cat)
    for name in u.creators:
        if name not in merged["creators"]:
            merged["creators"].append(name)
    for name in u.exclude_creators:
        if name in merged["creators"]:
            merged["creators"].remove(name)
        if name not in merged["exclude_creators"]:
            merged["exclude_creators"].append(name)
    for term in u.exclude_terms:
        if term not in merged["exclude_terms"]:
            merged["exclude_terms"].append(term)
    if u.year_min is not None or u.year_max is not None:
        merged["year_min"], merged["year_max"] = u.year_min, u.year_max
    years = sorted(y for y in last_years if y is not None)
    if u.older and years:
        merged["year_max"], merged["year_min"] = years[len(years) // 2] - 1, None
    if u.newer and years:
        merged["year_min"], merged["year_max"] = years[len(years) // 2] + 1, None
    if u.shorter:
        merged["shorter"] = True
    return merged


# --- structured LLM reading, merged over the rules --------------------------------------------

def understand_with_llm(llm, prompts, message: str, last_cards: list[dict], vocab: CatalogVocabulary, rules: Understanding) -> Understanding:
    """The model's JSON reading of the message, mapped onto the catalog and merged over the rules.

    The rules keep what they do best (linked titles, ordinal references); any failure of the
    model (error, invalid JSON, unknown intent) returns the rules' reading unchanged.
    """
    import json
    import logging
    from dataclasses import replace

    from assistant.llm import complete

    template = prompts.get("understand")
    last_list = [
        f"{i + 1}. {c['title']} ({c.get('year')}; {', '.join(c.get('categories') or [])})" for i, c in enumerate(last_cards)
    ]
    try:
        text = complete(
            llm,
            template.render(message=message, last_list=last_list),
            max_tokens=template.output.max_tokens,
            json_schema=template.output.json_schema,
        )
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("intent") not in INTENTS:
            raise ValueError(f"intent {data.get('intent') if isinstance(data, dict) else data!r} is not one of {INTENTS}")
    except Exception as exc:  # the model is an optional helper here: the rules always answer
        logging.getLogger(__name__).info("LLM understanding unusable, keeping the rules' reading: %s", exc)
        return rules

    def names(key: str, finder) -> list[str]:
        values = data.get(key) or []
        return finder(" , ".join(str(v) for v in values)) if isinstance(values, list) else []

    def year(key: str) -> int | None:
        value = data.get(key)
        return value if isinstance(value, int) and -3000 < value < 3000 else None

    merged = replace(rules, intent=data["intent"])
    merged.query = str(data.get("query") or rules.query)[:300]
    merged.categories = list(dict.fromkeys(rules.categories + names("categories", vocab.find_categories)))
    merged.exclude_categories = list(dict.fromkeys(rules.exclude_categories + names("exclude_categories", lambda text: vocab.find_categories(text, subjects=False))))
    # What the model wants excluded that is no category of this catalog is a word to avoid ("vampires").
    unmapped = [
        str(v).strip().lower() for v in (data.get("exclude_categories") or [])
        if isinstance(v, str) and 2 < len(v.strip()) <= 30 and not vocab.find_categories(v)
    ]
    merged.exclude_terms = list(dict.fromkeys(rules.exclude_terms + unmapped))[:5]
    merged.creators = list(dict.fromkeys(rules.creators + names("creators", vocab.find_creators)))
    merged.exclude_creators = list(dict.fromkeys(rules.exclude_creators + names("exclude_creators", vocab.find_creators)))
    merged.year_min = rules.year_min if rules.year_min is not None else year("year_min")
    merged.year_max = rules.year_max if rules.year_max is not None else year("year_max")
    reference = data.get("reference")
    if rules.reference is None and isinstance(reference, int) and 1 <= reference <= len(last_cards):
        merged.reference = reference - 1
    if data.get("feedback") in ("like", "dislike", "seen"):
        merged.feedback = data["feedback"]
    if str(data.get("language", "")).lower().startswith("zh"):
        merged.language = "zh"
    if (merged.intent == "feedback" and not merged.feedback) or (merged.intent in ("why", "about_item") and not (last_cards or rules.item_ids)):
        merged.intent = rules.intent  # feedback with no kind, or a question about no item, is not actionable
    return merged
