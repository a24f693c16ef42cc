"""`posttrain generate MODEL_DIR --prompts FILE.jsonl --mode think -n 4`: what a checkpoint does in each mode.

Each prompt row is `{"prompt": "text"}` or `{"messages": [...]}`, with optional `"id"` (default: the row's
number), `"images"` (paths, placed before the text) and `"mode"` (overrides --mode). Prints one JSON line per
sample with the parsed parts of the response, so the output pipes into `jq`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from keye_protocol.chat import MODE_SUFFIX, Mode


def register(subparsers) -> None:
    parser = subparsers.add_parser("generate", help="sample responses from a model directory (JSON lines)")
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--prompts", type=Path, required=True, help="JSONL file of prompts")
    parser.add_argument("--mode", default="auto_think", choices=[m.value for m in Mode])
    parser.add_argument("-n", type=int, default=1, help="samples per prompt")
    parser.add_argument("--temperature", type=float, default=0.6, help="0 = greedy")
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(run=run)


def read_prompts(path: Path, default_mode: str):
    from posttrain.prompts import load_prompts, request_of

    return [request_of(row, row.get("mode") or default_mode) for row in load_prompts(path)]


def run(args: argparse.Namespace) -> int:
    from keye_protocol.chat import parse_response
    from rollout.types import SamplingParams
    from rollout.worker import RolloutWorker

    requests = read_prompts(args.prompts, args.mode)
    sampling = SamplingParams(n=args.n, temperature=args.temperature, max_tokens=args.max_tokens, seed=args.seed)
    worker = RolloutWorker(args.model_dir, worker_id="cli", num_threads=2)
    for request, completions in zip(requests, chunks(worker.generate(requests, sampling), args.n)):
        for completion in completions:
            parsed = parse_response(completion.text)
            print(json.dumps({
                "id": request.request_id, "sample": completion.sample_index, "mode": request.mode,
                "suffix": MODE_SUFFIX[Mode(request.mode)], "text": completion.text,
                "analysis": parsed.analysis, "think": parsed.think, "answer": parsed.answer, "boxed": parsed.boxed,
                "finish_reason": completion.finish_reason, "error": completion.error,
                "num_tokens": completion.num_tokens, "tool_calls": len(completion.tool_calls)}))
    sys.stdout.flush()
    return 0


def chunks(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]
