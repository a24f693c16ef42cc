"""Image-text score filtering: drop training pairs whose image and text a stage-0 (SigLIP) model finds unrelated.

Keye filters its web pairs by CLIP-style scores; here the scorer is this toolkit's own stage-0 output
(`keye_vl.text_tower.ImageTextScorer`), the pair probability sigmoid(t cos + b). A row is scored when it shows
exactly one image and its target is plain text (captions); other rows pass unscored. Rows a `pretrain_data`
stage planted as mismatched (`planted`) let the report measure the filter: recall (planted rows dropped) and
precision (dropped rows that were planted).
"""

from __future__ import annotations

from pretrain_data.shards import image_paths


def pair_of(row: dict) -> tuple[str, str] | None:
    """(image path, text) of a one-image row with a text target, else None."""
    paths, target = image_paths(row), row["messages"][-1]["content"]
    return (paths[0], target) if len(paths) == 1 and isinstance(target, str) else None


def filter_rows(rows: list[dict], scores: dict[str, float], threshold: float) -> tuple[list[dict], dict]:
    """Rows kept (score >= threshold, or unscored) and the report. `scores`: row id -> pair probability."""
    kept = [r for r in rows if scores.get(r["id"], 1.0) >= threshold]
    if rows and not kept:
        best = max(scores.values())
        raise ValueError(f"every row of task {rows[0]['task']!r} scores below the threshold {threshold} (best "
                         f"{best:.3g}): lower the score_filter's threshold, or train its scorer longer")
    dropped = [r for r in rows if r["id"] in scores and scores[r["id"]] < threshold]
    planted = [r for r in rows if r.get("planted")]
    caught = sum(1 for r in dropped if r.get("planted"))
    report = {"threshold": threshold, "rows": len(rows), "scored": len(scores), "dropped": len(dropped),
              "planted": len(planted), "planted_dropped": caught,
              "recall": caught / len(planted) if planted else None,
              "precision": caught / len(dropped) if dropped else None}
    return kept, report
