"""Write an evaluation's results: metrics.json (everything), report.md (for people) and PNG plots.

`results` is the plain dict the runner builds; this module only formats it, so a report can be
re-rendered from a saved metrics.json (`write(out, json.load(...))`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from evaluation import timeliness

GOAL = {"Recall@10": 0.18, "NDCG@10": 0.10}
REFERENCES = [  # protocol (a) on ml-latest-small, as published (LlamaRec, Yue et al. 2023)
    ("LlamaRec", 0.1524, 0.0759),
    ("LRURec", 0.1426, 0.0705),
    ("SASRec", 0.0993, 0.0522),
    ("BERT4Rec", 0.0785, 0.0366),
]
A_METRICS = ("Recall@10", "NDCG@10", "Recall@20", "NDCG@20", "MRR")
B_METRICS = ("NDCG@1", "NDCG@5", "NDCG@10")


def write(out: Path, results: dict, plots: bool = True) -> list[Path]:
    """Write metrics.json, report.md and (if matplotlib is installed) the plots; returns the paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "metrics.json", out / "report.md"]
    (out / "metrics.json").write_text(json.dumps(results, indent=2, sort_keys=False, default=_json_default) + "\n", encoding="utf-8")
    images = write_plots(out, results) if plots else []
    (out / "report.md").write_text(render_markdown(results, [p.name for p in images]), encoding="utf-8")
    return written + images


def _json_default(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "to_dict"):
        return value.to_dict()
    return str(value)


# Markdown -------------------------------------------------------------------------------------


def _ci(cell: dict | None) -> str:
    if not cell or cell.get("mean") is None or (isinstance(cell["mean"], float) and math.isnan(cell["mean"])):
        return "-"
    return f"{cell['mean']:.4f} [{cell['low']:.4f}, {cell['high']:.4f}]"


def _table(rows: list[list[str]], header: list[str]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _accuracy_table(block: dict, names: tuple[str, ...], info: dict) -> str:
    rows = []
    for variant, summary in block.items():
        users = summary.get("users", "")
        rows.append([f"`{variant}`", *(_ci(summary.get(m)) for m in names), str(users), info.get(variant, {}).get("path_short", "")])
    return _table(rows, ["variant", *names, "users", "path"])


def render_markdown(results: dict, images: list[str] = ()) -> str:
    meta = results.get("meta", {})
    info = results.get("variants", {})
    parts = [
        "# recassist offline evaluation",
        "",
        f"Command: `{meta.get('command', '')}`  ",
        f"Run: {meta.get('started', '')}, {meta.get('seconds', 0):.0f} s on {meta.get('machine', 'this machine')}; "
        f"seed {meta.get('seed')}; bootstrap: {meta.get('bootstrap', '')}.",
        "",
        "## Data and split",
        "",
        f"- Data: {meta.get('data', '')}",
        f"- Split: {meta.get('split', '')}",
        f"- Counts: " + ", ".join(f"{k} {v}" for k, v in results.get("split", {}).items()),
        f"- Users evaluated: {meta.get('users_evaluated')}; LLM stages on a fixed sample of "
        f"{meta.get('llm_users', 0)} of them (seeded, the same users for every LLM variant and both protocols).",
        "",
    ]
    a_test = results.get("protocol_a", {}).get("test", {})
    if a_test:
        parts += [
            "## Headline: protocol (a), full ranking, test item (mean [95% CI])",
            "",
            "Every catalog item the user has not interacted with is ranked; Recall@K = held-out item in the top K.",
            "",
            _accuracy_table(a_test, A_METRICS, info),
            "",
            _goal_line(a_test),
            "",
            "Published on the same data and protocol (LlamaRec paper): "
            + "; ".join(f"{n} {r:.4f} / {g:.4f}" for n, r, g in REFERENCES)
            + " (Recall@10 / NDCG@10).",
            "",
        ]
    paired = results.get("paired", {})
    if paired:
        rows = [[f"`{v}`", f"`{d['vs']}`", _ci(d.get("NDCG@10")), _ci(d.get("Recall@10")), str(d.get("users", ""))] for v, d in paired.items()]
        parts += ["### Paired differences (same users, resampled together)", "",
                  _table(rows, ["variant", "minus", "NDCG@10 diff", "Recall@10 diff", "users"]), ""]
    b_test = results.get("protocol_b", {}).get("test", {})
    if b_test:
        parts += [
            "## Protocol (b): held-out item + 19 random unseen items, test item",
            "",
            _accuracy_table(b_test, B_METRICS, info),
            "",
            "LLMRank on ML-1M (NDCG@10): popularity 0.5233, BPRMF 0.6429, SASRec 0.7889, ChatGPT zero-shot 0.43-0.46.",
            "",
        ]
    a_valid = results.get("protocol_a", {}).get("valid", {})
    if a_valid:
        parts += ["## Validation item (what the knobs were chosen on), protocol (a)", "",
                  _accuracy_table(a_valid, A_METRICS, info), ""]
    parts += _knobs_section(results.get("knobs", {}))
    parts += _beyond_section(results.get("beyond", {}))
    parts += timeliness.report_section(results.get("beyond", {}))
    parts += _llm_section(results.get("llm", {}))
    parts += _conversation_section(results.get("conversation", {}))
    parts += _latency_section(results.get("latency_ms", {}))
    if info:
        parts += ["## Variants", ""]
        for name, v in info.items():
            parts.append(f"- `{name}`: {v.get('description', '')} Path: {v.get('path', '')}.")
        parts.append("")
    notes = meta.get("notes", [])
    if notes:
        parts += ["## Method notes", ""] + [f"- {n}" for n in notes] + [""]
    if images:
        parts += ["## Plots", ""] + [f"![{Path(i).stem}]({i})" for i in images] + [""]
    return "\n".join(parts)


def _goal_line(a_test: dict) -> str:
    # Only variants measured on every evaluated user compete: a small sample's mean is too noisy.
    everyone = max((s.get("users", 0) for s in a_test.values()), default=0)
    full = {k: v for k, v in a_test.items() if v.get("users", 0) == everyone}
    best = max(full.items(), key=lambda kv: (kv[1].get("NDCG@10") or {}).get("mean", -1), default=None)
    if best is None:
        return ""
    name, summary = best
    got = {m: (summary.get(m) or {}).get("mean", float("nan")) for m in GOAL}
    met = all(got[m] >= GOAL[m] for m in GOAL)
    return (
        f"Goal (Recall@10 >= {GOAL['Recall@10']}, NDCG@10 >= {GOAL['NDCG@10']}): the best variant on all {everyone} users, `{name}`, reaches "
        f"{got['Recall@10']:.4f} / {got['NDCG@10']:.4f}: **{'met' if met else 'not met'}**."
    )


def _knobs_section(knobs: dict) -> list[str]:
    if not knobs:
        return []
    lines = ["## Chosen knobs (validation item only; the test item was never used to choose)", ""]
    for name, search in knobs.items():
        if isinstance(search, dict) and "best" in search:
            lines.append(f"- {name}: `{json.dumps(search['best'])}` (validation {search.get('objective', 'NDCG@10')} "
                         f"{search.get('best_score', float('nan')):.4f}, {len(search.get('tried', []))} settings tried)")
        else:
            lines.append(f"- {name}: `{json.dumps(search)}`")
    return lines + [""]


def _beyond_section(beyond: dict) -> list[str]:
    if not beyond:
        return []
    rows = [[f"`{v}`", f"{d.get('coverage', float('nan')):.4f}", _ci(d.get("diversity")), _ci(d.get("novelty")), str(d.get("users", ""))]
            for v, d in beyond.items()]
    return ["## Beyond accuracy: each user's top 10 on the test stage", "",
            "Coverage = share of the catalog in anyone's top 10; diversity = mean pairwise (1 - cosine) of the "
            "items' content vectors; novelty = mean -log2 p(item), p = (training users who had it + 1) / (users + 1).", "",
            "Coverage grows with the number of users, so compare it only between rows with the same user count.", "",
            _table(rows, ["variant", "coverage", "intra-list diversity", "novelty (bits)", "users"]), ""]


def _llm_section(llm: dict) -> list[str]:
    if not llm:
        return []
    if llm.get("skipped"):
        return ["## LLM ranking", "", f"Not run: {llm['skipped']}", ""]
    lines = ["## LLM ranking", "",
             f"- Backend: {llm.get('backend')} / model {llm.get('model')}; prompt variant `{llm.get('prompt_variant') or 'shipped'}`; "
             f"{llm.get('users')} users (fixed seeded sample); base candidates: `{llm.get('base')}` top {llm.get('depth')}.",
             f"- Blend weight chosen on the validation item (grid {llm.get('blend_grid')}): "
             + ", ".join(f"{k}: {v}" for k, v in llm.get("chosen_blend", {}).items()) + ".",
             ]
    chosen = llm.get("chosen_blend", {}).get("(a) llm")
    if chosen is not None:
        lines.append(f"- In the product: `RECASSIST_RANK_BLEND={chosen:g}` ranks as protocol (a)'s `llm` row does "
                     "(two orders, `rank_shuffles` 2); `auto` already applies the shipped choice for the embedded model.")
    validity = llm.get("validity", {})
    if validity:
        lines.append("- Validity of outputs: " + ", ".join(f"{k} {_fmt(v)}" for k, v in validity.items()) + ".")
    tokens = llm.get("tokens", {})
    if tokens:
        lines.append("- Tokens per rank prompt: " + ", ".join(f"{k} {_fmt(v)}" for k, v in tokens.items()) + ".")
    reasons = llm.get("reasons", {})
    if reasons:
        lines.append("- Reasons (assistant/explain.py): " + ", ".join(f"{k} {_fmt(v)}" for k, v in reasons.items()) + ".")
    return lines + [""]


def _conversation_section(conv: dict) -> list[str]:
    if not conv:
        return []
    if conv.get("skipped"):
        return ["## Conversational evaluation", "", f"Not run: {conv['skipped']}", ""]
    lines = ["## Conversational evaluation (scripted multi-turn sessions through the real Agent)", "",
             f"- Sessions: {conv.get('sessions')}, turns checked: {conv.get('turns')}; backend {conv.get('backend')}.",
             f"- Turns whose answer respects every constraint and feedback so far: {_ci(conv.get('respecting'))}.",
             ]
    for check, cell in conv.get("by_check", {}).items():
        lines.append(f"  - {check}: {_ci(cell)}")
    script = conv.get("script")
    if script:
        lines.append("- Script: " + " -> ".join(f"\"{s}\"" for s in script))
    reasons = conv.get("reasons", {})
    if reasons.get("total"):
        lines.append(f"- Reasons: {reasons['total']} shown; written by the LLM and kept after the evidence check: "
                     f"{reasons['llm_kept']} ({_fmt(reasons.get('llm_share'))}); built from evidence (LLM off, failed the check "
                     f"or timed out): {reasons['evidence']}.")
    summaries = conv.get("summaries", {})
    if summaries.get("total"):
        lines.append(f"- Summaries (asked of the LLM on every turn here, whatever `llm_summary` says): {summaries['total']}; "
                     f"written by the LLM and kept after the check: {summaries['llm_kept']}; the rest built from the cards.")
    if conv.get("tokens_per_turn_mean") is not None:
        lines.append(f"- LLM tokens per turn (mean, as DoneEvent.tokens reports): {conv['tokens_per_turn_mean']:.0f}.")
    latency = conv.get("latency_ms", {})
    if latency:
        lines.append("- Turn stages (ms, p50/p95): " + ", ".join(f"{k} {v['p50']:.0f}/{v['p95']:.0f}" for k, v in latency.items()))
    return lines + [""]


def _latency_section(latency: dict) -> list[str]:
    if not latency:
        return []
    rows = [[f"`{k}`", f"{v.get('p50', float('nan')):.2f}", f"{v.get('p95', float('nan')):.2f}", v.get("note", "")] for k, v in latency.items()]
    return ["## Latency per stage (ms per user)", "", _table(rows, ["stage", "p50", "p95", "note"]), ""]


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


# Plots ----------------------------------------------------------------------------------------


def write_plots(out: Path, results: dict) -> list[Path]:
    """Bar charts with CI whiskers; returns [] when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    written: list[Path] = []
    a_test = results.get("protocol_a", {}).get("test", {})
    if a_test:
        written.append(_bars(plt, out / "protocol_a.png", a_test, ("Recall@10", "NDCG@10", "Recall@20", "NDCG@20"),
                             "Protocol (a): full ranking, test item (95% CI)", goal=GOAL))
    b_test = results.get("protocol_b", {}).get("test", {})
    if b_test:
        written.append(_bars(plt, out / "protocol_b.png", b_test, B_METRICS, "Protocol (b): 1 + 19 sampled, test item (95% CI)"))
    beyond = results.get("beyond", {})
    if beyond:
        written.append(_beyond_plot(plt, out / "beyond_accuracy.png", beyond))
    curve = results.get("llm", {}).get("blend_curve", {})
    if curve:
        written.append(_curve_plot(plt, out / "llm_blend.png", curve))
    return written


def _bars(plt, path: Path, block: dict, names, title: str, goal: dict | None = None) -> Path:
    variants = list(block)
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 0.45 * len(variants) + 1.6), sharey=True)
    axes = list(axes) if len(names) > 1 else [axes]
    for ax, metric in zip(axes, names):
        means, lows, highs = [], [], []
        for v in variants:
            cell = block[v].get(metric) or {"mean": 0.0, "low": 0.0, "high": 0.0}
            means.append(cell["mean"])
            lows.append(cell["mean"] - cell["low"])
            highs.append(cell["high"] - cell["mean"])
        ax.barh(range(len(variants)), means, xerr=[lows, highs], color="#4C72B0", ecolor="#333333", capsize=3)
        if goal and metric in goal:
            ax.axvline(goal[metric], color="#C44E52", linestyle="--", linewidth=1, label="goal")
        ax.set_title(metric, fontsize=10)
        ax.set_yticks(range(len(variants)))
        ax.set_yticklabels(variants, fontsize=8)
        ax.invert_yaxis()
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _beyond_plot(plt, path: Path, beyond: dict) -> Path:
    variants = list(beyond)
    fig, axes = plt.subplots(1, 3, figsize=(10, 0.45 * len(variants) + 1.6), sharey=True)
    series = [
        ("coverage", [beyond[v].get("coverage", 0.0) for v in variants]),
        ("intra-list diversity", [(beyond[v].get("diversity") or {}).get("mean", 0.0) for v in variants]),
        ("novelty (bits)", [(beyond[v].get("novelty") or {}).get("mean", 0.0) for v in variants]),
    ]
    for ax, (title, values) in zip(axes, series):
        ax.barh(range(len(variants)), values, color="#55A868")
        ax.set_title(title, fontsize=10)
        ax.set_yticks(range(len(variants)))
        ax.set_yticklabels(variants, fontsize=8)
        ax.invert_yaxis()
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle("Top-10 lists on the test stage", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _curve_plot(plt, path: Path, curve: dict) -> Path:
    protocols_seen = sorted({label.split(")")[0] + ")" for label in curve})
    fig, axes = plt.subplots(1, len(protocols_seen), figsize=(5 * len(protocols_seen), 3.6), squeeze=False)
    for ax, protocol in zip(axes[0], protocols_seen):
        for label, points in curve.items():
            if not label.startswith(protocol):
                continue
            ax.plot([p["blend"] for p in points], [p["NDCG@10"] for p in points], marker="o", label=label)
        ax.set_xlabel("LLM blend weight (0 = retrieval order, 1 = LLM only)")
        ax.set_ylabel("validation NDCG@10")
        ax.set_title(f"protocol {protocol}", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Choosing the LLM blend on the validation item", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
