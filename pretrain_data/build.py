"""Build the pre-training data directory: per-task train and eval shards, cleaned, with a hygiene report.

Layout of `out/`: `images/`, `<task>.train.jsonl`, `<task>.eval.jsonl`, `hygiene.json`, `done` (written last).
Evaluation rows come from their own seeded stream and are written first; training rows are then filtered by
`Hygiene` against each other and against every evaluation row (these and any `extra_eval` rows, such as a
later stage's held-out prompts). A user's shards (`user_shards`: task name -> JSONL/Parquet path) join the
training rows of their task and go through the same filter.
"""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from pretrain_data.hygiene import Hygiene
from pretrain_data.shards import example_row, read_shard, write_shard
from pretrain_data.tasks import draw_examples


def build_pretrain_data(out: str | Path, sizes: dict[str, tuple[int, int]], seed: int = 0,
                        user_shards: dict[str, str] | None = None, extra_eval: list[dict] | None = None,
                        mismatched_captions: float = 0.0, console: Console | None = None) -> dict:
    """`sizes`: task -> (train rows drawn, eval rows). Returns the hygiene report as a dict.
    `mismatched_captions`: share of caption training rows whose caption is another row's (`plant_mismatches`)."""
    out = Path(out)
    images = out / "images"
    evaluation = {}
    for task, (_, n_eval) in sizes.items():
        rows = [example_row(e, f"{task}-eval-{i:05d}", images) for i, e in
                enumerate(draw_examples(task, n_eval, seed=seed + 1_000_003))]
        write_shard(rows, out / f"{task}.eval.jsonl")
        evaluation[task] = read_shard(out / f"{task}.eval.jsonl")
    drawn, written = [], {}  # rows with resolved paths (to hash), and as written (paths relative to `out`)
    for task, (n_train, _) in sizes.items():
        examples = draw_examples(task, n_train, seed)
        planted = plant_mismatches(examples, mismatched_captions, seed) if task == "caption" else set()
        rows = [{**example_row(e, f"{task}-{i:06d}", images), **({"planted": "mismatched_caption"} if i in planted
                                                                  else {})} for i, e in enumerate(examples)]
        write_shard(rows, out / f"{task}.train.tmp.jsonl")
        drawn += read_shard(out / f"{task}.train.tmp.jsonl")
        written.update((row["id"], row) for row in rows)
        (out / f"{task}.train.tmp.jsonl").unlink()
    for task, path in (user_shards or {}).items():
        drawn += [{**row, "task": task, "id": row.get("id", f"{task}-user-{i}")} for i, row in
                  enumerate(read_shard(path))]
    hygiene = Hygiene()
    kept = hygiene.clean(drawn, [r for rows in evaluation.values() for r in rows] + list(extra_eval or []))
    for task in sorted({row["task"] for row in drawn}):
        write_shard((written.get(r["id"], r) for r in kept if r["task"] == task), out / f"{task}.train.jsonl")
    report = {**hygiene.report.__dict__, "eval_rows": {t: len(r) for t, r in evaluation.items()}}
    (out / "hygiene.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "done").write_text("ok\n")
    if console is not None:
        console.print(hygiene_table(report))
    return report


def plant_mismatches(examples: list, share: float, seed: int) -> set[int]:
    """Give `share` of the examples the caption of another of them (a cycle among the chosen, so every chosen one
    gets a caption not its own unless two scenes share one); returns the chosen indices."""
    import random

    chosen = sorted(random.Random(seed + 77).sample(range(len(examples)), round(share * len(examples))))
    if len(chosen) < 2:
        return set()
    captions = [examples[i].target for i in chosen]
    for i, caption in zip(chosen, captions[1:] + captions[:1]):
        examples[i].target = examples[i].answer = caption
    return set(chosen)


def hygiene_table(report: dict) -> Table:
    table = Table(title=f"pre-training data hygiene (MinHash LSH, Jaccard > {report['threshold']}, "
                        f"{report['bands']}x{report['rows_per_band']} bands: recall at threshold "
                        f"{100 * report['recall_at_threshold']:.1f}%)")
    for column in ("task", "drawn", "near-duplicate", "eval overlap", "kept", "eval rows"):
        table.add_column(column, justify="right" if column != "task" else "left")
    for task, c in sorted(report["per_task"].items()):
        table.add_row(task, str(c["drawn"]), str(c["duplicate"]), str(c["contaminated"]), str(c["kept"]),
                      str(report["eval_rows"].get(task, 0)))
    return table


def read_task_rows(data_dir: str | Path, split: str, tasks: list[str] | None = None) -> dict[str, list[dict]]:
    """task -> rows of `<task>.<split>.jsonl` in a built directory (all tasks when `tasks` is None)."""
    data_dir = Path(data_dir)
    found = {p.name.split(".")[0]: p for p in sorted(data_dir.glob(f"*.{split}.jsonl"))}
    wanted = tasks if tasks is not None else sorted(found)
    missing = [t for t in wanted if t not in found]
    if missing:
        raise FileNotFoundError(f"{data_dir} has no {split} shards for {missing} (it has {sorted(found)}); add "
                                f"them to the pretrain_data stage's `tasks`")
    return {task: read_shard(found[task]) for task in wanted}
