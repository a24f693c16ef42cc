"""`posttrain report RUN [-o DIR]`: an HTML report of a run (plots and a table of held-out metrics per stage).

Writes `DIR/report.html` (self-contained: the PNGs are embedded) and the PNGs beside it; DIR defaults to
`RUN/report/`. The logic lives in `posttrain/report.py`; this file only parses.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser("report", help="write an HTML report with plots of a run")
    parser.add_argument("run_dir", metavar="RUN", help="run directory, or a run name under runs/")
    parser.add_argument("-o", "--output", type=Path, help="output directory (default: RUN/report)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from posttrain.report import build_report

    path = build_report(args.run_dir, args.output)
    print(f"wrote {path}")
    return 0
