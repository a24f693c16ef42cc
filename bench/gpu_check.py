"""One short run on a GPU machine: what of the cluster path works there, written to a JSON report.

    python -m bench.gpu_check --out gpu_check.json      (repo root; under 12 minutes on one H200)
    python -m bench.gpu_check --device cpu              (the same checks on the CPU: a dry run of the script)

On the lent machine (Python 3.12, torch and an older transformers only), `make gpu-check-wheels` here first puts
what it lacks in .whl/ (about 29 MB); the command there installs them with `pip install --no-index --no-deps
--target /tmp/site .whl/*.whl` and runs with PYTHONPATH=/tmp/site.

Each check runs on its own and reports `ok`, `fail` (with the error's last lines) or `skip` (with the reason:
no CUDA, or a package the machine lacks), so a machine with torch and transformers only (the lent H200 has no
vLLM, Ray, DeepSpeed or flash-attn) still runs what it can:
- `keye_bf16`: Keye forward + backward in bf16 on CUDA with images (a mid-size config), finite loss and grads,
  tokens/s; vision attention through flash-attn's varlen kernel against per-segment SDPA when flash-attn is there;
- `generation_logprobs`: sampled generation on CUDA, the sampler's logprobs against a forward recompute;
- `learner_nccl`: the DeepSpeed learner on CUDA with NCCL, ZeRO-0 and ZeRO-3, bucket and pack, bf16 against fp32:
  the step's `matmul_bits` must say the matmuls ran in what was asked (bf16 inside DeepSpeed's forward);
- `learner_8b_vocab`: one packed 16,384-token step with Qwen3-8B's vocabulary and hidden size, peak memory;
- `vllm`: vLLM generate, weight update and logprob agreement with transformers, and the tiny Keye on vLLM.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import tempfile
import time
import traceback
from pathlib import Path

import torch


def skip(reason: str) -> dict:
    return {"status": "skip", "reason": reason}


DEVICE = torch.device("cuda")


def needs(*modules: str) -> str | None:
    if DEVICE.type == "cuda" and not torch.cuda.is_available():
        return "no CUDA device"
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    return f"not installed: {', '.join(missing)}" if missing else None


def synchronize() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def medium_keye():
    """Keye with a 256-wide 4-layer vision tower and a 512-wide 4-layer decoder (head_dim 64), random weights."""
    from keye_vl.configuration import KeyeVLConfig
    from keye_vl.modeling import KeyeForConditionalGeneration

    tiny = KeyeVLConfig.from_preset("keye-tiny").to_dict()
    tiny["vision_config"].update(hidden_size=256, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=4)
    tiny.update(hidden_size=512, intermediate_size=1536, num_hidden_layers=4, num_attention_heads=8,
                num_key_value_heads=4, head_dim=64)
    config = KeyeVLConfig.from_dict(tiny)
    torch.manual_seed(0)
    return KeyeForConditionalGeneration(config).to(DEVICE, torch.bfloat16)


def image_batch(model, images: int = 16, side: int = 448):
    from PIL import Image

    from keye_vl.presets import preset_processing
    from keye_vl.processing import KeyeVLProcessor
    from keye_vl.tokenizer import build_tiny_tokenizer

    budget = preset_processing("keye-vl-8b")
    processor = KeyeVLProcessor.build(build_tiny_tokenizer(), budget)
    conversations = [[{"role": "user", "content": [
        {"type": "image", "image": Image.effect_noise((side, side), 40 + k).convert("RGB")},
        {"type": "text", "text": f"Describe picture {k}."}]}] for k in range(images)]
    batch = processor.process_conversations(conversations)
    return {k: v.to(DEVICE) for k, v in batch.items()}


def check_keye_bf16() -> dict:
    if reason := needs():
        return skip(reason)
    model = medium_keye()
    batch = image_batch(model)
    tokens = int(batch["attention_mask"].sum())
    out = model(**batch, labels=batch["input_ids"])
    out.loss.backward()
    grads_finite = all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())
    synchronize()
    start = time.perf_counter()
    for _ in range(5):
        model(**batch, labels=batch["input_ids"]).loss.backward()
    synchronize()
    report = {"status": "ok" if torch.isfinite(out.loss) and grads_finite else "fail",
              "loss": float(out.loss), "grads_finite": grads_finite,
              "train_tokens_per_s": round(5 * tokens / (time.perf_counter() - start)),
              "vision_patches": int(batch["pixel_values"].shape[0])}
    report["flash_vs_sdpa"] = compare_vision_paths(model, batch) if not needs("flash_attn") else skip(needs("flash_attn"))
    return report


def compare_vision_paths(model, batch) -> dict:
    import keye_vl.vision as vision

    with torch.no_grad():
        flash = model.visual(batch["pixel_values"], batch["image_grid_thw"]).float()
        kernel, vision.flash_attn_varlen_func = vision.flash_attn_varlen_func, None
        try:
            sdpa = model.visual(batch["pixel_values"], batch["image_grid_thw"]).float()
        finally:
            vision.flash_attn_varlen_func = kernel
    return {"status": "ok", "max_abs_diff": float((flash - sdpa).abs().max())}


def check_generation_logprobs() -> dict:
    if reason := needs():
        return skip(reason)
    from rollout.hf_engine import sampled_logprobs

    model = medium_keye().eval()
    batch = image_batch(model, images=4, side=224)
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=16, do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
                             output_logits=True, return_dict_in_generate=True)
        prompt = batch["input_ids"].shape[1]
        new = out.sequences[:, prompt:]
        sampled = sampled_logprobs(out.logits, new, 1.0)
        mask = torch.cat([batch["attention_mask"], torch.ones_like(new)], 1)
        vision = {k: v for k, v in batch.items() if k not in ("input_ids", "attention_mask")}
        logits = model(input_ids=out.sequences, attention_mask=mask, **vision).logits[:, prompt - 1:-1].float()
        recomputed = torch.log_softmax(logits, -1).gather(-1, new[..., None])[..., 0]
    diff = float((sampled.float() - recomputed).abs().max())
    return {"status": "ok" if diff < 0.1 else "fail", "max_abs_diff_bf16": diff, "tokens": int(new.numel())}


def check_learner_nccl() -> dict:
    if reason := needs("deepspeed"):
        return skip(reason)
    from posttrain.learners.learner import Learner
    from posttrain.learners.learner_config import LearnerConfig
    from keye_vl.weights import init_model_dir

    model_dir = Path(tempfile.mkdtemp()) / "keye-tiny"
    init_model_dir(model_dir, "keye-tiny")
    ids = torch.randint(20, 1000, (8, 64))
    from posttrain.learners.batch import TrainBatch

    batch = TrainBatch(input_ids=ids, attention_mask=torch.ones_like(ids), loss_mask=torch.ones_like(ids))
    results = {}
    for zero, mode, precision in [(0, "bucket", "fp32"), (0, "bucket", "bf16-autocast"), (0, "pack", "bf16-autocast"),
                                  (3, "bucket", "bf16-autocast"), (3, "pack", "bf16-autocast")]:
        learner = Learner(LearnerConfig(model=str(model_dir), zero_stage=zero, micro_batching=mode,
                                        precision=precision, lr=1e-3))
        steps = [learner.train_step(batch) for _ in range(3)]
        losses = [s["loss"] for s in steps]
        results[f"zero{zero}_{mode}_{precision}"] = {
            "losses": losses, "falls": losses[-1] < losses[0], "seconds_per_step": steps[-1]["time_s"],
            # bf16 inside DeepSpeed's forward, not an autocast it switched off (issue 31)
            "matmul_bits": steps[-1]["matmul_bits"], "bits_as_asked": steps[-1]["matmul_bits"] == (
                32 if precision == "fp32" else 16)}
    ok = all(r["falls"] and r["bits_as_asked"] for r in results.values())
    return {"status": "ok" if ok else "fail", **results}


def check_learner_8b_vocab() -> dict:
    """One `train_step` of a packed 16,384-token row with Qwen3-8B's vocabulary and hidden size but two layers:
    the logits alone are 16,384 x 151,936 (the learner's peak-memory case), bf16 inside DeepSpeed."""
    if reason := needs("deepspeed"):
        return skip(reason)
    if DEVICE.type != "cuda":
        return skip("a 2-layer model with an 8B's vocabulary and a 16k packed row needs a GPU's memory")
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from posttrain.learners.batch import TrainBatch
    from posttrain.learners.learner import Learner
    from posttrain.learners.learner_config import LearnerConfig

    model_dir = Path(tempfile.mkdtemp()) / "qwen3-8b-2layers"
    config = Qwen3Config(vocab_size=151936, hidden_size=4096, intermediate_size=12288, num_hidden_layers=2,
                         num_attention_heads=32, num_key_value_heads=8, head_dim=128)
    Qwen3ForCausalLM(config).save_pretrained(model_dir)
    ids = torch.randint(0, 151936, (8, 2048))
    batch = TrainBatch(input_ids=ids, attention_mask=torch.ones_like(ids), loss_mask=torch.ones_like(ids))
    learner = Learner(LearnerConfig(model=str(model_dir), micro_batching="pack", pack_length=16384,
                                    precision="bf16-autocast", lr=1e-5))
    torch.cuda.reset_peak_memory_stats()
    step = learner.train_step(batch)
    return {"status": "ok" if step["matmul_bits"] == 16 and step["loss"] == step["loss"] else "fail",
            "loss": step["loss"], "seconds": step["time_s"], "matmul_bits": step["matmul_bits"],
            "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 1)}


def check_vllm() -> dict:
    if reason := needs("vllm"):
        return skip(reason)
    from keye_vl.weights import init_model_dir
    from rollout.hf_engine import TransformersEngine
    from rollout.types import GenerationRequest, SamplingParams
    from rollout.vllm_engine import VLLMEngine

    model_dir = Path(tempfile.mkdtemp()) / "keye-tiny"
    init_model_dir(model_dir, "keye-tiny")
    hf, engine = TransformersEngine.from_pretrained(model_dir), VLLMEngine(model_dir, dtype="float32",
                                                                         gpu_memory_utilization=0.3)
    asked = [GenerationRequest(str(i), [{"role": "user", "content": f"What is {i} + 1?"}], "think")
             for i in range(8)]
    greedy = SamplingParams(temperature=0.0, max_tokens=16)
    same = sum(a.token_ids == b.token_ids for a, b in zip(hf.generate(asked, greedy), engine.generate(asked, greedy)))
    torch.manual_seed(1)
    new = {n: p.detach() + 0.01 * torch.randn_like(p) for n, p in hf.model.named_parameters()}
    hf.load_weights(1, new)
    engine.load_weights(1, new)
    probe = hf.encoder.text_ids("<|im_start|>user\nWhat is 3 + 4?<|im_end|>")
    diff = float((hf.probe_logprobs(probe) - engine.probe_logprobs(probe)).abs().max())
    return {"status": "ok" if same == len(asked) and diff < 1e-3 else "fail", "greedy_agreement": f"{same}/8",
            "probe_logprob_diff_after_update": diff}


CHECKS = {"keye_bf16": check_keye_bf16, "generation_logprobs": check_generation_logprobs,
          "learner_nccl": check_learner_nccl, "learner_8b_vocab": check_learner_8b_vocab, "vllm": check_vllm}


def run_check(check) -> dict:
    start = time.perf_counter()
    try:
        result = check()
    except Exception:  # a failing check is a result to report, not the end of the run
        result = {"status": "fail", "error": traceback.format_exc()[-2000:]}
    return {**result, "seconds": round(time.perf_counter() - start, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="gpu_check.json")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    args = parser.parse_args()
    global DEVICE
    DEVICE = torch.device(args.device)
    from posttrain.quiet import quiet_libraries

    quiet_libraries()
    report = {"machine": {"checked_on": args.device, "python": platform.python_version(), "torch": torch.__version__,
                          "cuda": torch.version.cuda, "device": torch.cuda.get_device_name(0)
                          if torch.cuda.is_available() else None,
                          "packages": {m: importlib.util.find_spec(m) is not None
                                       for m in ("transformers", "vllm", "ray", "deepspeed", "flash_attn")}}}
    for name, check in CHECKS.items():
        report[name] = run_check(check)
        print(f"{name}: {report[name]['status']} ({report[name]['seconds']} s)", flush=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"report: {args.out}")


if __name__ == "__main__":
    main()
