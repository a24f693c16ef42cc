"""`posttrain traces export`: one offline HTML file, and filtered JSONL / Parquet datasets."""

from __future__ import annotations

import json
import re

import pytest

from posttrain.cli import main


def export_html(run_dir, tmp_path):
    out = tmp_path / "attach" / "traces.html"
    assert main(["traces", "export", str(run_dir), "--format", "html", "-o", str(out)]) == 0
    return out


def test_html_export_is_one_file_without_external_urls(run_dir, tmp_path):
    out = export_html(run_dir, tmp_path)
    assert sorted(p.name for p in out.parent.iterdir()) == ["traces.html"]
    html = out.read_text()
    assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/", html, re.IGNORECASE), "an external URL"
    assert "data:image/png;base64," in html  # the trace image rides inside the page
    assert html.count("<script") == 2 and html.count("</script>") == 2  # the page's own; model text is escaped


def test_html_export_opens_offline(run_dir, tmp_path, browser):
    out = export_html(run_dir, tmp_path)
    dom = browser(out.as_uri() + "?mode=think&max_reward=0.5")  # offline: the browser's proxy is a dead port
    assert "(exported, offline)" in dom and "exported 12 of 12 matching samples" in dom
    assert "3 matching samples" in dom and len(re.findall(r'<article class="sample', dom)) == 3
    dom = browser(out.as_uri() + "?error=1")
    assert "&lt;script&gt;document.title='pwned'" in dom and 'id="pwned"' not in dom
    assert re.search(r"<title>traces · synthetic</title>", dom)


def test_jsonl_export_keeps_the_matching_lines(run_dir, tmp_path, rows):
    out = tmp_path / "think.jsonl"
    assert main(["traces", "export", str(run_dir), "--format", "jsonl", "--mode", "think", "--step", "2",
                 "-o", str(out)]) == 0
    assert [json.loads(line) for line in out.read_text().splitlines()] == [r for r in rows
                                                                           if r["mode"] == "think" and r["step"] == 2]


def test_html_export_limit_is_noted(run_dir, tmp_path):
    out = tmp_path / "few.html"
    assert main(["traces", "export", str(run_dir), "--limit", "2", "--text", "colour", "-o", str(out)]) == 0
    assert "exported 2 of 6 matching samples, evenly spaced over them (text=colour)" in out.read_text()


def test_a_capped_export_spans_every_step_not_the_first_few(run_dir, tmp_path, rows):
    out = tmp_path / "few.jsonl"
    assert main(["traces", "export", str(run_dir), "--format", "jsonl", "--limit", "3", "-o", str(out)]) == 0
    steps = [json.loads(line)["step"] for line in out.read_text().splitlines()]
    all_steps = sorted({r["step"] for r in rows})
    assert len(steps) == 3 and steps[0] == all_steps[0] and steps[-1] > all_steps[0] and len(set(all_steps)) > 1


def test_parquet_export_flattens_reward_components(run_dir, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet", reason="parquet export needs pyarrow")
    out = tmp_path / "errors.parquet"
    assert main(["traces", "export", str(run_dir), "--format", "parquet", "--min-reward", "0.5", "-o", str(out)]) == 0
    table = pq.read_table(out).to_pylist()
    assert len(table) == 6 and all(row["reward"] == 1.0 for row in table)
    assert table[0]["reward_component.math"] == 1.0 and json.loads(table[0]["timings"]) == {"generate_s": 0.1}
    assert table[0]["images"] == '["trace_images/0-0-0.png"]'


def test_html_export_embeds_a_gap_strip_escaped(make_run, rows, distill_record, tmp_path):
    html = export_html(make_run([distill_record, *rows[1:]]), tmp_path).read_text()
    assert '{"text": "\\u003cb\\u003e4\\u003c/b\\u003e", "gap": 3.0, "shade": 4}' in html
    assert "<b>4</b>" not in html and html.count("<script") == 2
