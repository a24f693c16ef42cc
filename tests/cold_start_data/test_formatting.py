import pytest

from cold_start_data.formatting import (
    analysis_text,
    assistant_content,
    format_agentic,
    format_solution,
    prompt_messages,
    response_text,
)
from cold_start_data.sources.arithmetic import addition_task
from keye_protocol.chat import parse_response, render_chat
from rewards.format import analysis_decision, format_problems

TASK = addition_task(37, 45, style="compact")


def test_exact_strings_of_each_mode():
    sol = TASK.solution
    assert format_solution("no_think", sol) == "\\boxed{82}"
    assert format_solution("think", sol) == "<think>7+5=12, carry 1.\n3+4+1=8.</think><answer>\\boxed{82}</answer>"
    assert format_solution("auto_think", sol, complex_=False, reason="one step") == (
        "<analysis>This is simple, so I can answer directly: one step.</analysis><answer>\\boxed{82}</answer>")
    assert format_solution("auto_think", sol, complex_=True, reason="a carry") == (
        "<analysis>This is multi-step and needs reasoning: a carry.</analysis>"
        "<think>7+5=12, carry 1.\n3+4+1=8.</think><answer>\\boxed{82}</answer>")


@pytest.mark.parametrize("complex_", [False, True])
def test_auto_think_analysis_is_read_back_by_the_format_reward(complex_):
    assert analysis_decision(analysis_text(complex_, "it takes 3 steps")) is complex_
    text = format_solution("auto_think", TASK.solution, complex_=complex_, reason="it takes 3 steps")
    assert format_problems(text, "auto_think") == []
    assert parse_response(text).reasoned is complex_


def test_agentic_response_and_its_sandbox_image():
    text = format_agentic("Zoom in.", "print(1)", "1\n", ["It prints 1."], "\\boxed{1}")
    assert text == ("<think>Zoom in.\n```python\nprint(1)\n```\n<sandbox_output>1\n</sandbox_output>\nIt prints 1."
                    "</think><answer>\\boxed{1}</answer>")
    assert format_problems(text, "agentic") == []
    items = assistant_content(text, [["IMG"]])
    assert [i["type"] for i in items] == ["text", "image", "text"]
    assert items[0]["text"].endswith("<sandbox_output>1\n") and items[2]["text"].startswith("</sandbox_output>")
    assert response_text(items) == text
    rendered = render_chat([{"role": "assistant", "content": items}], add_generation_prompt=False)
    assert "<sandbox_output>1\n<|vision_start|><|image_pad|><|vision_end|></sandbox_output>" in rendered


def test_prompt_gets_the_mode_suffix_after_the_image():
    task = addition_task(1, 2)
    task.images = ["IMG"]
    messages = prompt_messages(task, "agentic")
    assert messages[0]["content"] == [{"type": "image", "image": "IMG"},
                                      {"type": "text", "text": "What is 1 + 2? /agentic_think"}]
    assert task.messages()[0]["content"][-1]["text"] == "What is 1 + 2?"  # the task itself is unchanged


def test_agentic_needs_its_own_formatter():
    with pytest.raises(ValueError, match="format_agentic"):
        format_solution("agentic", TASK.solution)
    with pytest.raises(ValueError, match="judge"):
        format_solution("auto_think", TASK.solution)
