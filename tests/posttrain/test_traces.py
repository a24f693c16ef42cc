"""A run's step logs on resume: records of later steps go, and one torn or damaged line is dropped with a warning,
never a traceback, while the records around it stay (issue 33)."""

import json

import pytest

from posttrain.traces import StepLog, read_log

RECORDS = [{"step": 0, "reward": 1.0}, {"step": 1, "reward": 0.5}, {"step": 2, "reward": 0.0}]
DAMAGED = {
    "torn": ('{"step": 1, "rew', "not JSON (Unterminated string"),
    "too deep": ('{"step": 1, "x": ' + "[" * 100_000 + "]" * 100_000 + "}", "JSON nested too deeply to parse"),
    "5000 digits": ('{"step": 1, "reward": ' + "9" * 5000 + "}",
                    "not JSON (Exceeds the limit (4300 digits) for integer string conversion: value has 5000 digits)"),
    "not an object": ("[1, 2]", "a JSON list, not an object"),
    "string step": ('{"step": "1"}', 'step "1" is not an integer'),
    "float step": ('{"step": 1.5}', "step 1.5 is not an integer"),
    "bad utf-8": (b'{"step": 1, "completion": "\xff"}'.decode("latin-1"), "not JSON ('utf-8' codec can't decode"),
}


def write_log(path, damaged: str):
    """RECORDS with `damaged` as the third of four lines (between steps 1 and 2)."""
    lines = [json.dumps(r).encode() for r in RECORDS]
    lines.insert(2, damaged.encode("latin-1" if "\xff" in damaged else "utf-8"))
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


@pytest.mark.parametrize("kind", DAMAGED)
def test_read_log_skips_a_damaged_line_and_keeps_the_records_around_it(tmp_path, kind):
    assert read_log(write_log(tmp_path / "metrics.jsonl", DAMAGED[kind][0])) == RECORDS


@pytest.mark.parametrize("kind", DAMAGED)
def test_a_resume_drops_a_damaged_line_with_a_warning_and_keeps_the_earlier_records(tmp_path, kind, capsys):
    path = write_log(tmp_path / "metrics.jsonl", DAMAGED[kind][0])
    log = StepLog(path, resume_after=1)  # step 2 is produced again
    log.write_step(2, [{"reward": 0.25}])
    log.close()
    assert read_log(path) == [*RECORDS[:2], {"reward": 0.25, "step": 2}]
    assert path.read_bytes().count(b"\n") == 3  # the damaged line is gone from the file, not only skipped
    err = capsys.readouterr().err
    assert f"warning: {path}: dropped 1 line(s) that are no record (first: line 3: {DAMAGED[kind][1]}" in err
    assert err.rstrip().endswith("; 2 record(s) kept")


def test_a_clean_resume_says_nothing_and_a_last_record_without_its_newline_is_not_joined_to_the_next(
        tmp_path, capsys):
    path = tmp_path / "traces.jsonl"
    path.write_text(json.dumps(RECORDS[0]) + "\n" + json.dumps(RECORDS[1]))  # cut just before the newline
    log = StepLog(path, resume_after=5)
    log.write_step(2, [{"reward": 0.0}])
    log.close()
    assert read_log(path) == RECORDS
    assert capsys.readouterr().err == ""
