"""The live viewer page in headless Chromium: it shows a known sample, URL filters work, a group opens side by
side, and a completion that carries a `<script>` is shown as text without running."""

from __future__ import annotations

import json
import re


def articles(dom: str) -> list[str]:
    return re.findall(r'<article class="sample [^"]*"[^>]*>', dom)


def title(dom: str) -> str:
    return re.search(r"<title>(.*?)</title>", dom, re.DOTALL).group(1)


def test_page_shows_known_sample_and_never_runs_model_text(served, browser):
    dom = browser(served + "/")
    assert 'data-ready="1"' in dom, "the page script did not finish"
    assert "12 matching samples" in dom and len(articles(dom)) == 12
    assert 'data-id="01-rl:0"' in dom and "What is 16 + 61?" in dom
    assert '<span class="seg-boxed">77</span>' in dom
    assert 'src="/files/01-rl/trace_images/0-0-0.png"' in dom
    # the injected completion and reward message are text, not elements, and nothing ran
    assert "&lt;script&gt;document.title='pwned'" in dom
    assert "&lt;b&gt;not bold&lt;/b&gt;" in dom
    assert title(dom) == "traces · synthetic"
    assert 'id="pwned"' not in dom and "<b>not bold</b>" not in dom


def test_filters_read_from_the_url(served, browser):
    dom = browser(served + "/?mode=no_think&min_reward=0.5")
    assert "3 matching samples" in dom
    found = articles(dom)
    assert len(found) == 3 and all('data-mode="no_think"' in a for a in found)


def test_group_view_lists_the_group_side_by_side(served, browser):
    dom = browser(served + "/?view=group&stage=01-rl&step=1&group=0")
    assert "group 0 at step 1: 2 samples" in dom and 'class="grid"' in dom
    found = articles(dom)
    assert len(found) == 2 and all('data-step="1"' in a for a in found)
    assert "mean reward <b>0.500</b>" in dom


def test_a_distill_sample_shows_its_gap_strip_as_text(served, run_dir, rows, distill_record, browser):
    rows[0] = distill_record
    (run_dir / "01-rl" / "traces.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    dom = browser(served + "/?step=0&group=0")
    assert 'data-ready="1"' in dom and "teacher thinker: log p_student − log p_teacher, mean +0.358" in dom
    assert '<span class="gap-p4" title="gap +3.000">&lt;b&gt;4&lt;/b&gt;</span>' in dom  # escaped, not bold
    assert '<span class="gap-n3" title="gap -1.200">&lt;/think&gt;</span>' in dom
