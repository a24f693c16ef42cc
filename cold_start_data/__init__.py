"""The five-mode cold-start mixture: task sources, mode formatters, teachers with verification, the mixer.

    from cold_start_data import BuildConfig, build, load_mixture
    report = build(BuildConfig(size=1000, seed=0), "runs/cold_start")   # or: posttrain cold-start build ...
    dataset = load_mixture("runs/cold_start")                           # a datasets.Dataset of chat rows

Pieces, one concept per module: `sources/` (seeded, verifiable tasks), `user_data` (the user's rows),
`formatting` (KEYE.md formats via `keye_protocol.chat`), `teachers/` (solver, model, agentic-in-sandbox),
`judge` (auto_think complexity), `verify` (the rewards' checkers), `phash` + `dedup` (near-duplicates and
decontamination), `mixer` (exact counts), `pipeline` (draw-write-verify-keep), `evalset`, `writer`, `report`,
`build`; `arithmetic_sft` makes the tiny RL recipe's imperfect-teacher SFT rows.

Boundary: depends on `keye_protocol` (chat protocol, grounding), `keye_vl` (tokenizer) and `rewards` (verifiers,
sandbox); `rollout` only when a model teacher is used, imported lazily. Knows nothing about training.
Departures from the paper: its data sources are not public, so tasks are synthetic and rule-built; its step
checker is approximated by answer+format verification with optional step-frequency voting; near-duplicates
are found by comparing pHashes directly (no minHash stage, which only matters at web scale).
"""

from cold_start_data.arithmetic_sft import arithmetic_sft_rows
from cold_start_data.build import build
from cold_start_data.config import BuildConfig
from cold_start_data.writer import load_mixture

__all__ = ["BuildConfig", "arithmetic_sft_rows", "build", "load_mixture"]
