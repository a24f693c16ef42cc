"""`kind: score_filter`: Keye's image-text score filtering, with the scorer an earlier `siglip` stage trained.

Scores every training row of the named tasks (`pretrain_data.score_filter`), writes the data directory again
under `<stage>/data` with the low-scoring rows dropped (every shard rewritten with absolute image paths, so
the images stay where the `pretrain_data` stage put them) and a report `score_filter.json` with the score
distribution of planted mismatches against the rest; later stages read the filtered directory.
"""

from __future__ import annotations

import json

import numpy as np
from rich.table import Table

from posttrain.stages.context import StageContext
from posttrain.stages.pretrain import stage_model
from pretrain_data.build import read_task_rows
from pretrain_data.score_filter import filter_rows, pair_of
from pretrain_data.shards import write_shard


def run_score_filter(ctx: StageContext) -> dict:
    from keye_vl.text_tower import ImageTextScorer

    stage, out = ctx.stage, ctx.dir / "data"
    siglip = stage_model(ctx, stage.scorer, "scorer").parent
    if not (siglip / "siglip" / "config.json").exists():
        raise FileNotFoundError(f"stage {ctx.label}: scorer {stage.scorer!r} has no SigLIP towers at "
                                f"{siglip / 'siglip'}; name a `kind: siglip` stage")
    scorer = ImageTextScorer.load(siglip / "model", siglip / "siglip")
    train = read_task_rows(ctx.data_dir, "train")
    missing = [t for t in stage.tasks if t not in train]
    if missing:
        raise ValueError(f"stage {ctx.label}: tasks {missing} have no training shard in {ctx.data_dir} "
                         f"(it has {sorted(train)})")
    reports = {}
    for task, rows in train.items():
        scores = score_pairs(scorer, rows) if task in stage.tasks else {}
        kept, reports[task] = filter_rows(rows, scores, stage.threshold)
        reports[task]["score_quantiles"] = quantiles(rows, scores)
        write_shard(kept, out / f"{task}.train.jsonl")
    for task, rows in read_task_rows(ctx.data_dir, "eval").items():
        write_shard(rows, out / f"{task}.eval.jsonl")
    (out / "score_filter.json").write_text(json.dumps(reports, indent=2) + "\n")
    (out / "done").write_text("ok\n")
    scored = {t: r for t, r in reports.items() if r["scored"]}
    ctx.console.print(report_table(ctx.label, scored))
    return {"filter": scored, "headline": "; ".join(f"{t}: dropped {r['dropped']} of {r['rows']}" + (
        f" (planted caught {r['planted_dropped']}/{r['planted']})" if r["planted"] else "") for t, r in scored.items())}


def score_pairs(scorer, rows: list[dict]) -> dict[str, float]:
    from PIL import Image

    pairs = {r["id"]: pair for r in rows if (pair := pair_of(r)) is not None}
    ids = list(pairs)
    scores = []
    for i in range(0, len(ids), 64):
        chunk = [pairs[k] for k in ids[i:i + 64]]
        images = [Image.open(path).convert("RGB") for path, _ in chunk]
        scores += scorer.score(images, [text for _, text in chunk]).tolist()
    return dict(zip(ids, scores))


def quantiles(rows: list[dict], scores: dict[str, float]) -> dict[str, list[float]]:
    """Score quartiles of planted and clean rows: how far apart the scorer puts them."""
    out = {}
    for label, planted in (("planted", True), ("clean", False)):
        values = [scores[r["id"]] for r in rows if r["id"] in scores and bool(r.get("planted")) == planted]
        if values:
            out[label] = [round(float(q), 4) for q in np.quantile(values, [0.25, 0.5, 0.75])]
    return out


def report_table(label: str, reports: dict[str, dict]) -> Table:
    table = Table(title=f"{label}: image-text score filter")
    for column in ("task", "scored", "dropped", "planted", "recall", "precision", "median planted / clean"):
        table.add_column(column)
    for task, r in reports.items():
        q = r["score_quantiles"]
        table.add_row(task, str(r["scored"]), str(r["dropped"]), str(r["planted"]),
                      "-" if r["recall"] is None else f"{r['recall']:.0%}",
                      "-" if r["precision"] is None else f"{r['precision']:.0%}",
                      f"{q.get('planted', ['-'] * 3)[1]} / {q.get('clean', ['-'] * 3)[1]}")
    return table
