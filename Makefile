# Two entry points on a fresh machine: `make run` (the main job: the tiny end-to-end recipe) and `make test`.
# Both create .venv on first use. torch is the CPU build pinned in constraints.txt: pip takes the wheel on
# this machine's disk; every later install is constrained so nothing swaps in a multi-GB CUDA build.
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed

.PHONY: run demo test bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt "torch==2.13.0"
	$(PIP) install -q -c constraints.txt -e ".[dev]"
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/posttrain run tiny/rl_math

demo: $(STAMP)
	$(VENV)/bin/posttrain demo

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PIP) install -q -c constraints.txt -e ".[dev,bench]"
	$(PY) -m bench.model
	$(PY) -m bench.rollout
	$(PY) -m bench.rewards
	$(PY) -m bench.learner
	$(PY) -m bench.cold_start

clean:
	rm -rf $(VENV) runs .pytest_cache
