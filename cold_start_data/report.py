"""The build report: counts by mode and source against their targets, rejection rates and reasons, user-row
errors, and token-length statistics with a histogram per mode (matplotlib PNG).

Token lengths are measured with the tiny tokenizer by default (any tokenizer directory can be named), on
the response text with vision items left out, and on the prompt text. Writes ``report/report.json``,
``report/report.md`` and ``report/token_lengths.png``. Knows nothing about how the records were made.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from cold_start_data.config import BuildConfig
from cold_start_data.mixer import bucket_counts, bucket_shares
from cold_start_data.records import BuildStats, Record


def load_tokenizer(name: str):
    if name == "tiny":
        from keye_vl.tokenizer import build_tiny_tokenizer

        return build_tiny_tokenizer()
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(name)


def token_lengths(records: list[Record], tokenizer) -> dict[str, dict[str, list[int]]]:
    """mode -> {"response": [...], "prompt": [...]} token counts."""
    out: dict[str, dict[str, list[int]]] = defaultdict(lambda: {"response": [], "prompt": []})
    for record in records:
        prompt = "".join(i.get("text") or "" for m in record.messages if m["role"] != "assistant"
                         for i in m["content"] if i["type"] == "text")
        out[record.mode]["response"].append(len(tokenizer.encode(record.response, add_special_tokens=False)))
        out[record.mode]["prompt"].append(len(tokenizer.encode(prompt, add_special_tokens=False)))
    return dict(out)


def summary(values: list[int]) -> dict[str, float]:
    a = np.asarray(values)
    return {"n": int(a.size), "mean": round(float(a.mean()), 1), "p50": round(float(np.percentile(a, 50)), 1),
            "p95": round(float(np.percentile(a, 95)), 1), "max": int(a.max())} if a.size else {"n": 0}


def plot_lengths(lengths: dict[str, dict[str, list[int]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = sorted(lengths)
    fig, axes = plt.subplots(1, max(1, len(modes)), figsize=(3.2 * max(1, len(modes)), 2.8), squeeze=False)
    for ax, mode in zip(axes[0], modes):
        ax.hist(lengths[mode]["response"], bins=20, color="#4c72b0")
        ax.set_title(f"{mode} (n={len(lengths[mode]['response'])})", fontsize=9)
        ax.set_xlabel("response tokens", fontsize=8)
    axes[0][0].set_ylabel("samples", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80, metadata={"Software": None})  # no version stamp: same data, same bytes
    plt.close(fig)


def _by(counter: Counter, *fields: int) -> dict[str, int]:
    out: Counter = Counter()
    for key, n in counter.items():
        out["/".join(key[i] for i in fields)] += n
    return dict(sorted(out.items()))


def rejection_table(stats: BuildStats) -> dict[str, dict]:
    """Per source: tasks tried, kept, rejection rate and the reasons."""
    table: dict[str, dict] = {}
    tried = Counter()
    for (_, source), n in stats.attempted.items():
        tried[source] += n
    kept = Counter()
    for (_, _, source), n in stats.kept.items():
        kept[source] += n
    for source in sorted(tried):
        reasons: Counter = Counter()
        for (_, s, category), n in stats.rejected.items():
            if s == source:
                reasons[category] += n
        table[source] = {"tried": tried[source], "kept": kept[source],
                         "rejection_rate": round(1 - kept[source] / tried[source], 4) if tried[source] else 0.0,
                         "reasons": dict(sorted(reasons.items()))}
        if stats.sampled[source]:
            table[source]["teacher_paths"] = {"sampled": stats.sampled[source],
                                              "verified": stats.verified_paths[source]}
    return table


def build_report(config: BuildConfig, records: list[Record], stats: BuildStats, tokenizer) -> tuple[dict, dict]:
    lengths = token_lengths(records, tokenizer)
    auto = [r for r in records if r.mode == "auto_think"]
    return {
        "size": len(records), "seed": config.seed,
        "targets": {"shares": {k: round(v, 6) for k, v in bucket_shares(config).items()},
                    "counts": bucket_counts(config)},
        "counts": {"by_bucket": _by(stats.kept, 0), "by_mode": dict(sorted(Counter(r.mode for r in records).items())),
                   "by_source": _by(stats.kept, 2), "by_bucket_mode_source": _by(stats.kept, 0, 1, 2),
                   "by_teacher": dict(sorted(Counter(r.teacher for r in records).items()))},
        "flawed": dict(sorted((k, v) for k, v in stats.flawed.items() if v)),
        "auto_think_reasoned": sum(r.reasoned for r in auto), "auto_think_total": len(auto),
        "rejections": rejection_table(stats), "rejection_examples": stats.examples,
        "user_data": {"errors": [vars(e) for e in stats.user_errors], "rejected": stats.user_rejected},
        "token_lengths": {mode: {part: summary(v) for part, v in parts.items()} for mode, parts in
                          sorted(lengths.items())},
    }, lengths


def markdown(report: dict) -> str:
    lines = [f"# Cold-start mixture: {report['size']} samples (seed {report['seed']})", "",
             "| bucket | target | kept |", "|---|---|---|"]
    for bucket, target in report["targets"]["counts"].items():
        lines.append(f"| {bucket} | {target} | {report['counts']['by_bucket'].get(bucket, 0)} |")
    flawed = ", ".join(f"{s}: {n}" for s, n in report["flawed"].items()) or "none"
    lines += ["", f"Deliberately flawed (solver teacher): {flawed}. auto_think samples that reason: "
                  f"{report['auto_think_reasoned']} of {report['auto_think_total']}."]
    lines += ["", "| source | tried | kept | rejection rate | reasons |", "|---|---|---|---|---|"]
    for source, row in report["rejections"].items():
        reasons = ", ".join(f"{c}: {n}" for c, n in row["reasons"].items()) or "-"
        lines.append(f"| {source} | {row['tried']} | {row['kept']} | {row['rejection_rate']:.1%} | {reasons} |")
    lines += ["", "| mode | response tokens mean | p95 | max |", "|---|---|---|---|"]
    for mode, parts in report["token_lengths"].items():
        r = parts["response"]
        lines.append(f"| {mode} | {r.get('mean')} | {r.get('p95')} | {r.get('max')} |")
    errors = report["user_data"]["errors"] + report["user_data"]["rejected"]
    if errors:
        lines += ["", "## User rows rejected", ""]
        for e in errors:
            where = e.get("where") or f"{e['file']}:{e['line']}" + (f" '{e['key']}'" if e.get("key") else "")
            lines.append(f"- {where}: {e['reason']}")
    lines += ["", "![token lengths](token_lengths.png)", ""]
    return "\n".join(lines)


def write_report(config: BuildConfig, records: list[Record], stats: BuildStats, out: Path) -> dict:
    report, lengths = build_report(config, records, stats, load_tokenizer(config.tokenizer))
    folder = out / "report"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    (folder / "report.md").write_text(markdown(report))
    plot_lengths(lengths, folder / "token_lengths.png")
    return report
