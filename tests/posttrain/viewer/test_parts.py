"""Completion segments for highlighting, and the terminal rendering of a sample."""

from __future__ import annotations

from rich.console import Console

from keye_protocol.chat import format_code_step, format_response
from posttrain.viewer import terminal
from posttrain.viewer.parts import segments
from posttrain.viewer.records import view_record


def kinds(text: str) -> list[tuple[str, str]]:
    parts = segments(text)
    assert "".join(p["text"] for p in parts) == text  # nothing lost or added
    return [(p["kind"], p["text"]) for p in parts if p["kind"] not in ("tag", "special")]


def test_auto_think_parts():
    text = format_response("auto_think", "so \\boxed{12}", think="3*4", analysis="needs work") + "<|im_end|>"
    assert kinds(text) == [("analysis", "needs work"), ("think", "3*4"), ("answer", "so "), ("boxed", "12")]


def test_agentic_code_and_sandbox_output():
    think = "try it\n" + format_code_step("print(2+2)", "4") + "done"
    parts = kinds(format_response("agentic", "\\boxed{4}", think=think))
    assert ("code", "print(2+2)") in parts and ("sandbox", "4") in parts
    assert ("think", "try it\n") in parts and parts[-1] == ("boxed", "4")


def test_no_think_answer_without_tags_and_unclosed_think():
    assert kinds("it is \\boxed{7}") == [("answer", "it is "), ("boxed", "7")]
    assert kinds("<think>still going") == [("think", "still going")]
    assert kinds("x ``` y") == [("answer", "x ``` y")]  # a bare fence is text


def test_terminal_prints_model_text_verbatim():
    record = {"step": 3, "group": 1, "sample_index": 2, "mode": "think", "prompt_id": "q9", "prompt": "[red]hi[/red]",
              "completion": "<think>[bold]x[/bold]</think><answer>\\boxed{5}</answer>", "reward": None,
              "reward_components": {}, "reward_error": "timeout", "reward_message": "took 30 s", "advantage": 0.0,
              "weight_version": 3, "finish_reason": "stop", "completion_tokens": 9, "answer": "5"}
    console = Console(record=True, width=100, color_system=None)
    terminal.show([view_record(record, "01-rl", 0, lambda _, p: p)], total=1, console=console)
    out = console.export_text()
    assert "[red]hi[/red]" in out and "[bold]x[/bold]" in out  # not parsed as console markup
    assert "reward error: timeout  took 30 s" in out and "boxed='5'" in out and "weights v3" in out
