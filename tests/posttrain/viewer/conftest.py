"""A small synthetic run (one RL stage with known samples, an image, a failed reward and a completion that
tries to inject a script) and a headless-Chromium helper for the viewer tests."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

MALICIOUS = ("<script>document.title='pwned';document.body.appendChild(Object.assign("
             "document.createElement('div'),{id:'pwned'}))</script><img src=x onerror=\"document.title='pwned'\">")


def record(step, group, sample, mode, prompt, completion, reward, **extra) -> dict:
    return {"step": step, "run": "synthetic", "stage": "01-rl", "prompt_id": f"p{group}", "sample_index": sample,
            "group": group, "mode": mode, "prompt": prompt, "answer": "77", "completion": completion,
            "finish_reason": "stop", "prompt_tokens": 12, "completion_tokens": len(completion) // 3,
            "reward": reward, "reward_components": {"math": reward or 0.0, "format": 0.0}, "reward_error": None,
            "reward_message": None, "advantage": (reward or 0.0) - 0.5, "weight_version": step, "worker": "rollout-0",
            "timings": {"generate_s": 0.1}, "tool_calls": [], "images": [], **extra}


def trace_records() -> list[dict]:
    """3 steps x 2 groups x 2 samples; group 0 (p0) is think mode, group 1 (p1) no_think."""
    rows, question = [], "What is 16 + 61?"
    for step in range(3):
        rows += [record(step, 0, 0, "think", question, "<think>6+1=7</think><answer>\\boxed{77}</answer>", 1.0),
                 record(step, 0, 1, "think", question, "<think>6+1=8</think><answer>\\boxed{78}</answer>", 0.0),
                 record(step, 1, 0, "no_think", "Name the colour.", f"answer {step}: \\boxed{{blue}}", 1.0),
                 record(step, 1, 1, "no_think", "Name the colour.", "zebra-crossing", 0.0)]
    rows[0]["images"] = ["trace_images/0-0-0.png"]
    rows[3].update(completion=MALICIOUS, reward=None, reward_error="exception",
                   reward_message="ValueError: <b>not bold</b>")
    return rows


def write_run(root: Path, rows: list[dict], torn_tail: str | None = None) -> Path:
    stage = root / "synthetic" / "01-rl"
    (stage / "trace_images").mkdir(parents=True)
    Image.new("RGB", (8, 8), (200, 30, 30)).save(stage / "trace_images" / "0-0-0.png")
    (root / "synthetic" / "01-rl" / "done.json").write_text(json.dumps({"stage": "01-rl", "headline": "ok"}))
    text = "".join(json.dumps(r) + "\n" for r in rows)
    (stage / "traces.jsonl").write_text(text + (torn_tail or ""))
    return root / "synthetic"


@pytest.fixture()
def rows() -> list[dict]:
    return trace_records()


@pytest.fixture()
def distill_record(rows) -> dict:
    """rows[0] as a distill sample: its completion as tokens with their teacher gaps, one token markup."""
    texts = ["<think>", "2+2", "</think>", "<answer>", "<b>4</b>", "</answer>"]
    gaps = [0.0, 0.6, -1.2, 0.05, 3.0, -0.3]
    return {**rows[0], "completion": "".join(texts), "completion_tokens": len(texts), "teacher": "thinker",
            "teacher_gap": sum(gaps) / len(gaps), "teacher_gaps": gaps, "token_texts": texts}


@pytest.fixture()
def make_run(tmp_path):
    """`make_run(rows, torn_tail=None) -> run directory` (once per test)."""
    return lambda records, torn_tail=None: write_run(tmp_path, records, torn_tail)


@pytest.fixture()
def run_dir(make_run, rows) -> Path:
    return make_run(rows)


@pytest.fixture()
def with_line(run_dir):
    """`with_line(line, at=2)` puts `line` into the run's traces after its first `at` lines (as line at + 1)."""
    def insert(line: str, at: int = 2) -> None:
        path = run_dir / "01-rl" / "traces.jsonl"
        lines = path.read_text().splitlines(keepends=True)
        path.write_text("".join(lines[:at]) + line + "\n" + "".join(lines[at:]))

    return insert


def chromium_binary() -> str | None:
    return next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


@pytest.fixture()
def browser(tmp_path):
    """`browser(url) -> DOM after the page's scripts ran` (headless Chromium, no network beyond loopback)."""
    binary = chromium_binary()
    if binary is None:
        pytest.skip("headless Chromium is not installed (apt-get install -y chromium); the viewer page is untested")

    def dump_dom(url: str) -> str:
        command = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                   "--disable-background-networking", "--disable-component-update", "--disable-sync",
                   "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'chromium-profile'}",
                   "--proxy-server=http://127.0.0.1:9",  # anything but loopback fails: the pages must not need it
                   "--virtual-time-budget=5000", "--dump-dom", url]
        done = subprocess.run(command, capture_output=True, text=True, timeout=90)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout

    return dump_dom


@pytest.fixture()
def served(run_dir):
    """The viewer server on a free 127.0.0.1 port in a background thread; yields its base URL."""
    import threading

    from posttrain.viewer.run import RunTraces
    from posttrain.viewer.server import make_server

    server = make_server(RunTraces(run_dir), port=0)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    yield f"http://{host}:{port}"
    server.shutdown()
    server.server_close()
