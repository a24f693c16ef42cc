"""A Learner (DeepSpeed engine, group of one) on tiny models: real numbers for SFT, RL and preference steps."""

import math
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from posttrain.learners.batch import VISION, TrainBatch
from posttrain.learners.engine_setup import free_port
from posttrain.learners.learner import Learner
from posttrain.learners.learner_config import LearnerConfig
from rollout.shared_weights import slot_views
from rollout.weight_sync import BroadcastGroup


def keye_batch(processor, rows=4):
    def conv(*items, text):
        return [{"role": "user", "content": [*items, {"type": "text", "text": text}]},
                {"role": "assistant", "content": [{"type": "text", "text": "The answer is 4."}]}]
    frames = np.random.default_rng(0).integers(0, 255, (8, 56, 84, 3), dtype=np.uint8)
    convs = [conv({"type": "image", "image": Image.new("RGB", (56, 56), "red")},
                  {"type": "image", "image": Image.new("RGB", (224, 112), "blue")}, text="How many?"),
             conv(text="What is 2 + 2? Explain."),
             conv({"type": "video", "video": frames, "fps": 4}, text="What happens?"),
             conv({"type": "image", "image": Image.new("RGB", (100, 60), "green")}, text="Colour?")][:rows]
    b = processor.process_conversations(convs)
    attn = b["attention_mask"]
    return TrainBatch(input_ids=b["input_ids"], attention_mask=attn, loss_mask=attn.clone(),
                      **{k: b.get(k) for k in ("pixel_values", "image_grid_thw", "pixel_values_videos",
                                               "video_grid_thw", "second_per_grid_ts")})


def manual_logprobs(model, batch):
    """Reference computation with the plain model: log p(token_t | <t), 0 on padding and first tokens."""
    vision = {k: v for k, v in batch.to_dict().items() if k in VISION and v is not None}
    with torch.no_grad():
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, **vision).logits.float()
    logp = torch.log_softmax(logits[:, :-1], -1).gather(-1, batch.input_ids[:, 1:, None]).squeeze(-1)
    logp = torch.nn.functional.pad(logp, (1, 0)) * batch.attention_mask
    first = batch.attention_mask.long().argmax(-1)
    logp[torch.arange(len(first)), first] = 0.0
    return logp


def test_sft_first_loss_is_the_plain_nll_and_then_falls(tiny_model_dir, make_batch):
    batch = make_batch(8, 24, vocab=1000, ragged=True)
    learner = Learner(LearnerConfig(model=str(tiny_model_dir), lr=3e-3, precision="fp32"))
    mask = batch.loss_mask.float() * (batch.attention_mask.cumsum(-1) > 1)
    expected = -(manual_logprobs(learner.module, batch) * mask).sum() / mask.sum()
    losses = [learner.train_step(batch)["loss"] for _ in range(12)]
    assert losses[0] == pytest.approx(expected.item(), abs=1e-5)
    assert losses[-1] < 0.75 * losses[0]


def test_packing_and_bucketing_give_the_plain_models_logprobs_with_images_and_video(tiny_model_dir, tiny_processor):
    batch = keye_batch(tiny_processor)
    results = {}
    for mode in ("pack", "bucket"):
        learner = Learner(LearnerConfig(model=str(tiny_model_dir), micro_batching=mode, grad_accum_steps=2,
                                        precision="fp32", pack_length=2 * batch.input_ids.shape[1]))
        results[mode] = learner.forward_logprobs(batch)
    expected = manual_logprobs(learner.module.eval(), batch)
    assert (results["pack"] - expected).abs().max() < 1e-4
    assert (results["bucket"] - expected).abs().max() < 1e-4


def test_freezing_leaves_frozen_groups_bit_identical(tiny_model_dir, tiny_processor):
    batch = keye_batch(tiny_processor)
    # a top-level group, and a pattern over module paths (the first decoder layer's attention only)
    learner = Learner(LearnerConfig(model=str(tiny_model_dir), lr=1e-2,
                                    freeze=["visual", "mlp_AR", "model.layers.0.self_att?"]))
    before = {n: p.detach().clone() for n, p in learner.module.named_parameters()}
    for _ in range(2):
        learner.train_step(batch)
    after = dict(learner.module.named_parameters())
    frozen = [n for n in before if n.startswith(("visual.", "mlp_AR.", "model.layers.0.self_attn."))]
    assert frozen and all(torch.equal(before[n], after[n]) for n in frozen)
    assert any(n.startswith("model.layers.0.self_attn.") for n in frozen)
    for trained in ("model.embed_tokens.weight", "lm_head.weight", "model.layers.0.mlp.up_proj.weight"):
        assert not torch.equal(before[trained], after[trained]), trained
    with pytest.raises(ValueError, match="'vision_tower', which matches no module of this model; its top-level "
                                         "groups are"):
        Learner(LearnerConfig(model=str(tiny_model_dir), freeze=["vision_tower"]))


def test_bad_batches_are_explained(qwen_dir, make_batch):
    learner = Learner(LearnerConfig(model=qwen_dir))
    batch = make_batch(4, 12)
    with pytest.raises(ValueError, match="no trainable tokens"):
        learner.train_step(batch.with_fields(loss_mask=torch.zeros_like(batch.loss_mask)))
    with pytest.raises(ValueError, match="ref_logprobs has shape \\(4, 11\\)"):
        learner.train_step(batch.with_fields(ref_logprobs=torch.zeros(4, 11)))
    grpo = Learner(LearnerConfig(model=qwen_dir, loss={"name": "grpo"}))
    with pytest.raises(ValueError, match="needs \\['advantages'\\]"):
        grpo.train_step(batch)


def test_grpo_step_with_a_reference_model(qwen_dir, make_batch):
    batch = make_batch(4, 12)
    batch = batch.with_fields(advantages=torch.tensor([1.0, -1.0, 0.5, -0.5]))
    learner = Learner(LearnerConfig(model=qwen_dir, lr=1e-2, reference="policy", precision="fp32",
                                    loss={"name": "grpo", "args": {"kl_coef": 0.1, "clip_high": 0.28}}))
    mask = batch.loss_mask.float() * (batch.attention_mask.cumsum(-1) > 1)
    n = mask.sum(-1)
    before = (learner.forward_logprobs(batch) * mask).sum(-1) / n
    first = learner.train_step(batch)
    assert first["kl"] == pytest.approx(0.0, abs=1e-7)  # policy == reference before the first update
    assert first["pg_loss"] == pytest.approx(-float((batch.advantages * n).sum() / n.sum()), abs=1e-6)
    assert first["ratio"] == pytest.approx(1.0) and first["entropy"] > 0
    for _ in range(2):
        last = learner.train_step(batch)
    assert last["kl"] > 1e-4
    change = (learner.forward_logprobs(batch) * mask).sum(-1) / n - before
    assert (torch.sign(change) == torch.sign(batch.advantages)).all()  # positive advantage: more likely


def test_dpo_starts_at_log2_and_learns_the_preference(qwen_dir, make_batch):
    batch = make_batch(4, 10, seed=3).with_fields(chosen=torch.tensor([True, False, False, True]),
                                                 group_ids=torch.tensor([0, 0, 1, 1]))
    learner = Learner(LearnerConfig(model=qwen_dir, lr=1e-2, reference="policy", grad_accum_steps=2,
                                    loss={"name": "mpo", "args": {"beta": 0.5}}))
    first = learner.train_step(batch)
    assert first["dpo"] == pytest.approx(math.log(2), abs=1e-6)
    assert first["bco"] == pytest.approx(2 * math.log(2), abs=1e-6)
    for _ in range(5):
        last = learner.train_step(batch)
    assert last["dpo"] < first["dpo"] and last["reward_accuracy"] == 1.0


def test_reward_model_with_bradley_terry(tmp_path, make_batch):
    from transformers import Qwen3Config, Qwen3ForSequenceClassification

    torch.manual_seed(0)
    config = Qwen3Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=16, num_labels=1, pad_token_id=0)
    Qwen3ForSequenceClassification(config).save_pretrained(tmp_path)
    batch = make_batch(8, 10, seed=5, ragged=False)
    ids = batch.input_ids.clone()
    ids[0::2, -1], ids[1::2, -1] = 7, 9  # the chosen row of each pair ends in token 7
    batch = batch.with_fields(input_ids=ids, chosen=torch.arange(8) % 2 == 0, group_ids=torch.arange(8) // 2)
    learner = Learner(LearnerConfig(model=str(tmp_path), model_class="sequence_classification", lr=3e-2,
                                    loss={"name": "bradley_terry"}, micro_batching="pack", precision="fp32"))
    with torch.no_grad():
        scores = learner.module(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, 0]
    expected = -torch.nn.functional.logsigmoid(scores[0::2] - scores[1::2]).mean()
    first = learner.train_step(batch)
    assert first["loss"] == pytest.approx(expected.item(), abs=1e-5)
    for _ in range(10):
        last = learner.train_step(batch)
    assert last["loss"] < 0.5 * first["loss"] and last["rm_accuracy"] == 1.0


def test_a_reward_model_with_an_sft_term_reads_its_hidden_states_through_the_frozen_policy_head(tmp_path,
                                                                                               make_batch):
    from safetensors.torch import save_file
    from transformers import Qwen3Config, Qwen3ForSequenceClassification

    from posttrain.reward_model_init import FROZEN_LM_HEAD

    torch.manual_seed(0)
    config = Qwen3Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=16, num_labels=1, pad_token_id=0)
    model = Qwen3ForSequenceClassification(config)
    model.save_pretrained(tmp_path)
    settings = dict(model=str(tmp_path), model_class="sequence_classification", lr=1e-2, precision="fp32",
                    loss={"name": "bradley_terry", "args": {"sft_weight": 0.5}})
    with pytest.raises(FileNotFoundError, match=f"{FROZEN_LM_HEAD} not found: loss 'bradley_terry' with an SFT"):
        Learner(LearnerConfig(**settings))
    head = torch.randn(64, 32)
    save_file({"weight": head}, str(tmp_path / FROZEN_LM_HEAD))
    batch = make_batch(8, 10, seed=5, ragged=False)
    batch = batch.with_fields(loss_mask=batch.attention_mask.clone(), chosen=torch.arange(8) % 2 == 0,
                              group_ids=torch.arange(8) // 2)
    with torch.no_grad():  # by hand: BT on the head's scores + 0.5 x the chosen rows' NLL through `head`
        scores = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, 0]
        hidden = model.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state
        logp = torch.log_softmax(hidden[0::2, :-1] @ head.T, -1).gather(-1, batch.input_ids[0::2, 1:, None])
    expected = -torch.nn.functional.logsigmoid(scores[0::2] - scores[1::2]).mean() - 0.5 * logp.mean()
    learner = Learner(LearnerConfig(**settings))
    first = learner.train_step(batch)
    assert first["loss"] == pytest.approx(expected.item(), abs=1e-5)
    assert first["sft"] == pytest.approx(-logp.mean().item(), abs=1e-5)
    for _ in range(10):
        last = learner.train_step(batch)
    assert last["sft"] < first["sft"] and last["rm_accuracy"] == 1.0
    assert torch.equal(learner.frozen_lm_head, head)  # read, never trained


def test_zero3_trains_and_exports_full_weights(tiny_model_dir, make_batch, tmp_path):
    batch = make_batch(8, 32, vocab=1000)
    stage0 = Learner(LearnerConfig(model=str(tiny_model_dir), precision="fp32"))
    learner = Learner(LearnerConfig(model=str(tiny_model_dir), zero_stage=3, lr=3e-3, precision="fp32",
                                    reference="policy", loss={"name": "grpo", "args": {"kl_coef": 0.1}}))
    assert torch.allclose(learner.forward_logprobs(batch), stage0.forward_logprobs(batch), atol=1e-5)
    assert torch.allclose(learner.forward_logprobs(batch, reference=True), stage0.forward_logprobs(batch), atol=1e-5)
    step = learner.train_step(batch.with_fields(advantages=torch.linspace(-1, 1, 8)))
    assert step["kl"] == pytest.approx(0.0, abs=1e-6) and learner.train_step(
        batch.with_fields(advantages=torch.linspace(-1, 1, 8)))["kl"] > 0
    sft = Learner(LearnerConfig(model=str(tiny_model_dir), zero_stage=3, lr=3e-3))
    losses = [sft.train_step(batch)["loss"] for _ in range(8)]
    assert losses[-1] < 0.85 * losses[0]
    buckets = sft.export_weights(bucket_bytes=1 << 20)
    full = {k: v for b in buckets for k, v in b.items()}
    reference = dict(stage0.module.named_parameters())
    assert len(buckets) > 1 and full.keys() == reference.keys()
    assert all(full[k].shape == reference[k].shape for k in full)
    assert all(sum(v.numel() * 4 for v in b.values()) <= 1 << 20 or len(b) == 1 for b in buckets)
    assert not torch.equal(full["lm_head.weight"], reference["lm_head.weight"])  # the trained values
    layout = sft.shared_weights_layout(str(tmp_path))  # full shapes, though ZeRO-3 holds partitions
    assert sft.write_shared_weights(layout, 1) == sum(v.numel() * 4 for v in full.values())
    assert all(torch.equal(view, full[name]) for name, view in slot_views(layout, 1).items())


def test_zero3_broadcast_sends_the_plan_it_announced_in_the_engines_dtype(qwen_dir, make_batch):
    """Rank 0's half of `rollout.weight_sync: broadcast` under ZeRO-3: each gathered chunk crosses as one bucket,
    cast to the engine's dtype, laid out as the plan the receivers get first (full shapes, not partitions)."""
    learner = Learner(LearnerConfig(model=qwen_dir, zero_stage=3, lr=1e-2, precision="fp32"))
    learner.train_step(make_batch(4, 12))
    plan = learner.weight_plan(8 << 10, torch.bfloat16)
    expected = {k: v for b in learner.export_weights(8 << 10, torch.bfloat16) for k, v in b.items()}
    port, received = free_port(), {}

    def engine_side():
        group = BroadcastGroup("127.0.0.1", port, 1, 2)
        for bucket in plan:
            received.update((name, tensor.clone()) for name, tensor in group.receive_bucket(bucket))

    thread = threading.Thread(target=engine_side, daemon=True)
    thread.start()
    sent = learner.broadcast_weights(BroadcastGroup("127.0.0.1", port, 0, 2), 8 << 10, torch.bfloat16)
    thread.join(timeout=60)
    assert len(plan) > 1 and [m.name for bucket in plan for m in bucket] == list(expected)
    assert received.keys() == expected.keys() and all(received[k].dtype == torch.bfloat16 for k in received)
    assert all(torch.equal(received[k], v) for k, v in expected.items())
    assert sent == sum(v.numel() * 2 for v in expected.values())


def test_zero3_with_deepspeeds_prefetch_and_overlap_trains_as_zero0_does(qwen_dir, make_batch):
    batch = make_batch(8, 16)
    losses = {}
    for stage in (0, 3):
        learner = Learner(LearnerConfig(model=qwen_dir, zero_stage=stage, lr=1e-2, precision="fp32"))
        losses[stage] = [learner.train_step(batch)["loss"] for _ in range(3)]
    assert learner.ds_config["zero_optimization"]["overlap_comm"] is True
    assert "stage3_prefetch_bucket_size" not in learner.ds_config["zero_optimization"]  # DeepSpeed's default
    assert losses[3] == pytest.approx(losses[0], abs=1e-5) and losses[3][-1] < losses[3][0]


def test_an_entropy_bonus_trains_entropy_up_and_a_logged_entropy_leaves_the_update_alone(qwen_dir, make_batch):
    batch = make_batch(4, 12).with_fields(advantages=torch.zeros(4))  # no policy gradient: only the bonus acts
    logged = Learner(LearnerConfig(model=qwen_dir, lr=1e-2, precision="fp32", loss={"name": "grpo"}))
    bonus = Learner(LearnerConfig(model=qwen_dir, lr=1e-2, precision="fp32",
                                  loss={"name": "grpo", "args": {"entropy_coef": 1.0}}))
    first = [learner.train_step(batch)["entropy"] for learner in (logged, bonus)]
    assert first[0] == pytest.approx(first[1])
    after = [learner.train_step(batch) for learner in (logged, bonus)]
    assert after[0]["grad_norm"] == 0.0 and after[0]["entropy"] == pytest.approx(first[0])
    assert after[1]["entropy"] > first[1] + 1e-3


@pytest.mark.parametrize("cuda_like", [False, True])
def test_bf16_autocast_runs_the_matmuls_in_bf16_even_where_deepspeed_sees_an_outer_autocast(qwen_dir, make_batch,
                                                                                             monkeypatch, cuda_like):
    """On CUDA, `torch.is_autocast_enabled()` sees an autocast opened around the engine and DeepSpeed 0.19 then
    switches it off for the forward (fp32, silently). On the CPU that call looks at CUDA only, so `cuda_like` makes it
    see the CPU autocast, as it would see CUDA's: the matmuls must still run in bf16."""
    if cuda_like:
        enabled = torch.is_autocast_enabled
        monkeypatch.setattr(torch, "is_autocast_enabled", lambda *device: enabled("cpu"))
    learner = Learner(LearnerConfig(model=qwen_dir, lr=1e-3, precision="bf16-autocast"))
    assert learner.ds_config["torch_autocast"]["enabled"] is True
    assert learner.train_step(make_batch(4, 12))["matmul_bits"] == 16
    fp32 = Learner(LearnerConfig(model=qwen_dir, lr=1e-3, precision="fp32"))
    assert fp32.train_step(make_batch(4, 12))["matmul_bits"] == 32 and "torch_autocast" not in fp32.ds_config
