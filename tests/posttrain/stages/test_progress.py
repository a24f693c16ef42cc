"""The stage progress line: whole counts and times at 80 columns, plain periodic lines when not on a terminal."""

import io
import types

from rich.console import Console

from posttrain.stages.common import PlainProgress, stage_progress

METRICS = "reward 0.84  errors 3% (my_reward)  loss 0.123  len 41  0.65s/step  and more words to overflow"


def context(console):
    return types.SimpleNamespace(console=console, label="01-rl")


def test_at_80_columns_the_metrics_are_cut_not_the_counts_and_times():
    console = Console(file=io.StringIO(), width=80, force_terminal=True, color_system=None)
    with stage_progress(context(console), 300) as (progress, task):
        progress.update(task, advance=300, metrics=METRICS)
    last = [line for line in console.file.getvalue().splitlines() if "300/300" in line][-1]
    assert "01-rl" in last and "0:00:0" in last and "eta" in last and "reward 0.84" in last
    assert "…" in last and "…" not in last.split("reward")[0]  # only the metrics are shortened


def test_off_a_terminal_progress_is_plain_lines_as_it_goes(monkeypatch):
    console = Console(file=io.StringIO(), width=80)  # a file: not a terminal
    clock = iter([0.0, 1.0, 40.0, 41.0, 90.0])
    monkeypatch.setattr("posttrain.stages.common.time.monotonic", lambda: next(clock))
    with stage_progress(context(console), 4) as (progress, task):
        assert isinstance(progress, PlainProgress)
        for _ in range(4):
            progress.update(task, advance=1, metrics="loss 0.5")
    assert console.file.getvalue().splitlines() == [
        "01-rl 1/4 0:00:01 eta 0:00:03 loss 0.5",  # the first step
        "01-rl 2/4 0:00:40 eta 0:00:40 loss 0.5",  # 30 s later
        "01-rl 4/4 0:01:30 eta 0:00:00 loss 0.5"]  # the last step
