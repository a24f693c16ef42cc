"""The worker's isolation, in process (no Ray): exceptions, deadlines, invalid values, batched fallback."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from rewards.sample import Sample
from rewards.worker import RewardWorker

FAULTY = Path(__file__).parent / "plugins" / "faulty.py"


def sample(behaviour: str, value: float = 1.0) -> Sample:
    return Sample.from_row({"prompt": "q", "completion": "c", "behaviour": behaviour, "value": value})


def test_each_failure_is_recorded_on_its_own_sample():
    worker = RewardWorker(f"{FAULTY}:behave")
    reply = worker.score([sample("ok", 2.0), sample("raise"), sample("nan"), sample("inf"), sample("wrong_type"),
                          sample("ok", 3.0)], deadline_s=5.0)
    kinds = [(r.total, r.error) for r in reply.results]
    assert kinds == [(2.0, None), (None, "exception"), (None, "invalid"), (None, "invalid"), (None, "invalid"),
                     (3.0, None)]
    assert reply.results[1].message.startswith("RuntimeError: boom (at faulty.py:")
    assert "nan" in reply.results[2].message and "must be finite" in reply.results[2].message
    assert "returned str '1.0'" in reply.results[4].message


def test_a_hang_times_out_and_the_samples_after_it_are_still_scored():
    worker = RewardWorker(f"{FAULTY}:behave")
    start = time.perf_counter()
    reply = worker.score([sample("ok"), sample("hang"), sample("ok", 5.0)], deadline_s=0.3)
    assert time.perf_counter() - start < 0.3 + 3.0  # the deadline plus one restart of the reward's process
    assert reply.results[0].total == 1.0
    assert reply.results[1].error == "timeout" and "0.3s" in reply.results[1].message
    assert reply.results[2].total == 5.0  # scored by the fresh process
    assert reply.restarts == 1


def test_a_batched_reward_that_raises_is_retried_sample_by_sample():
    worker = RewardWorker(f"{FAULTY}:batched_lengths")
    reply = worker.score([sample("ok"), sample("raise"), sample("ok")], deadline_s=5.0)
    assert [r.error for r in reply.results] == [None, "exception", None]
    assert [r.total for r in reply.results] == [1.0, None, 1.0]  # len("c"): text prompt, text completion
    assert "batched boom" in reply.results[1].message


def test_builtin_math_through_the_worker():
    worker = RewardWorker({"math": 1.0, "format": 0.5})
    good = Sample(prompt="1/4+1/4? /think", completion="<think>half</think><answer>\\boxed{0.5}</answer>",
                  ground_truth="1/2")
    bad = Sample(prompt="2+2? /no_think", completion="5", ground_truth="4")
    results = worker.score([good, bad], deadline_s=30).results
    assert (results[0].total, results[0].components) == (1.5, {"math": 1.0, "format": 1.0})
    assert (results[1].total, results[1].components) == (0.5, {"math": 0.0, "format": 1.0})


def test_the_builtin_rewards_import_without_torch():
    """Reward processes start within their deadline and memory limit because nothing they import loads torch:
    the chat protocol and grounding format come from `keye_protocol`, not the model package `keye_vl`."""
    script = ("import sys, keye_protocol.chat, keye_protocol.grounding, rewards, rewards.math_answer, "
              "rewards.grounding, rewards.format, rewards.counting, rewards.worker\n"
              "print(sorted(m for m in ('torch', 'transformers', 'keye_vl') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "[]", done.stderr[-2000:]
