"""The viewer's JSON API over HTTP (no browser needed)."""

from __future__ import annotations

import json
import re
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
                              "errors": 1, "torn": False, "bad_lines": 0, "note": None}]
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


def fetch(url: str) -> tuple[int, dict, bytes]:
    """(status, headers, body) of a GET, whatever the status."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def test_a_bad_record_is_skipped_with_a_note_and_the_rest_served(served, with_line):
    with_line("[" * 200_000 + "]" * 200_000)
    with_line('{"step": 0, "completion": ["a"], "reward": "lots"}', at=5)
    status, run, _ = get(f"{served}/api/run")
    assert status == 200 and run["stages"][0]["samples"] == 12 and run["stages"][0]["bad_lines"] == 2
    assert run["stages"][0]["note"] == "2 unreadable lines skipped (first: line 3, JSON nested too deeply to parse)"
    status, page, _ = get(f"{served}/api/samples?step=0")
    assert status == 200 and page["total"] == 4 and len(page["samples"]) == 4


def test_a_huge_completion_is_clipped_in_the_reply(served, run_dir, rows):
    rows[1]["completion"] = "<think>" + "x" * 2_000_000 + "</think>"  # 2,000,015 characters
    (run_dir / "01-rl" / "traces.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    status, headers, body = fetch(f"{served}/api/samples?limit=12")
    sample = json.loads(body)["samples"][1]  # 12 samples: each text field at most 200,000 characters
    assert status == 200 and sample["clipped"] == {"completion": 2_000_015}
    assert len(sample["completion"]) == 200_000 + len(" … [1,800,015 of 2,000,015 characters cut] … ")
    assert int(headers["Content-Length"]) < 500_000  # the completion and its segments, once each, and the rest


def test_files_other_than_images_download_and_every_reply_has_a_policy(served, run_dir):
    (run_dir / "01-rl" / "page.html").write_text("<script>document.title='pwned'</script>")
    status, headers, body = fetch(f"{served}/files/01-rl/page.html")
    assert status == 200 and body.startswith(b"<script>")
    assert headers["Content-Type"] == "application/octet-stream"
    assert headers["Content-Disposition"] == "attachment; filename*=UTF-8''page.html"
    strict = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'; sandbox"
    for path in ("/files/01-rl/page.html", "/files/01-rl/trace_images/0-0-0.png", "/api/run", "/api/nope", "/x"):
        status, headers, _ = fetch(served + path)
        assert headers["Content-Security-Policy"] == strict, path
        assert headers["X-Content-Type-Options"] == "nosniff", path
    _, headers, _ = fetch(f"{served}/files/01-rl/trace_images/0-0-0.png")
    assert headers["Content-Type"] == "image/png" and "Content-Disposition" not in headers


def test_the_page_is_sent_with_its_own_policy(served):
    status, headers, body = fetch(served + "/")
    meta = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', body.decode()).group(1)
    assert status == 200 and headers["Content-Security-Policy"] == meta + "; frame-ancestors 'none'"
    assert "script-src 'sha256-" in meta and "default-src 'none'" in meta


def test_an_unexpected_error_answers_500_instead_of_closing_the_connection(served, monkeypatch):
    from posttrain.viewer.run import RunTraces

    def broken(self):
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(RunTraces, "overview", broken)
    status, body, _ = get(f"{served}/api/run")
    assert status == 500 and body == {"error": "RecursionError: maximum recursion depth exceeded"}


def test_a_distill_sample_carries_its_gap_strip(served, run_dir, rows, distill_record):
    rows[0] = distill_record
    (run_dir / "01-rl" / "traces.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    _, page, _ = get(f"{served}/api/samples?limit=2")
    first, second = page["samples"]
    assert first["teacher"] == "thinker" and second["teacher_strip"] is None
    assert first["teacher_strip"][4] == {"text": "<b>4</b>", "gap": 3.0, "shade": 4}  # raw: the page escapes it
