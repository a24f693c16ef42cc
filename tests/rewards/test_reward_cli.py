"""`posttrain reward check`: one JSON line per row with total, components and errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from posttrain.cli import main

FAULTY = Path(__file__).parent / "plugins" / "faulty.py"
ROWS = [
    {"prompt": "What is 1/4 + 1/4? /think", "ground_truth": "0.5",
     "completion": "<think>two quarters make a half</think><answer>\\boxed{\\frac{1}{2}}</answer>"},
    {"prompt": "What is 2+3? /no_think", "completion": "6", "ground_truth": "5"},
    {"prompt": "What is 2+3? /think", "completion": "<think>2+3=5", "ground_truth": "5"},
]


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def check(capsys, *args) -> tuple[int, list[dict], str]:
    code = main(["reward", "check", *args])
    out, err = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines()], err


def test_weighted_builtins(tmp_path, capsys):
    data = write_rows(tmp_path / "rows.jsonl", ROWS)
    code, lines, err = check(capsys, "--reward", "math=1", "--reward", "format=0.5", "--data", str(data))
    assert code == 0
    assert [(r["total"], r["components"]) for r in lines] == [
        (1.5, {"math": 1.0, "format": 1.0}), (0.5, {"math": 0.0, "format": 1.0}), (0.0, {"math": 0.0, "format": 0.0})]
    assert json.loads(err.splitlines()[-1])["reward/count"] == 3


def test_errors_are_printed_per_row_and_set_the_exit_code(tmp_path, capsys):
    rows = [{"prompt": "q", "completion": "c", "behaviour": b, "value": 2} for b in ("ok", "raise", "nan", "hang")]
    data = write_rows(tmp_path / "rows.jsonl", rows)
    code, lines, _ = check(capsys, "--reward", f"{FAULTY}:behave", "--data", str(data), "--deadline", "0.5")
    assert code == 1
    assert [(r["total"], r["error"]) for r in lines] == [(2.0, None), (0.0, "exception"), (0.0, "invalid"),
                                                         (0.0, "timeout")]
    assert "boom" in lines[1]["message"]


def test_bad_spec_and_missing_data_exit_2(tmp_path, capsys):
    data = write_rows(tmp_path / "rows.jsonl", ROWS)
    assert main(["reward", "check", "--reward", "no_such_reward", "--data", str(data)]) == 2
    assert "not a registered reward" in capsys.readouterr().err
    assert main(["reward", "check", "--reward", "math", "--data", str(tmp_path / "none.jsonl")]) == 2


@pytest.mark.slow
def test_check_through_the_ray_pool(tmp_path, capsys):
    data = write_rows(tmp_path / "rows.jsonl", ROWS)
    code, lines, _ = check(capsys, "--reward", "math", "--data", str(data), "--workers", "1")
    assert code == 0 and [r["total"] for r in lines] == [1.0, 0.0, 0.0]


def test_what_a_reward_prints_reaches_stderr_with_its_control_characters_written_out(tmp_path, capsys):
    data = write_rows(tmp_path / "rows.jsonl", [{"prompt": "q", "completion": "c", "behaviour": "escapes"}])
    code, lines, err = check(capsys, "--reward", f"{FAULTY}:behave", "--data", str(data))
    assert code == 0 and lines[0]["total"] == 1.0
    assert "\x1b" not in err and "\x07" not in err
    assert "clear \\x1b[2J retitle \\x1b]0;pwned\\x07 red \\x1b[31m\n" in err


@pytest.mark.slow
def test_stdout_holds_only_the_json_lines_when_a_pool_worker_dies(tmp_path):
    """Ray relays "(raylet) A worker died ..." to the driver's stdout; a real process, since Ray writes to the
    stdout it finds, not to pytest's capture."""
    import subprocess
    import sys

    rows = [{"prompt": "q", "completion": "c", "behaviour": b} for b in ("escapes", "kill_worker", "ok")]
    data = write_rows(tmp_path / "rows.jsonl", rows)
    done = subprocess.run([sys.executable, "-m", "posttrain.cli", "reward", "check", "--reward", f"{FAULTY}:behave",
                           "--data", str(data), "--workers", "1"], capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).parents[2])
    assert done.returncode == 1, done.stderr
    assert [json.loads(line)["error"] for line in done.stdout.splitlines()] == [None, "crash", None]
    assert "\\x1b[2J" in done.stderr and "\x1b[2J" not in done.stderr  # relayed by Ray from the worker, escaped
