"""The agentic loop with a scripted policy (exact token accounting) and with the real tiny model."""

import pytest
import torch
from PIL import Image

from keye_protocol.chat import parse_response
from rollout.agentic import AgenticLoop, ToolResult
from rollout.encoding import PromptEncoder
from rollout.types import Completion, GenerationRequest, SamplingParams

CODE_TURN = "<think>zoom in\n```python\nprint(image.size)\n```"
ANSWER_TURN = "\nso it is small</think><answer>\\boxed{56}</answer><|im_end|>"


class ScriptedEngine:
    """Stands in for the engine: returns the next scripted turn for every prompt it is given."""

    def __init__(self, tokenizer, turns):
        self.encoder = PromptEncoder(tokenizer)
        self.turns, self.calls, self.weight_version = list(turns), [], 3

    def check_length(self, prompt, request_id):
        pass

    def generate_encoded(self, prompts, sampling, stop_when=None):
        text = self.turns[len(self.calls)]
        self.calls.append([list(p.input_ids) for p in prompts])
        ids = self.encoder.text_ids(text)[: sampling.max_tokens]
        return [Completion("", 0, p.input_ids, ids, text, [-0.5] * len(ids), [1] * len(ids), "stop") for p in prompts]


def request():
    return GenerationRequest("r", [{"role": "user", "content": "How wide? /agentic_think"}], "agentic")


def test_sandbox_tokens_are_inserted_and_masked(tiny_tokenizer):
    engine = ScriptedEngine(tiny_tokenizer, [CODE_TURN, ANSWER_TURN])
    seen = []
    loop = AgenticLoop(engine, lambda code, images: seen.append(code) or ToolResult("(56, 56)"))
    [completion] = loop.generate([request()], SamplingParams(max_tokens=200))
    encode = engine.encoder.text_ids
    inserted = encode("\n<sandbox_output>(56, 56)") + encode("</sandbox_output>\n")
    code_ids, answer_ids = encode(CODE_TURN), encode(ANSWER_TURN)
    assert completion.token_ids == code_ids + inserted + answer_ids
    assert completion.loss_mask == [1] * len(code_ids) + [0] * len(inserted) + [1] * len(answer_ids)
    assert completion.logprobs[len(code_ids):len(code_ids) + len(inserted)] == [0.0] * len(inserted)
    assert seen == ["print(image.size)"]
    assert completion.finish_reason == "stop" and completion.weight_version == 3
    # the second turn continued from the sampled ids exactly, not from re-tokenized text
    assert engine.calls[1][0] == completion.prompt_ids + code_ids + inserted
    parsed = parse_response(completion.text)
    assert parsed.sandbox_outputs == ["(56, 56)"] and parsed.final_answer == "56"


def test_tool_turn_limit(tiny_tokenizer):
    engine = ScriptedEngine(tiny_tokenizer, [CODE_TURN, "\n```python\nprint(1)\n```"])
    loop = AgenticLoop(engine, lambda code, images: ToolResult("ok"), max_tool_turns=1)
    [completion] = loop.generate([request()], SamplingParams(max_tokens=200))
    assert completion.finish_reason == "tool_limit" and len(completion.tool_calls) == 1


def test_a_failing_sandbox_ends_only_that_sample(tiny_tokenizer):
    def broken(code, images):
        raise OSError("no processes left")

    engine = ScriptedEngine(tiny_tokenizer, [CODE_TURN])
    [completion] = AgenticLoop(engine, broken).generate([request()], SamplingParams(max_tokens=200))
    assert completion.finish_reason == "error" and "no processes left" in completion.error


def test_an_image_the_processor_refuses_is_explained_to_the_model_not_raised(tiny_tokenizer, tiny_model_dir):
    engine = ScriptedEngine(tiny_tokenizer, [CODE_TURN, ANSWER_TURN])
    engine.encoder = PromptEncoder.from_model_dir(tiny_model_dir)  # with the image processor
    sliver = Image.new("RGB", (132, 12))  # a crop the tiny model wrote: shorter side under one 28-px block
    loop = AgenticLoop(engine, lambda code, images: ToolResult("cropped", images=[sliver]))
    [completion] = loop.generate([request()], SamplingParams(max_tokens=400))
    assert completion.finish_reason == "stop" and completion.images == []
    [output] = parse_response(completion.text).sandbox_outputs
    assert output.startswith("cropped\n[images not shown: image 0 is 132x12 px")
    assert completion.tool_calls[0]["images"] == 0


def test_token_budget_covers_all_turns(tiny_tokenizer):
    engine = ScriptedEngine(tiny_tokenizer, [CODE_TURN, ANSWER_TURN])
    budget = len(engine.encoder.text_ids(CODE_TURN)) + 12
    loop = AgenticLoop(engine, lambda code, images: ToolResult("x"))
    [completion] = loop.generate([request()], SamplingParams(max_tokens=budget))
    # inserted sandbox tokens count against the budget too: it bounds the sequence the learner sees
    assert len(completion.token_ids) == budget and completion.finish_reason == "length"
    assert 0 < sum(completion.loss_mask) < budget


def test_sandbox_image_goes_into_the_context(tiny_tokenizer, tiny_processor):
    engine = ScriptedEngine(tiny_tokenizer, [CODE_TURN, ANSWER_TURN])
    engine.encoder = PromptEncoder(tiny_processor)
    crop = Image.new("RGB", (56, 56), "green")
    loop = AgenticLoop(engine, lambda code, images: ToolResult("saved crop", [crop]))
    [completion] = loop.generate([request()], SamplingParams(max_tokens=200))
    pad = tiny_tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert completion.token_ids.count(pad) == 4 and completion.images == [crop]
    assert all(m == 0 for t, m in zip(completion.token_ids, completion.loss_mask) if t == pad)


@pytest.mark.slow
def test_tiny_model_end_to_end_after_learning_one_tool_call(tiny_model_dir, tmp_path):
    """Teach the tiny model one agentic response, then let it run: its code must really execute."""
    from rollout.hf_engine import TransformersEngine
    from rollout.sandbox_tool import sandbox_tool_runner

    engine = TransformersEngine.from_pretrained(tiny_model_dir)
    prompt = engine.encoder.encode(request())
    target = engine.encoder.text_ids("<think>look\n```python\nprint(6 * 7)\n```")
    ids = torch.tensor([prompt.input_ids + target])
    labels = ids.clone()
    labels[0, : len(prompt)] = -100
    model = engine.model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(60):
        optimizer.zero_grad()
        model(input_ids=ids, labels=labels).loss.backward()
        optimizer.step()
    model.eval()
    loop = AgenticLoop(engine, sandbox_tool_runner(), max_tool_turns=1)
    [completion] = loop.generate([request()], SamplingParams(temperature=0, max_tokens=len(target) + 30))
    assert completion.tool_calls and completion.tool_calls[0]["code"] == "print(6 * 7)"
    assert completion.tool_calls[0]["output"].strip() == "42"
    first_masked = completion.loss_mask.index(0)
    assert completion.token_ids[:first_masked] == target
    assert "<sandbox_output>42" in completion.text
