"""The dialog protocol's report: metrics.json (everything, one line per case) and report.md (for people)."""

from __future__ import annotations

import json
from pathlib import Path

from evaluation.report import _ci, _json_default, _table

METRICS = ("Recall@1", "Recall@10", "Recall@20", "Recall@50", "NDCG@10", "MRR")
REFERENCES = [  # published on ReDial's full test split (or INSPIRED), same dedup protocol
    ("zero-shot GPT-4, ReDial (He et al., CIKM 2023)", {"Recall@1": 0.050, "Recall@10": 0.201, "Recall@20": 0.268}),
    ("UniCRS, ReDial (Kostric & Balog, SIGIR 2026)", {"Recall@10": 0.180}),
    ("ReFICR, ReDial (Kostric & Balog, SIGIR 2026)", {"Recall@10": 0.213, "Recall@50": 0.465}),
    ("zero-shot GPT-4, INSPIRED (He et al., CIKM 2023)", {"Recall@10": 0.185, "Recall@20": 0.218}),
]


def write(out: Path, results: dict) -> None:
    """metrics.json (everything, per case too) and report.md (the tables and the command)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    per_case = ",\n    ".join(json.dumps(row) for row in results["per_case"])  # one line a case
    body = json.dumps({**results, "per_case": "<per_case>"}, indent=2, default=_json_default)
    (out / "metrics.json").write_text(body.replace('"<per_case>"', f"[\n    {per_case}\n  ]") + "\n", encoding="utf-8")
    (out / "report.md").write_text(render_markdown(results), encoding="utf-8")


def render_markdown(results: dict) -> str:
    """The report for people: what was run, the accuracy table with CIs, paired differences, latency."""
    meta, cases = results["meta"], results["cases"]
    lines = [
        "# Dialog protocol", "",
        "```", meta["command"], "```", "",
        f"- Protocol: {meta['protocol']}; the agent's list is read to depth {meta['depth']} "
        f"(its cards, then its other candidates; MRR counts 0 below it, baselines too).",
        f"- Split: {meta['split']}. **Reported on {meta['reported_on']}**; {meta['tuned_on']}.",
        f"- Cases: {cases['cases']} in {cases['dialogs_with_cases']} dialogs; not cases: {cases['skipped'] or 'none'}.",
        f"- LLM: {meta['llm']}; embeddings: {meta['embedding']}.",
        f"- Data: {meta['data']}" + (f"; {meta['source_notes']}" if meta.get("source_notes") else ""),
        f"- CIs: {meta['bootstrap']}. Seed {meta['seed']}. {meta['started']}, {meta['seconds']:.0f} s on {meta['machine']}.",
        "", "## Accuracy (mean [95% CI])", "",
        _table([[f"`{name}`", *(_ci(m.get(k)) for k in METRICS), str(m["cases"])] for name, m in results["metrics"].items()],
               ["variant", *METRICS, "cases"]),
        "", "Published references (not the same dialogs or catalog):", "",
        _table([[who, *(f"{ref[k]:.3f}" if k in ref else "" for k in METRICS)] for who, ref in REFERENCES], ["", *METRICS]),
    ]
    if results["paired"]:
        lines += ["", "## Paired differences (same cases)", "",
                  _table([[name, _ci(d["Recall@10"]), _ci(d["Recall@20"])] for name, d in results["paired"].items()],
                         ["", "Recall@10", "Recall@20"])]
    lines += ["", "## Latency (ms)", "",
              _table([[name, f"{v['p50']:.1f}", f"{v['p95']:.1f}", v["note"]] for name, v in results["latency_ms"].items()],
                     ["variant", "p50", "p95", "how"])]
    for name, notes in results["agent"].items():
        stages = results["latency_ms"][name].get("stages_p50", {})
        lines += ["", f"- `{name}`: {notes['turns']} turns, {notes['cases without a list']} cases answered without a list; "
                  f"intents {notes['intents']}; stage p50 (ms) " + ", ".join(f"{s} {v:.1f}" for s, v in stages.items())]
    lines += ["", "Variants: " + "; ".join(f"`{n}`: {v['description']}" for n, v in results["variants"].items()) + ".", ""]
    return "\n".join(lines)
