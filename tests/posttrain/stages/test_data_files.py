"""Stages read each data file from the newest data directory that has it."""

from pathlib import Path

from rich.console import Console

from posttrain.stages.context import StageContext


def test_a_later_data_stage_replaces_only_the_files_it_writes(tmp_path: Path):
    run, cold_start, pretrain = tmp_path / "data", tmp_path / "00-cold_start_build" / "data", tmp_path / "01-data"
    for directory, names in ((run, ["eval.jsonl", "sft.jsonl"]), (cold_start, ["eval.jsonl", "prompts.jsonl"]),
                             (pretrain, ["caption.train.jsonl"])):
        directory.mkdir(parents=True)
        for name in names:
            (directory / name).write_text("")
    ctx = StageContext(None, 2, None, tmp_path / "02-sft", tmp_path, pretrain, Console(), None, (cold_start, run))
    assert ctx.data_file("caption.train.jsonl") == pretrain / "caption.train.jsonl"
    assert ctx.data_file("eval.jsonl") == cold_start / "eval.jsonl"  # the newest copy wins
    assert ctx.data_file("sft.jsonl") == run / "sft.jsonl"
    assert ctx.data_file("pairs.jsonl") == pretrain / "pairs.jsonl"  # missing: where the stage's error names it
