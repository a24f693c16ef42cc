"""The viewer's JSON API over HTTP (no browser needed)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest


def get(url: str) -> tuple[int, dict | bytes, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            body, status, kind = response.read(), response.status, response.headers["Content-Type"]
    except urllib.error.HTTPError as error:
        body, status, kind = error.read(), error.code, error.headers["Content-Type"]
    return status, json.loads(body) if kind.startswith("application/json") else body, kind


def test_bound_to_loopback_only(served):
    assert served.startswith("http://127.0.0.1:")


def test_run_overview_and_filtered_samples(served):
    status, run, _ = get(f"{served}/api/run")
    assert status == 200 and run["run"] == "synthetic"
    assert run["stages"] == [{"name": "01-rl", "samples": 12, "steps": [0, 2], "modes": ["no_think", "think"],
                              "errors": 1, "torn": False, "bad_lines": 0}]
    status, page, _ = get(f"{served}/api/samples?mode=think&min_reward=0.5&limit=2")
    assert status == 200 and page["total"] == 3 and len(page["samples"]) == 2
    sample = page["samples"][0]
    assert sample["prompt_text"] == "What is 16 + 61?" and sample["parsed"]["boxed"] == "77"
    assert {"kind": "boxed", "text": "77"} in sample["segments"]
    assert sample["images"] == ["/files/01-rl/trace_images/0-0-0.png"]


def test_group_prompt_and_images(served):
    _, group, _ = get(f"{served}/api/group?stage=01-rl&step=1&group=1")
    assert [s["sample_index"] for s in group["samples"]] == [0, 1]
    _, history, _ = get(f"{served}/api/prompt?prompt_id=p0")
    assert history["total"] == 6
    status, body, kind = get(f"{served}/files/01-rl/trace_images/0-0-0.png")
    assert status == 200 and kind == "image/png" and body.startswith(b"\x89PNG")


@pytest.mark.parametrize("path", ["/api/samples?step=x", "/api/group?stage=01-rl", "/api/nope",
                                  "/api/samples?stage=02-missing"])
def test_bad_requests_answer_400(served, path):
    status, body, _ = get(served + path)
    assert status == 400 and body["error"]


@pytest.mark.parametrize("path", ["/files/01-rl/..%2F..%2F..%2Fetc%2Fpasswd", "/files/01-rl/%2Fetc%2Fpasswd",
                                  "/files/nostage/x.png", "/elsewhere"])
def test_nothing_outside_the_stage_is_served(served, path):
    status, _, _ = get(served + path)
    assert status == 404
