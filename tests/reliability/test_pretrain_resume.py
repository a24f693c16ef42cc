"""Sample-level resume of a pre-training stage: killed with SIGKILL after a checkpoint (driver, Ray and learner
processes together), the rerun resumes at the checkpoint's step and replays the same batches, so its losses and
its final weights equal those of an uninterrupted run. A checkpoint of another data order is refused."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file

from posttrain.stages.sft import order_digest, resume_step

RECIPE = """
name: resume
runs_dir: {runs}
data: {{kind: files}}
learner: {{precision: fp32, micro_batching: pack}}
stages:
  - {{kind: pretrain_data, train_rows: {{caption: 32, counting: 32}}, eval_rows: 4}}
  - {{kind: pretrain, mixture: {{caption: 1, counting: 1}}, steps: {steps}, batch_size: 4, checkpoint_every: 2,
     learner: {{lr: 1.0e-3}}}}
"""


def write_recipe(root: Path, steps: int = 8) -> Path:
    path = root / "recipe.yaml"
    path.write_text(RECIPE.format(runs=root / "runs", steps=steps))
    return path


def run(recipe: Path, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "posttrain.cli", "run", str(recipe)],
                            **{"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True, **kwargs})


def losses(stage: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in map(json.loads, (stage / "metrics.jsonl").read_text().splitlines())}


@pytest.mark.slow
def test_kill_9_mid_pretraining_resumes_with_the_same_losses(tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    whole.mkdir(), killed.mkdir()
    # the uninterrupted run goes on beside the one killed below (two runs on 2 cores take about 2/3 of their
    # time one after the other); its output goes to a file, which no pipe's buffer limits
    log = (tmp_path / "whole.log").open("w+")
    with run(write_recipe(whole), stdout=log):  # waited for at the end of the block, even if an assert fails
        stage = killed / "runs" / "resume" / "01-pretrain"
        process = run(write_recipe(killed), start_new_session=True)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and process.poll() is None:
            if (stage / "checkpoints" / "step-000004").exists():
                break
            time.sleep(0.2)
        assert process.poll() is None, "the run ended before it could be killed"
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        assert not (stage / "done.json").exists()
        resumed, _ = run(write_recipe(killed)).communicate(timeout=600)
    log.seek(0)
    output = log.read()
    assert "Traceback" not in output, output[-3000:]
    assert "00-pretrain_data: done earlier, skipped" in resumed, resumed[-3000:]

    reference = losses(whole / "runs" / "resume" / "01-pretrain")
    assert sorted(reference) == list(range(8))
    assert losses(stage) == pytest.approx(reference, abs=1e-6)
    before = load_file(whole / "runs" / "resume" / "01-pretrain" / "model" / "model.safetensors")
    after = load_file(stage / "model" / "model.safetensors")
    assert all((before[k] - after[k]).abs().max() < 1e-6 for k in before)


def test_a_checkpoint_of_another_data_order_is_refused(tmp_path):
    order = [np.array([0, 1]), np.array([2, 3])]
    state = {"order_digest": order_digest(order), "items": 4}
    assert resume_step(tmp_path / "step-000002", {"step": 2, **state}, state) == 2
    assert resume_step(tmp_path / "step-000002", {"step": 2}, state) == 2  # checkpoints from before the digest
    other = {"order_digest": order_digest([np.array([1, 0]), np.array([2, 3])]), "items": 4}
    with pytest.raises(ValueError, match="order_digest .* changed since the checkpoint"):
        resume_step(tmp_path / "step-000002", {"step": 2, **state}, other)
