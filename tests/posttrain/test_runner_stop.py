"""Stopping and resuming say so in one line: where the run stopped, which checkpoint a rerun resumes from."""

import io
import os
import signal
import types

import pytest
from rich.console import Console

from posttrain import runner
from posttrain.cluster import _stop_on_sigterm
from posttrain.runner import RunInterrupted, run_stage
from posttrain.stages.context import StageContext


def context(tmp_path, kind="interrupted"):
    stage = types.SimpleNamespace(kind=kind, name=None)
    return StageContext(None, 1, stage, tmp_path / "01-rl", tmp_path, tmp_path, Console(file=io.StringIO()))


def test_an_interrupted_stage_says_where_it_stopped_and_how_to_resume(tmp_path, monkeypatch):
    def stopped(ctx):
        (ctx.dir / "checkpoints" / "step-000020").mkdir(parents=True)
        raise KeyboardInterrupt

    monkeypatch.setitem(runner.STAGES, "interrupted", stopped)
    ctx = context(tmp_path)
    with pytest.raises(RunInterrupted, match=r"01-interrupted stopped \(Ctrl-C\); its last checkpoint is "
                                             r".*01-rl/checkpoints/step-000020. Run the same command to resume"):
        run_stage(ctx, ctx.console)
    monkeypatch.setitem(runner.STAGES, "interrupted", lambda ctx: {"headline": "done"})
    console = Console(file=io.StringIO(), width=200)
    assert run_stage(ctx, console)["headline"] == "done"
    assert "01-interrupted: resuming from " in console.file.getvalue()


def test_sigterm_stops_the_driver_as_ctrl_c_does_and_the_cli_says_so_in_one_line(monkeypatch, capsys):
    from posttrain.cli import main

    previous = _stop_on_sigterm()
    try:
        with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
            os.kill(os.getpid(), signal.SIGTERM)
    finally:
        signal.signal(signal.SIGTERM, previous)

    def interrupted(recipe, console):
        raise RunInterrupted("00-rl stopped (SIGTERM); no checkpoint was saved yet. Run the same command to resume")

    monkeypatch.setattr("posttrain.runner.run_recipe", interrupted)
    assert main(["run", "tiny/rl_math"]) == 130
    err = capsys.readouterr().err
    assert err == ("posttrain run: stopped: 00-rl stopped (SIGTERM); no checkpoint was saved yet. Run the same "
                   "command to resume\n")
