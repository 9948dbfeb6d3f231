"""HTML for recommendation cards, the profile panel and the chat text; pure functions, no gradio.

Everything from the catalog or the model is escaped: titles and reasons are data, not markup.
"""

from __future__ import annotations

from html import escape

from assistant.replies import year_text

FEEDBACK_LABELS = {"like": "Liked", "dislike": "Disliked", "not_interested": "Not interested", "seen": "Seen"}

CSS = """
#status-line { font-size: 0.85rem; opacity: 0.8; }
#turn-status { min-height: 1.6em; font-size: 0.88rem; opacity: 0.85; }
.rc-spinner { display: inline-block; width: 0.8em; height: 0.8em; margin-right: 6px; vertical-align: -1px;
  border-width: 2px !important; border-style: solid !important; border-radius: 50%;
  border-color: #6366f1 transparent #6366f1 #6366f1 !important; animation: rc-spin 0.8s linear infinite; }
@keyframes rc-spin { to { transform: rotate(360deg); } }
.rc-slot { border: 1px solid var(--border-color-primary); border-radius: 10px; padding: 10px 12px 8px !important;
  background: var(--background-fill-primary); gap: 6px !important; }
.rc-slot:has(.rc-like) { border-color: #16a34a; box-shadow: inset 3px 0 0 #16a34a; }
.rc-card.rc-pending { opacity: 0.75; }
.rc-card.rc-dislike, .rc-card.rc-not_interested { opacity: 0.55; }
.rc-head { display: flex; align-items: baseline; gap: 8px; }
.rc-rank { font-weight: 700; color: var(--color-accent); min-width: 1.2em; }
.rc-title { font-weight: 650; font-size: 1.02rem; flex: 1; }
.rc-badge { font-size: 0.72rem; padding: 1px 8px; border-radius: 999px; background: var(--color-accent-soft);
  white-space: nowrap; }
.rc-meta { font-size: 0.82rem; opacity: 0.75; margin: 2px 0 6px 1.9em; }
.rc-reason { margin-left: 1.9em; line-height: 1.4; }
.rc-reason.rc-writing::after { content: " \\258D"; animation: rc-blink 1s steps(2) infinite; }
@keyframes rc-blink { 50% { opacity: 0; } }
.rc-evidence { margin: 6px 0 0 1.9em; font-size: 0.82rem; }
.rc-evidence summary { cursor: pointer; opacity: 0.75; }
.rc-evidence ul { margin: 4px 0 0 1em; padding: 0; }
.rc-slot .rc-buttons { gap: 6px; margin-left: 1.9em; }
.rc-slot .rc-buttons button { font-size: 0.78rem; padding: 2px 10px; }
.rc-chips { display: flex; flex-wrap: wrap; gap: 4px; margin: 4px 0; }
.rc-chip { font-size: 0.78rem; padding: 1px 8px; border-radius: 999px; background: var(--color-accent-soft); }
.rc-chip.rc-neg { background: var(--background-fill-secondary); text-decoration: line-through; }
.rc-profile p { margin: 4px 0; font-size: 0.88rem; }
.rc-empty { opacity: 0.6; font-size: 0.9rem; padding: 8px 0; }
.lab-pre { white-space: pre-wrap; font-family: var(--font-mono); font-size: 0.8rem; max-height: 360px;
  overflow: auto; background: var(--background-fill-secondary); padding: 8px; border-radius: 6px; }
.lab-pane { padding-top: 30px !important; }
.lab-error { color: var(--error-text-color, #b91c1c); }
"""


def card_html(card: dict, rank: int, *, pending: bool = False, writing: bool = False, feedback: str = "") -> str:
    """One card: title, year, creator, categories, the reason, the evidence in a <details>."""
    classes = ["rc-card"]
    if pending:
        classes.append("rc-pending")
    if feedback:
        classes.append(f"rc-{feedback}")
    meta = " · ".join(
        escape(str(x)) for x in (year_text(card.get("year")), card.get("creator"), ", ".join(card.get("categories") or [])) if x
    )
    badge = ""
    if feedback:
        label = FEEDBACK_LABELS.get(feedback, feedback)
        badge = f'<span class="rc-badge" data-feedback="{escape(feedback)}">{escape(label)}</span>'
    elif pending:
        badge = '<span class="rc-badge">ranking…</span>'
    reason = card.get("reason") or ""
    reason_cls = "rc-reason rc-writing" if writing else "rc-reason"
    return (
        f'<div class="{" ".join(classes)}" data-item-id="{escape(str(card.get("item_id", "")))}">'
        f'<div class="rc-head"><span class="rc-rank">{rank}</span>'
        f'<span class="rc-title">{escape(str(card.get("title", "")))}</span>{badge}</div>'
        + (f'<div class="rc-meta">{meta}</div>' if meta else "")
        + (f'<div class="{reason_cls}">{escape(reason)}</div>' if reason or writing else "")
        + evidence_html(card.get("evidence") or {})
        + "</div>"
    )


def evidence_html(evidence: dict) -> str:
    """The retrieval evidence behind a card, folded away in a <details>."""
    rows = []
    for near in evidence.get("near_history") or []:
        title, similarity = escape(str(near.get("title", ""))), float(near.get("similarity", 0))
        rows.append(f"close to <b>{title}</b> from your history ({similarity:.2f})")
    if evidence.get("matched_words"):
        rows.append("matches your words: " + escape(", ".join(map(str, evidence["matched_words"]))))
    if evidence.get("shared_categories"):
        rows.append("shares categories: " + escape(", ".join(map(str, evidence["shared_categories"]))))
    if evidence.get("shared_creators"):
        rows.append("by a creator you like: " + escape(", ".join(map(str, evidence["shared_creators"]))))
    signals = evidence.get("signals") or {}
    if signals:
        rows.append("signals: " + escape(", ".join(f"{k} {float(v):.2f}" for k, v in signals.items())))
    if not rows:
        return ""
    items = "".join(f"<li>{r}</li>" for r in rows)
    return f'<details class="rc-evidence"><summary>Evidence</summary><ul>{items}</ul></details>'


def profile_html(profile: dict | None) -> str:
    """The profile as the assistant sees it: summary, interest chips, dislikes, event count."""
    if not profile:
        return '<div class="rc-empty">Pick a user to see their profile.</div>'
    chips = "".join(
        f'<span class="rc-chip" title="weight {float(i.get("weight", 0)):.2f}">{escape(str(i.get("tag", "")))}</span>'
        for i in profile.get("interests") or []
    )
    dislikes = "".join(f'<span class="rc-chip rc-neg">{escape(str(d))}</span>' for d in profile.get("dislikes") or [])
    parts = [f"<p>{escape(profile.get('summary') or 'No summary yet.')}</p>"]
    parts.append(f'<div class="rc-chips">{chips}</div>' if chips else '<p class="rc-empty">No interests yet.</p>')
    if dislikes:
        parts.append(f'<div class="rc-chips">{dislikes}</div>')
    parts.append(f"<p style='opacity:.6'>{int(profile.get('events', 0))} events</p>")
    return f'<div class="rc-profile" id="profile-view-inner">{"".join(parts)}</div>'


def status_html(info: dict) -> str:
    """The status line: LLM backend and model, embedding model, catalog size, the demo loaded."""
    llm = f"{info.get('llm_backend', '?')} · {info.get('llm_model', '?')}"
    if info.get("llm_error"):
        llm += " (unavailable: answering from retrieval)"
    demo = f" &nbsp;|&nbsp; <span class='rc-demo'>demo: {escape(str(info['demo']))}</span>" if info.get("demo") else ""
    return (
        f"LLM: {escape(str(llm))} &nbsp;|&nbsp; embeddings: {escape(str(info.get('embedding_model', '?')))}"
        f" &nbsp;|&nbsp; catalog: {int(info.get('catalog_items') or 0):,} items, {int(info.get('users') or 0):,} users"
        f"{demo} &nbsp;|&nbsp; recassist {escape(str(info.get('version', '')))}"
    )


def turn_status_html(text: str, turn: int = 0, state: str = "idle") -> str:
    """The line under the chat: a spinner while the model works; data-turn/data-state for tests and scripts."""
    spinner = '<span class="rc-spinner"></span>' if state == "working" else ""
    return f'<div class="rc-status" data-turn="{turn}" data-state="{escape(state)}">{spinner}{escape(text)}</div>'


def chat_markdown(items: list[dict], text: str, notices: list[str], *, waiting: bool = False) -> str:
    """The assistant's chat bubble: notices, the numbered titles, then the summary or answer."""
    parts = [f"_{n}_" for n in notices]
    if items:
        parts.append(
            "\n".join(
                f"{i}. **{_md_escape(str(c.get('title', '')))}**" + (f" ({year_text(c['year'])})" if c.get("year") is not None else "")
                for i, c in enumerate(items, 1)
            )
        )
    if text:
        parts.append(text)
    if not parts:
        parts.append("…" if waiting else "(no answer)")
    return "\n\n".join(parts)


def _md_escape(text: str) -> str:
    """Keep catalog titles from being read as Markdown or HTML."""
    for ch in "\\`*_[]<>#|":
        text = text.replace(ch, "\\" + ch)
    return text
