"""`posttrain cold-start build|arithmetic`: build the five-mode cold-start mixture, or the arithmetic SFT rows.

`build --out DIR --size N [--seed S] [--config build.yaml] ...` writes a Hugging Face dataset (Parquet + JSONL
+ media), held-out prompts (eval.jsonl) and a report (report/); flags override the YAML's settings.
`arithmetic --out DIR -n N --carry-drop-rate 0.6` writes train.jsonl / eval.jsonl for the tiny RL recipe.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser("cold-start", help="build cold-start SFT data (the five-mode mixture)")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    build = actions.add_parser("build", help="build the mixture: dataset files, eval prompts and a report")
    build.add_argument("--out", type=Path, required=True, help="output directory")
    build.add_argument("--size", type=int, help="number of samples (required unless the config sets it)")
    build.add_argument("--seed", type=int)
    build.add_argument("--config", type=Path, help="YAML of cold_start_data.config.BuildConfig settings")
    build.add_argument("--flaw-rate", type=float, help="solver teacher: share of flawable tasks written wrong")
    build.add_argument("--teacher-model", type=Path, help="sample reasoning from this model (rejection sampling)")
    build.add_argument("--user-data", type=Path, action="append", help="JSONL/Parquet rows to include (repeatable)")
    build.add_argument("--eval-set", type=Path, action="append", help="evaluation prompts to decontaminate against")
    build.add_argument("--video-share", type=float, help="share of video samples (default: the paper's 13.3%%)")
    build.add_argument("--eval-size", type=int, help="held-out prompts per mode and source (default 10)")
    build.add_argument("--overwrite", action="store_true", help="replace a mixture already in --out")
    build.set_defaults(run=run_build)

    arith = actions.add_parser("arithmetic", help="2-digit addition SFT rows with a carry-dropping teacher")
    arith.add_argument("--out", type=Path, required=True)
    arith.add_argument("-n", type=int, required=True, help="training rows")
    arith.add_argument("--seed", type=int, default=0)
    arith.add_argument("--carry-drop-rate", type=float, default=0.6)
    arith.add_argument("--modes", default="think,no_think", help="comma-separated modes, taken in turn")
    arith.add_argument("--n-eval", type=int, default=500, help="held-out pairs (one eval row per pair and mode)")
    arith.add_argument("--style", default="compact", choices=["compact", "verbose"])
    arith.set_defaults(run=run_arithmetic)


def build_config(args: argparse.Namespace):
    from cold_start_data.config import BuildConfig

    overrides = {"size": args.size, "seed": args.seed, "video_share": args.video_share, "eval_size": args.eval_size,
                 "user_data": args.user_data, "eval_sets": args.eval_set}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    config = BuildConfig.from_yaml(args.config, **overrides) if args.config else None
    if config is None:
        if args.size is None:
            raise ValueError("--size is required (or a --config that sets size)")
        config = BuildConfig(**overrides)
    teacher = config.teacher.model_copy()
    if args.flaw_rate is not None:
        teacher.flaw_rate = args.flaw_rate
    if args.teacher_model is not None:
        teacher.kind, teacher.model_dir = "model", args.teacher_model
    return BuildConfig(**{**config.model_dump(), "teacher": teacher.model_dump()})  # re-validated


def run_build(args: argparse.Namespace) -> int:
    from pydantic import ValidationError
    from rich.console import Console
    from rich.table import Table
    from tqdm import tqdm

    from cold_start_data.build import build
    from posttrain.stages.cold_start import teacher_engine

    try:
        config = build_config(args)
    except ValidationError as error:
        raise ValueError(f"invalid build settings:\n{error}") from None
    with tqdm(total=config.size, desc="cold-start", unit="sample") as bar:
        report = build(config, args.out, progress=bar.update, overwrite=args.overwrite,
                       engine=teacher_engine(config))
    table = Table(title=f"cold-start mixture -> {args.out}")
    for column in ("bucket", "target", "kept"):
        table.add_column(column)
    for bucket, target in report["targets"]["counts"].items():
        table.add_row(bucket, str(target), str(report["counts"]["by_bucket"].get(bucket, 0)))
    console = Console()
    console.print(table)
    errors = len(report["user_data"]["errors"]) + len(report["user_data"]["rejected"])
    if errors:
        console.print(f"[yellow]{errors} user rows rejected: see {args.out}/report/report.md[/]")
    console.print(f"report: {args.out}/report/report.md")
    return 0


def run_arithmetic(args: argparse.Namespace) -> int:
    from cold_start_data.arithmetic_sft import write_arithmetic

    modes = tuple(m.strip() for m in args.modes.split(",") if m.strip())
    split = write_arithmetic(args.out, args.n, seed=args.seed, carry_drop_rate=args.carry_drop_rate, modes=modes,
                             n_eval=args.n_eval, style=args.style)
    flawed = sum(r["flawed"] for r in split.train)
    print(f"{len(split.train)} training rows ({flawed} with a dropped carry) -> {args.out}/train.jsonl; "
          f"{len(split.eval)} held-out rows -> {args.out}/eval.jsonl")
    return 0
