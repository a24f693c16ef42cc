"""Shared-prefix micro-batches: the layout by hand, and log-probs, losses and gradients equal to row-per-sample
on a plain Qwen3 and on keye-tiny with image prompts (the vision tower run once per group)."""

import pytest
import torch
from PIL import Image

from keye_protocol.chat import format_response
from posttrain.learners.batch import TrainBatch
from posttrain.learners.learner import Learner
from posttrain.learners.learner_config import LearnerConfig
from posttrain.learners.shared_prefix import build_shared_micro_batches


def grouped(sequences: list[list[int]], prompt_lengths: list[int], group_size: int, pad: int = 0,
            seed: int = 0, **vision) -> TrainBatch:
    """Right-padded rows in groups of `group_size`, loss on each row's tokens after its prompt, random
    advantages and behaviour log-probs (so GRPO's clipping is exercised)."""
    g = torch.Generator().manual_seed(seed)
    longest = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), longest), pad, dtype=torch.long)
    attn = torch.zeros_like(ids)
    loss = torch.zeros_like(ids)
    for b, (s, p) in enumerate(zip(sequences, prompt_lengths)):
        ids[b, :len(s)] = torch.tensor(s)
        attn[b, :len(s)] = 1
        loss[b, p:len(s)] = 1
    old = -torch.rand(ids.shape, generator=g) * 4 * loss
    return TrainBatch(ids, attn, loss, old_logprobs=old, advantages=torch.randn(len(sequences), generator=g),
                      group_ids=torch.arange(len(sequences)) // group_size, **vision)


def test_layout_by_hand():
    # one group of three: prompt [1, 2, 3], completions [4, 5], [6], [7, 8, 9]; then a single row
    batch = grouped([[1, 2, 3, 4, 5], [1, 2, 3, 6], [1, 2, 3, 7, 8, 9]], [3, 3, 3], 3)
    attn = batch.attention_mask
    positions = ((attn.cumsum(-1) - 1).clamp(min=0) * attn).unsqueeze(0)
    mb = build_shared_micro_batches(batch, 1, "bucket", positions).micro_batches[0]
    assert mb.input_ids.tolist() == [[1, 2, 3, 4, 5, 6, 7, 8, 9]]
    assert mb.position_ids[0].tolist() == [[0, 1, 2, 3, 4, 3, 3, 4, 5]]
    mask = mb.attention_mask[0, 0].int().tolist()
    assert mask[4] == [1, 1, 1, 1, 1, 0, 0, 0, 0]  # 5 sees the prompt and 4
    assert mask[5] == [1, 1, 1, 0, 0, 1, 0, 0, 0]  # 6 sees the prompt only
    assert mask[8] == [1, 1, 1, 0, 0, 0, 1, 1, 1]
    assert mb.take(batch.input_ids).tolist() == [[1, 2, 3, 4, 5, 0], [1, 2, 3, 6, 0, 0], [1, 2, 3, 7, 8, 9]]
    # token 6 (row 1, column 3) is scored by the prompt's last slot (2), token 8 by 7's slot (6)
    assert mb.predecessor[1, 3] == 2 and mb.predecessor[2, 4] == 6 and mb.predecessor[0, 3] == 2
    assert mb.real_tokens == mb.slot_tokens == 9


def test_packing_groups_end_to_end():
    batch = grouped([[1, 2, 3], [1, 2, 4], [5, 6], [5, 7, 8]], [2, 2, 1, 1], 2)
    attn = batch.attention_mask
    positions = ((attn.cumsum(-1) - 1).clamp(min=0) * attn).unsqueeze(0)
    layout = build_shared_micro_batches(batch, 1, "pack", positions, pack_length=8)
    mb = layout.micro_batches[0]
    assert layout.packed and mb.input_ids.tolist() == [[1, 2, 3, 4, 5, 6, 7, 8]]  # two groups of 4 in one row
    mask = mb.attention_mask[0, 0].int().tolist()
    assert mask[3] == [1, 1, 0, 1, 0, 0, 0, 0] and mask[4] == [0, 0, 0, 0, 1, 0, 0, 0]
    assert mask[7] == [0, 0, 0, 0, 1, 0, 1, 1]
    assert mb.position_ids[0].tolist() == [[0, 1, 2, 2, 0, 1, 1, 2]]


def test_config_refuses_a_classification_head():
    with pytest.raises(ValueError, match="shared_prefix needs model_class causal_lm"):
        LearnerConfig(model="x", model_class="sequence_classification", shared_prefix=True)


def step_results(learner: Learner, batch: TrainBatch, **settings) -> tuple[torch.Tensor, dict, dict]:
    """forward_logprobs, train_step metrics and the gradients the optimizer saw, under `settings` (lr 0: the
    weights stay, so settings compare on one learner)."""
    for key, value in settings.items():
        setattr(learner.config, key, value)
    grads = {}

    def keep(optimizer, args, kwargs):
        grads.update({n: p.grad.detach().clone() for n, p in learner.module.named_parameters()
                      if p.grad is not None})

    hook = learner.engine.optimizer.register_step_pre_hook(keep)
    try:
        logprobs = learner.forward_logprobs(batch)
        metrics = learner.train_step(batch)
    finally:
        hook.remove()
    return logprobs, metrics, grads


def assert_same(baseline, other, label: str):
    logp, metrics, grads = other
    assert (logp - baseline[0]).abs().max() < 1e-5, label
    layout_only = {"time_s", "tokens_per_s", "tokens", "padding_fraction", "packed_fraction", "step"}
    for key in set(baseline[1]) - layout_only:  # loss, entropy, clip fractions, grad norm...
        assert metrics[key] == pytest.approx(baseline[1][key], abs=1e-5), f"{label}: {key}"
    assert grads.keys() == baseline[2].keys() and grads, label
    worst = max(float((grads[n] - baseline[2][n]).abs().max()) for n in grads)
    assert worst < 1e-5, f"{label}: gradient differs by {worst}"


LOSSES = {"grpo": {"clip_low": 0.1, "clip_high": 0.1, "entropy_coef": 0.01},  # the entropy's gradient too
          "gspo": {"clip_low": 0.1, "clip_high": 0.1}}


@pytest.mark.parametrize("loss", ["grpo", "gspo"])
def test_qwen_shared_prefix_equals_row_per_sample(qwen_dir, loss):
    g = torch.Generator().manual_seed(1)

    def rand(n):
        return torch.randint(1, 64, (n,), generator=g).tolist()

    sequences, prompts = [], []
    for prompt_len, completion_lens in ((5, [3, 7, 1, 4]), (9, [6, 2, 6, 5]), (4, [8, 8, 3, 2])):
        prompt = rand(prompt_len)
        same_start = rand(1)  # the third group's completions all begin alike: the prefix runs into them
        for c in completion_lens:
            sequences.append(prompt + (same_start + rand(c - 1) if prompt_len == 4 else rand(c)))
            prompts.append(prompt_len)
    batch = grouped(sequences, prompts, 4)
    learner = Learner(LearnerConfig(model=qwen_dir, lr=0.0, precision="fp32", grad_accum_steps=2,
                                    loss={"name": loss, "args": LOSSES[loss]}))
    baseline = step_results(learner, batch, micro_batching="bucket", shared_prefix=False)
    for mode in ("bucket", "pack", "none"):
        shared = step_results(learner, batch, micro_batching=mode, shared_prefix=True)
        assert_same(baseline, shared, f"{loss} {mode}")
        assert shared[1]["tokens"] < baseline[1]["tokens"]  # the prompts are computed once per group


def keye_group_batch(processor, group_size: int = 3) -> TrainBatch:
    """Two image prompts (think and no_think) with `group_size` completions of different lengths each, laid
    out as the RL stage lays them (the prompt's pixels repeated per row)."""
    tokenizer = processor.tokenizer
    prompts = [("think", Image.new("RGB", (56, 84), "red"), "How many apples? Count them."),
               ("no_think", Image.new("RGB", (84, 56), "blue"), "What colour is it?")]
    answers = {"think": [format_response("think", "\\boxed{3}", think="one, two, three"),
                         format_response("think", "\\boxed{2}", think="I see two of them, maybe more; two."),
                         format_response("think", "\\boxed{3}", think="three")],
               "no_think": ["Blue.", "It is blue, a dark blue.", "Red"]}
    sequences, prompt_lengths, vision = [], [], {"pixel_values": [], "image_grid_thw": []}
    for mode, image, question in prompts:
        conv = [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": question}]}]
        encoded = processor.process_conversations([conv], mode=mode)
        prompt = encoded["input_ids"][0].tolist()
        for answer in answers[mode][:group_size]:
            completion = tokenizer(answer + "<|im_end|>", add_special_tokens=False)["input_ids"]
            sequences.append(prompt + completion)
            prompt_lengths.append(len(prompt))
            vision["pixel_values"].append(encoded["pixel_values"])
            vision["image_grid_thw"].append(encoded["image_grid_thw"])
    return grouped(sequences, prompt_lengths, group_size, pad=tokenizer.pad_token_id,
                   **{k: torch.cat(v) for k, v in vision.items()})


@pytest.mark.parametrize("loss", ["grpo", "gspo"])
def test_keye_shared_prefix_equals_row_per_sample_and_sees_each_image_once(tiny_model_dir, tiny_processor, loss):
    batch = keye_group_batch(tiny_processor)
    learner = Learner(LearnerConfig(model=str(tiny_model_dir), lr=0.0, precision="fp32",
                                    loss={"name": loss, "args": LOSSES[loss]}))
    tower_rows = []
    hook = learner.module.visual.register_forward_hook(lambda m, args, out: tower_rows.append(args[1].shape[0]))
    baseline = step_results(learner, batch, micro_batching="bucket", shared_prefix=False)
    assert sum(tower_rows) == 2 * 6  # row-per-sample: each image twice per row (forward_logprobs + train_step)
    for mode in ("bucket", "pack"):
        tower_rows.clear()
        shared = step_results(learner, batch, micro_batching=mode, shared_prefix=True)
        assert_same(baseline, shared, f"{loss} {mode}")
        assert sum(tower_rows) == 2 * 2  # once per group in each forward
    hook.remove()


def test_the_rl_batch_names_its_groups_when_asked():
    from types import SimpleNamespace

    from posttrain.stages.rl.batch import rl_batch
    from rollout.types import Completion

    completions = [Completion("p", k, [5, 6], [7] * (k + 1), "", [-0.5] * (k + 1), [1] * (k + 1), "stop")
                   for k in range(4)]
    encoder = SimpleNamespace(pad_id=0, processor=None)
    rows = [{"id": "p"}] * 4
    batch = rl_batch(rows, completions, torch.zeros(4), encoder, group_size=2)
    assert batch.group_ids.tolist() == [0, 0, 1, 1]
    assert rl_batch(rows, completions, torch.zeros(4), encoder).group_ids is None  # row-per-sample as before


def test_equal_placeholders_with_different_pixels_are_not_shared():
    from posttrain.learners.batch import VisionLayout

    layout = VisionLayout(image_token_id=99, video_token_id=98, merge_size=2)  # grid (1, 2, 2): one token
    grids = torch.tensor([[1, 2, 2], [1, 2, 2]])
    for same, row in ((True, [1, 99, 2, 3, 4]), (False, [1, 99, 2, 3, 99, 2, 4])):  # shared: [1, 99, 2] or [1]
        pixels = torch.cat([torch.zeros(4, 1, 1, 1), torch.zeros(4, 1, 1, 1) + (0 if same else 1)])
        batch = grouped([[1, 99, 2, 3], [1, 99, 2, 4]], [3, 3], 2, pixel_values=pixels, image_grid_thw=grids)
        attn = batch.attention_mask
        positions = ((attn.cumsum(-1) - 1).clamp(min=0) * attn).unsqueeze(0)
        mb = build_shared_micro_batches(batch, 1, "bucket", positions, layout).micro_batches[0]
        assert mb.input_ids[0].tolist() == row
        assert mb.vision["image_grid_thw"].shape[0] == (1 if same else 2)
        assert mb.vision["pixel_values"].flatten().tolist() == pixels.flatten().tolist()[:4 if same else 8]


def test_zero3_trains_alike_with_shared_prefixes(qwen_dir):
    g = torch.Generator().manual_seed(2)
    sequences, prompts = [], []
    for prompt_len, completion_lens in ((5, [3, 7, 1, 4]), (9, [6, 2, 6, 5])):
        prompt = torch.randint(1, 64, (prompt_len,), generator=g).tolist()
        sequences += [prompt + torch.randint(1, 64, (c,), generator=g).tolist() for c in completion_lens]
        prompts += [prompt_len] * len(completion_lens)
    batch = grouped(sequences, prompts, 4)
    runs = {}
    for shared in (False, True):
        learner = Learner(LearnerConfig(model=qwen_dir, zero_stage=3, lr=1e-2, precision="fp32", grad_accum_steps=2,
                                        shared_prefix=shared, loss={"name": "grpo"}))
        runs[shared] = [learner.train_step(batch) for _ in range(2)]
    for before, after in zip(runs[False], runs[True]):  # the second step's loss is after one update
        assert after["loss"] == pytest.approx(before["loss"], abs=1e-5)
        assert after["grad_norm"] == pytest.approx(before["grad_norm"], abs=1e-5)
