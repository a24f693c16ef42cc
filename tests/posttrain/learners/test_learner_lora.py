"""`learner.lora`: only the adapters train; engines, checkpoints and the published model get the merged weights;
an adapter checkpoint resumes exactly."""

import copy
import json

import pytest
import torch
from pydantic import ValidationError

from posttrain.learners import lora
from posttrain.learners.learner import Learner
from posttrain.learners.learner_config import LearnerConfig, LoraConfig
from rollout.hf_engine import TransformersEngine
from rollout.weight_sync import WeightSyncError, verify


def config(model, stage=0, lora_cfg=None, **kw):
    return LearnerConfig(**{"model": str(model), "zero_stage": stage, "lr": 1e-2, "precision": "fp32",
                            "lora": lora_cfg or {"r": 4, "alpha": 8}, **kw})


def adapter_grads(learner):
    return {n for n, p in learner.module.named_parameters() if p.requires_grad}


def test_lora_section_is_validated():
    assert LoraConfig(r=4).target_modules == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                              "down_proj"]
    for bad in ({"r": 0}, {"r": 4, "dropout": 1.0}, {"r": 4, "alpha": 0}, {"r": 4, "rank": 8},
                {"r": 4, "target_modules": []}, {"r": 4, "target_modules": ["q_proj", "q_proj"]}):
        with pytest.raises(ValidationError):
            LoraConfig(**bad)
    assert LearnerConfig().lora is None  # full fine-tuning by default


def test_a_target_matching_no_linear_names_the_ones_that_exist(qwen_dir):
    with pytest.raises(ValueError, match=r"\['qkv'\] match no Linear module of Qwen3ForCausalLM; its Linear modules "
                                         r"are named \['down_proj', 'gate_proj', 'k_proj', 'lm_head', 'o_proj', "
                                         r"'q_proj', 'up_proj', 'v_proj'\]"):
        Learner(config(qwen_dir, lora_cfg={"r": 4, "target_modules": ["q_proj", "qkv"]}))


def test_only_the_adapters_train_and_freeze_still_applies(qwen_dir, make_batch):
    # r=4 on hidden 32 (q: 32->32, k/v: 32->16, o: 32->32, gate/up: 32->64, down: 64->32), per layer:
    # 4*(32+32) + 2*4*(32+16) + 4*(32+32) + 2*4*(32+64) + 4*(64+32) = 256 + 384 + 256 + 768 + 384 = 2048
    learner = Learner(config(qwen_dir))
    assert sum(p.numel() for g in learner.optimizer.param_groups for p in g["params"]) == 2 * 2048
    assert all(".lora_A." in n or ".lora_B." in n for n in adapter_grads(learner))
    before = {n: p.detach().clone() for n, p in learner.module.named_parameters()}
    for seed in range(3):
        learner.train_step(make_batch(4, 12, seed=seed))
    changed = {n for n, p in learner.module.named_parameters() if not torch.equal(p, before[n])}
    assert changed == adapter_grads(learner)

    frozen = Learner(config(qwen_dir, freeze=["model.layers.0"]))
    assert sum(p.numel() for g in frozen.optimizer.param_groups for p in g["params"]) == 2048
    assert all(n.startswith("base_model.model.model.layers.1.") for n in adapter_grads(frozen))


def merged_reference(learner):
    """peft's own merge of a copy of the trained model (the training model is left as it is)."""
    return {n: p.detach() for n, p in copy.deepcopy(learner.module).merge_and_unload().named_parameters()}


@pytest.mark.parametrize("stage", [0, 3])
def test_engines_get_the_merged_weights_under_the_base_models_names(stage, qwen_dir, make_batch):
    from transformers import AutoModelForCausalLM

    learner = Learner(config(qwen_dir, stage))
    for seed in range(3):
        learner.train_step(make_batch(4, 12, seed=seed))
    buckets = learner.export_weights(bucket_bytes=8 << 10)
    exported = {k: v for b in buckets for k, v in b.items()}
    base = dict(AutoModelForCausalLM.from_pretrained(qwen_dir).named_parameters())
    assert len(buckets) > 1 and list(exported) == list(base)  # no base_model.model. prefix, no lora_A/B
    assert [m.name for b in learner.weight_plan(8 << 10) for m in b] == list(base)
    if stage == 0:  # ZeRO-3 holds partitions: peft's merge of a copy needs the whole tensors
        merged = merged_reference(learner)
        assert all(torch.allclose(exported[k], merged[k], atol=1e-6) for k in base)
    delta = (exported["model.layers.1.self_attn.q_proj.weight"] - base["model.layers.1.self_attn.q_proj.weight"])
    assert delta.abs().max() > 1e-4  # the adapters moved the merged weight
    assert torch.equal(exported["model.embed_tokens.weight"], base["model.embed_tokens.weight"])  # not a target


def test_after_a_sync_the_engine_scores_a_probe_as_the_learner_does(tiny_model_dir, make_batch):
    """The check a silent no-op LoRA sync fails: before the sync the engine (base weights) disagrees with the
    trained learner on the probe; after loading the exported weights it agrees."""
    learner = Learner(config(tiny_model_dir))
    batch = make_batch(4, 16, vocab=1000)
    for _ in range(3):
        learner.train_step(batch)
    engine = TransformersEngine.from_pretrained(tiny_model_dir)
    probe = engine.encoder.text_ids("<|im_start|>user\nWhat is 1 + 1?<|im_end|>")
    ids = torch.tensor([probe])
    learner_logprobs = learner.forward_logprobs(make_batch(1, 1).with_fields(
        input_ids=ids, attention_mask=torch.ones_like(ids), loss_mask=torch.ones_like(ids)))[0, 1:]
    with pytest.raises(WeightSyncError):
        verify(engine.probe_logprobs(probe), learner_logprobs, version=1)
    for bucket in learner.export_weights(bucket_bytes=64 << 10):
        engine.load_weights(1, bucket)
    assert verify(engine.probe_logprobs(probe), learner_logprobs, version=1) < 1e-5


@pytest.mark.parametrize("stage", [0, 3])
def test_an_adapter_checkpoint_resumes_exactly_and_holds_no_base_weights(stage, qwen_dir, make_batch, tmp_path):
    def cfg():
        return config(qwen_dir, stage, lora_cfg={"r": 4, "alpha": 8, "dropout": 0.1}, grad_accum_steps=2,
                      schedule="cosine", warmup_steps=1, total_steps=6)

    batches = [make_batch(4, 12, seed=s) for s in range(5)]
    straight = Learner(cfg())
    expected = [straight.train_step(b)["loss"] for b in batches]
    first = Learner(cfg())
    losses = [first.train_step(b)["loss"] for b in batches[:2]]
    first.save(tmp_path / "ckpt", data_state={"position": 2})
    torch.manual_seed(1234)  # the resumed process starts from other RNG states (dropout draws from them)
    resumed = Learner(cfg())
    assert resumed.load(tmp_path / "ckpt") == {"position": 2} and resumed.step == 2
    losses += [resumed.train_step(b)["loss"] for b in batches[2:]]
    assert losses == pytest.approx(expected, abs=1e-6)
    assert losses[-1] != losses[1]
    if stage == 0:  # stage 0 keeps the module's tensors in one file; ZeRO-3 in its fp32 partitions
        states = torch.load(tmp_path / "ckpt" / "deepspeed" / "state" / "mp_rank_00_model_states.pt",
                            weights_only=False)
        assert states["module"].keys() == adapter_grads(first)


def test_a_lora_checkpoint_resumes_only_onto_the_same_adapters(qwen_dir, make_batch, tmp_path):
    learner = Learner(config(qwen_dir))
    learner.train_step(make_batch(4, 12))
    learner.save(tmp_path / "ckpt")
    with pytest.raises(ValueError, match=r"saved with learner.lora=\{'r': 4, 'alpha': 8.0, .*but this learner has "
                                         r"learner.lora=None"):
        Learner(LearnerConfig(model=qwen_dir, lr=1e-2, precision="fp32")).load(tmp_path / "ckpt")


def test_the_published_model_is_merged_and_the_adapter_reloads_onto_the_base(tiny_model_dir, make_batch, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    learner = Learner(config(tiny_model_dir))
    for _ in range(2):
        learner.train_step(make_batch(4, 16, vocab=1000))
    out = learner.save(tmp_path / "ckpt") / "model"
    exported = {k: v for b in learner.export_weights() for k, v in b.items()}
    assert (out / "tokenizer_config.json").is_file()
    assert json.loads((out / "adapter" / "adapter_config.json").read_text())["r"] == 4
    merged = AutoModelForCausalLM.from_pretrained(out)
    assert dict(merged.named_parameters()).keys() == exported.keys()
    assert all(torch.equal(p, exported[n]) for n, p in merged.named_parameters())
    adapter = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), out / "adapter")
    remerged = dict(adapter.merge_and_unload().named_parameters())
    assert all(torch.allclose(p, remerged[n], atol=1e-6) for n, p in merged.named_parameters())


def test_a_model_without_adapters_is_viewed_as_its_parameters(qwen_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(qwen_dir)
    assert [w.name for w in lora.engine_weights(model)] == [n for n, _ in model.named_parameters()]
    assert lora.plain_name("model.layers.0.self_attn.q_proj.base_layer.weight") == \
        "model.layers.0.self_attn.q_proj.weight"
    assert lora.plain_name("score.modules_to_save.default.weight") == "score.weight"
    assert lora.plain_name("model.layers.0.self_attn.q_proj.lora_A.default.weight") is None


def test_a_lora_reward_model_trains_its_score_head_and_exports_it_under_its_own_name(tmp_path, make_batch):
    """peft's SEQ_CLS task keeps a trained copy of the score head: the head must learn to score, and the engines
    and the published model see it as `score.weight`. The loss with an SFT term reads the hidden states the
    wrapped head gets."""
    from safetensors.torch import save_file
    from transformers import Qwen3Config, Qwen3ForSequenceClassification

    from posttrain.reward_model_init import FROZEN_LM_HEAD

    torch.manual_seed(0)
    model = Qwen3ForSequenceClassification(Qwen3Config(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, head_dim=16, num_labels=1, pad_token_id=0))
    model.save_pretrained(tmp_path)
    save_file({"weight": torch.randn(64, 32)}, str(tmp_path / FROZEN_LM_HEAD))
    batch = make_batch(8, 10, seed=5, ragged=False)
    batch = batch.with_fields(loss_mask=batch.attention_mask.clone(), chosen=torch.arange(8) % 2 == 0,
                              group_ids=torch.arange(8) // 2)
    with torch.no_grad():
        scores = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, 0]
    learner = Learner(config(tmp_path, model_class="sequence_classification", lr=3e-2,
                             loss={"name": "bradley_terry", "args": {"sft_weight": 0.5}}))
    assert adapter_grads(learner) >= {"base_model.model.score.modules_to_save.default.weight"}
    first = learner.train_step(batch)  # B = 0 at the start: the adapted model scores as the base model
    bt = -torch.nn.functional.logsigmoid(scores[0::2] - scores[1::2]).mean()
    assert first["loss"] == pytest.approx(bt.item() + 0.5 * first["sft"], abs=1e-5)
    for _ in range(10):
        last = learner.train_step(batch)
    assert last["rm_accuracy"] == 1.0
    exported = {k: v for b in learner.export_weights() for k, v in b.items()}
    assert list(exported) == [n for n, _ in model.named_parameters()]
    assert not torch.equal(exported["score.weight"], model.score.weight)
    published = Qwen3ForSequenceClassification.from_pretrained(learner.save(tmp_path / "ckpt") / "model")
    assert all(torch.equal(p, exported[n]) for n, p in published.named_parameters())


def test_the_siglip_learner_refuses_adapters_rather_than_ignoring_them():
    from posttrain.learners.siglip_learner import SiglipLearner

    with pytest.raises(ValueError, match="the siglip stage trains its towers in full"):
        SiglipLearner(LearnerConfig(model="unused", lora={"r": 4}))


def test_a_recipe_turns_lora_on_per_stage_and_its_errors_point_at_the_key(tmp_path):
    from posttrain.recipe import RecipeError
    from posttrain.recipe_checks import load_recipe

    path = tmp_path / "recipe.yaml"
    path.write_text("name: t\nstages:\n  - kind: sft\n  - kind: rl\n    steps: 5\n    learner:\n"
                    "      lora: {r: 4, target_modules: [q_proj, v_proj]}\n")
    recipe = load_recipe(path, check_environment=False)
    assert [recipe.stage_learner(s).lora for s in recipe.stages] == [
        None, LoraConfig(r=4, target_modules=["q_proj", "v_proj"])]
    with pytest.raises(RecipeError, match=r"override stages.1.learner.lora.r=0: stages.1.learner.lora.r: Input "
                                          r"should be greater than or equal to 1 \(got 0\)"):
        load_recipe(path, ["stages.1.learner.lora.r=0"], check_environment=False)
