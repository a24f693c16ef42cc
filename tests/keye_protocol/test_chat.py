import pytest

from keye_protocol import chat
from keye_protocol.chat import Mode, format_code_step, format_response, parse_response
from keye_protocol.grounding import format_boxes, format_points, normalize_box, parse_boxes, parse_points


@pytest.mark.parametrize("mode, kwargs, reasoned", [
    (Mode.NO_THINK, dict(answer="\\boxed{12}"), False),
    (Mode.THINK, dict(answer="It is \\boxed{12}.", think="7 + 5 = 12"), True),
    (Mode.AUTO_THINK, dict(answer="\\boxed{12}", analysis="Simple sum, no reasoning needed."), False),
    (Mode.AUTO_THINK, dict(answer="\\boxed{12}", analysis="Needs care.", think="7 + 5 = 12"), True),
    (Mode.AGENTIC, dict(answer="\\boxed{12}", think="zoom in\n" + format_code_step("print(7 + 5)", "12")), True),
])
def test_every_mode_round_trips(mode, kwargs, reasoned):
    parsed = parse_response(format_response(mode, **kwargs))
    assert parsed.problems == []
    assert parsed.final_answer == "12"
    assert parsed.reasoned == reasoned
    assert parsed.think == kwargs.get("think")
    assert parsed.analysis == kwargs.get("analysis")


def test_agentic_parts_are_extracted():
    think = "look\n" + format_code_step("img = image.crop((0, 0, 10, 10))\nprint(img.size)", "(10, 10)") + "ok"
    parsed = parse_response(format_response(Mode.AGENTIC, "\\boxed{3}", think=think))
    assert parsed.code_blocks == ["img = image.crop((0, 0, 10, 10))\nprint(img.size)"]
    assert parsed.sandbox_outputs == ["(10, 10)"]
    assert not parsed.open_code_block


def test_exact_formats_of_keye():
    assert format_response("think", "A", think="r") == "<think>r</think><answer>A</answer>"
    assert format_response("auto_think", "A", analysis="s") == "<analysis>s</analysis><answer>A</answer>"
    assert format_response("no_think", "A") == "A"


def test_no_think_with_empty_think_block():
    parsed = parse_response("<think>\n\n</think>\n\nThe answer is \\boxed{5}")
    assert parsed.final_answer == "5" and not parsed.reasoned


def test_last_answer_after_reasoning_wins():
    text = "<think>maybe <answer>\\boxed{1}</answer></think><answer>\\boxed{2}</answer>"
    assert parse_response(text).final_answer == "2"


@pytest.mark.parametrize("text, problem", [
    ("<think>still going", "unclosed <think>"),
    ("<think>r</think><answer>\\boxed{2}", "unclosed <answer>"),
    ("<analysis>hmm", "unclosed <analysis>"),
    ("r</think><answer>1</answer>", "</think> without <think>"),
])
def test_malformed_output_is_reported(text, problem):
    assert problem in parse_response(text).problems


def test_unclosed_think_has_no_answer():
    assert parse_response("<think>7 + 5 = \\boxed{12}").answer is None


def test_unclosed_code_block_is_flagged():
    parsed = parse_response("<think>```python\nprint(1)\n</think><answer>1</answer>")
    assert parsed.open_code_block and parsed.code_blocks == []


def test_open_code_block_trigger():
    assert chat.open_code_block("<think>crop\n```python\nprint(1)\n```") == "print(1)"
    assert chat.open_code_block("<think>crop\n```python\nprint(1)\n") is None


def test_mode_suffix_ends_the_user_turn():
    messages = [{"role": "user", "content": [{"type": "text", "text": "What is it? /think"},
                                             {"type": "image", "image": None}]}]
    text = chat.render_chat(messages, mode="no_think")
    assert text == ("<|im_start|>user\nWhat is it?<|vision_start|><|image_pad|><|vision_end|> /no_think<|im_end|>\n"
                    "<|im_start|>assistant\n")
    assert chat.mode_of_prompt("hi /agentic_think") is Mode.AGENTIC
    assert chat.mode_of_prompt("hi") is Mode.AUTO_THINK


def test_unknown_mode_lists_choices():
    with pytest.raises(ValueError, match="valid modes are"):
        chat.parse_mode("deep_think")


def test_jinja_template_agrees_with_render_chat(tiny_tokenizer):
    messages = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "image", "image": None}, {"type": "text", "text": "Hi /think"}]},
                {"role": "assistant", "content": "<think>x</think><answer>1</answer>"},
                {"role": "user", "content": "Again"}]
    for prompt in (True, False):
        jinja = tiny_tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=prompt,
                                                   chat_template=chat.CHAT_TEMPLATE)
        assert jinja == chat.render_chat(messages, add_generation_prompt=prompt)


def test_grounding_round_trip():
    box = normalize_box((50, 25, 100, 100), width=200, height=100)
    assert box == [250, 250, 500, 999]
    text = "the cat " + format_boxes([box, [0, 0, 10, 10]])
    assert parse_boxes(text) == [[250, 250, 500, 999], [0, 0, 10, 10]]
    assert parse_points(text) == []
    assert parse_points(format_points([[120, 340]])) == [[120, 340]]
