"""Rewards that stall, explode, leak or flood: each marks only its own sample, and nothing waits past the
per-sample deadline plus a process restart (issue 20, item 1). Real math-verify, real child processes, real Ray."""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path

import pytest

from posttrain.cli import main
from rewards.pool import PoolConfig, RewardPool
from runtime.local_ray import local_ray
from rewards.sample import Sample
from rewards.worker import RewardWorker

BOMBS = f"{Path(__file__).parent / 'plugins' / 'bombs.py'}:attack"
POWER_TOWER = "\\boxed{9^{9^{9^{9^{9}}}}}"  # sympy evaluates it as one C call that holds the GIL for minutes


def graded_rows(n: int = 25, bomb_at: int = 7) -> list[dict]:
    """n graded additions (every third one wrong) with the power tower inserted at `bomb_at`."""
    rng, rows = random.Random(0), []
    for i in range(n):
        a, b = rng.randint(1, 50), rng.randint(1, 50)
        given = a + b if i % 3 else a + b + 1
        rows.append({"prompt": f"What is {a}+{b}? /think", "ground_truth": str(a + b),
                     "completion": f"<think>add</think><answer>\\boxed{{{given}}}</answer>"})
    rows.insert(bomb_at, {"prompt": "What is 2+2? /think", "ground_truth": "4",
                          "completion": f"<think>big</think><answer>{POWER_TOWER}</answer>"})
    return rows


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def check(capsys, *args) -> tuple[int, list[dict], str]:
    code = main(["reward", "check", *args])
    out, err = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines()], err


def assert_only_the_bomb_timed_out(lines: list[dict]) -> None:
    assert len(lines) == 26
    assert lines[7]["error"] == "timeout" and "killed and replaced" in lines[7]["message"]
    others = [r for i, r in enumerate(lines) if i != 7]
    assert all(r["error"] is None for r in others)  # the rows after the bomb were scored, not lost
    assert [r["total"] for r in others] == [0.0 if i % 3 == 0 else 1.0 for i in range(25)]


@pytest.mark.parametrize("workers", ["0", "2"])
def test_the_power_tower_times_out_and_the_file_still_scores_fast(tmp_path, capsys, workers):
    data = write_rows(tmp_path / "rows.jsonl", graded_rows())
    start = time.perf_counter()
    code, lines, _ = check(capsys, "--reward", "math", "--data", str(data), "--deadline", "2", "--workers", workers)
    elapsed = time.perf_counter() - start
    assert code == 1
    assert_only_the_bomb_timed_out(lines)
    assert elapsed < 2 + 20  # deadline + startup (Ray's included), never deadline x rows


def sample(attack: str, value: float = 1.0) -> Sample:
    return Sample.from_row({"prompt": "q", "completion": "c", "attack": attack, "value": value})


def test_bad_values_mark_only_their_own_sample_in_process():
    worker = RewardWorker(BOMBS)
    try:
        reply = worker.score([sample("ok", 1.0), sample("huge_int"), sample("ok", 2.0), sample("none"),
                              sample("nan"), sample("raise"), sample("ok", 3.0)], deadline_s=5)
    finally:
        worker.close()
    r = reply.results
    assert [x.total for x in (r[0], r[2], r[6])] == [1.0, 2.0, 3.0] and all(x.error is None for x in (r[0], r[2], r[6]))
    assert r[1].error == "invalid" and "too large for a float" in r[1].message
    assert r[3].error is None and r[3].total is None and r[3].skipped  # not applicable: never trains as 0.0
    assert r[4].error == "invalid" and "finite" in r[4].message
    assert r[5].error == "exception" and len(r[5].message) < 2200  # a 100 kB message is cut


def test_a_leaking_reward_is_marked_and_its_process_replaced():
    worker = RewardWorker(BOMBS, memory_mb=400)
    try:
        results = [worker.score([sample(a)], deadline_s=10).results[0] for a in ["leak"] * 4 + ["ok"]]
    finally:
        worker.close()
    kinds = [r.error for r in results]
    assert "memory" in kinds and "memory_mb=400" in results[kinds.index("memory")].message
    assert kinds[-1] is None and results[-1].total == 1.0  # the fresh process scores the next sample
    assert worker.replaced >= 1


def test_a_reward_that_prints_without_end_is_marked_and_replaced(tmp_path, capsys):
    rows = [{"prompt": "q", "completion": "c", "attack": a} for a in ("chatty", "print", "ok")]
    data = write_rows(tmp_path / "rows.jsonl", rows)
    start = time.perf_counter()
    code, lines, err = check(capsys, "--reward", BOMBS, "--data", str(data), "--output-mb", "4")
    assert time.perf_counter() - start < 10
    assert [(r["total"], r["error"]) for r in lines] == [(2.0, None), (0.0, "output"), (1.0, None)]
    assert "output_mb=4" in lines[1]["message"]
    assert "a line the reward printed" in err and len(err) < 200_000  # prints go to stderr, bounded


def test_the_pool_marks_only_the_bad_samples_of_a_chunk():
    with local_ray(num_cpus=2, object_store_mb=128):
        config = PoolConfig(num_workers=1, timeout_s=5, chunk_size=8, grace_s=2)
        with RewardPool(BOMBS, config=config) as pool:
            batch = pool.score([sample("ok", 1.0), sample("huge_int"), sample("ok", 2.0), sample("none"),
                                sample("nan"), sample("raise"), sample("ok", 3.0)])
    errors = [r.error for r in batch.results]
    assert errors == [None, "invalid", None, None, "invalid", "exception", None]
    assert [batch.results[i].total for i in (0, 2, 6)] == [1.0, 2.0, 3.0] and batch.results[3].skipped


@pytest.mark.parametrize("deadline", ["nan", "-1", "0", "inf"])
def test_a_deadline_that_never_or_always_expires_is_refused(tmp_path, capsys, deadline):
    data = write_rows(tmp_path / "rows.jsonl", graded_rows(2, 0))
    with pytest.raises(SystemExit) as exit_:
        main(["reward", "check", "--reward", "math", "--data", str(data), "--deadline", deadline])
    assert exit_.value.code == 2 and "finite number of seconds > 0" in capsys.readouterr().err
    with pytest.raises(ValueError, match="finite"):
        PoolConfig(timeout_s=float(deadline))


# Issue 33, item 3: a reward that writes into its own reply channel, and one whose processes try to outlive it.
def _sleepers(tag: str) -> list[int]:
    """Host pids whose command line is `sleep <tag>`."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if f.read() == f"sleep\x00{tag}\x00".encode():
                    found.append(int(pid))
        except OSError:
            continue
    return found


def _await_sleepers(tag: str, count: int) -> None:
    """The orphan is started by a shell that does not wait for it: give it a moment to exec."""
    deadline = time.monotonic() + 5
    while len(_sleepers(tag)) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(_sleepers(tag)) == count


def _tag() -> str:
    return f"{3000 + os.getpid() % 1000}.{random.randrange(10**6)}"  # a sleep length no one else uses


def test_a_forged_reply_is_marked_and_later_scores_do_not_shift():
    """`forge` writes a 99.0 reply before its real one, `forge_later` from a thread after it: the first is that
    sample's ``channel`` error, the second replaces the process before the next call; every other sample keeps
    its own score (before the fix: 99.0, then each score one sample late)."""
    worker = RewardWorker(BOMBS)
    try:
        results = []
        for attack, value in [("ok", 1.0), ("forge", 0.0), ("ok", 2.0), ("ok", 3.0), ("forge_later", 1.0),
                              ("ok", 5.0), ("ok", 6.0)]:
            results.append(worker.score([sample(attack, value)], deadline_s=5).results[0])
            time.sleep(0.4 if attack == "forge_later" else 0)  # its thread writes 0.2 s after the reply
    finally:
        worker.close()
    assert [r.total for r in results] == [1.0, None, 2.0, 3.0, 1.0, 5.0, 6.0], results
    assert results[1].error == "channel" and "wrong request id" in results[1].message
    assert all(r.error is None for i, r in enumerate(results) if i != 1)
    assert worker.replaced == 2


def test_a_setsid_grandchild_ends_with_the_worker():
    """A `setsid` child and an orphan whose parent exited both escape a process-group kill; the reward process
    is their subreaper, so closing the worker ends them."""
    tag = _tag()
    worker = RewardWorker(BOMBS)
    try:
        result = worker.score([Sample.from_row({"prompt": "q", "completion": "c", "attack": "setsid",
                                                "tag": tag})], deadline_s=5).results[0]
        assert result.error is None, result.message
        _await_sleepers(tag, 2)
    finally:
        worker.close()
    assert _sleepers(tag) == []


def test_the_pool_scores_past_a_forged_reply_and_leaves_no_process_behind():
    tag = _tag()
    with local_ray(num_cpus=2, object_store_mb=128):
        config = PoolConfig(num_workers=1, timeout_s=5, chunk_size=8, grace_s=2)
        with RewardPool(BOMBS, config=config) as pool:
            batch = pool.score([sample("ok", 1.0), sample("forge"), sample("ok", 2.0), sample("ok", 3.0),
                                Sample.from_row({"prompt": "q", "completion": "c", "attack": "setsid", "tag": tag})])
            assert [r.error for r in batch.results] == [None, "channel", None, None, None]
            assert [batch.results[i].total for i in (0, 2, 3)] == [1.0, 2.0, 3.0]
            _await_sleepers(tag, 2)
    assert _sleepers(tag) == []
