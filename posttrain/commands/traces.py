"""`posttrain traces show|serve|export RUN`: read a run's rollouts back.

    posttrain traces show RUN --mode think --max-reward 0 --limit 5     # terminal view of matching samples
    posttrain traces serve RUN --port 8765                              # local web viewer on 127.0.0.1
    posttrain traces export RUN --format html -o traces.html --error    # one offline page (or jsonl, parquet)

RUN is a run directory or a name under `runs/`. The logic lives in `posttrain/viewer/`; this file only parses.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_filter_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN", help="run directory, or a run name under runs/")
    parser.add_argument("--stage", help="stage directory name, e.g. 01-rl, or 01-rl:eval for its held-out "
                                        "answers (default: all)")
    parser.add_argument("--step", type=int)
    parser.add_argument("--mode", help="think | no_think | auto_think | agentic")
    parser.add_argument("--min-reward", type=float)
    parser.add_argument("--max-reward", type=float)
    parser.add_argument("--error", action="store_true", help="only samples whose reward failed")
    parser.add_argument("--text", help="case-insensitive text in the prompt, completion or reference answer")
    parser.add_argument("--prompt-id", help="one prompt (across steps)")
    parser.add_argument("--group", type=int, help="one group of G samples (with --step)")


def register(subparsers) -> None:
    parser = subparsers.add_parser("traces", help="view, serve or export a run's rollout traces")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    show = actions.add_parser("show", help="print matching samples with their parts highlighted")
    add_filter_args(show)
    show.add_argument("--limit", type=int, default=10)
    show.add_argument("--offset", type=int, default=0)
    show.set_defaults(run=run_show)

    serve = actions.add_parser("serve", help="browse the traces in a local web viewer (127.0.0.1 only)")
    serve.add_argument("run_dir", metavar="RUN", help="run directory, or a run name under runs/")
    serve.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    serve.set_defaults(run=run_serve)

    export = actions.add_parser("export", help="write matching samples as an offline HTML page or a dataset")
    add_filter_args(export)
    export.add_argument("--format", default="html", choices=["html", "jsonl", "parquet"])
    export.add_argument("-o", "--output", type=Path, help="default: RUN/traces-export.<format>")
    export.add_argument("--limit", type=int, help="at most this many samples, evenly spaced over all matches (html default: 2000)")
    export.set_defaults(run=run_export)


def _filter(args: argparse.Namespace):
    from posttrain.viewer.filters import TraceFilter

    return TraceFilter.from_mapping(vars(args))


def run_show(args: argparse.Namespace) -> int:
    from posttrain.viewer import terminal
    from posttrain.viewer.records import view_records
    from posttrain.viewer.run import RunTraces

    run, flt = RunTraces(args.run_dir), _filter(args)
    total, rows = run.query(flt, args.offset, args.limit)
    terminal.show(view_records(rows, lambda _, path: path), total, notes=run.notes(flt))
    return 0


def run_serve(args: argparse.Namespace) -> int:
    from posttrain.viewer.run import RunTraces
    from posttrain.viewer.server import make_server

    run = RunTraces(args.run_dir)
    server = make_server(run, args.port, quiet=False)
    host, port = server.server_address[:2]
    print(f"serving traces of {run.dir} at http://{host}:{port}/  (Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def run_export(args: argparse.Namespace) -> int:
    from posttrain.viewer.export import export
    from posttrain.viewer.run import RunTraces

    run = RunTraces(args.run_dir)
    output = args.output or run.dir / f"traces-export.{args.format}"
    written, matching = export(run, _filter(args), args.format, output, args.limit)
    print(f"wrote {written} of {matching} matching samples to {output}")
    return 0
