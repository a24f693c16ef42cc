"""Generative judges on a model: the rollout engine a judge generates with, built on the posttrain side.

`rewards.judge` knows only a `generate(prompts) -> texts` callable (DESIGN: rewards never import `rollout`). A
recipe names a judge by its registered name with a model, `{spec: outcome_judge, options: {model: DIR, engine:
transformers | compact | vllm, engine_options: {...}, max_new_tokens: 32, mode: no_think}}`; `engine_backed`
turns that spec into this module's factory of the same name (`posttrain.judge_engine:outcome_judge`), which
builds the engine and hands the judge its `generate`. The spec, a string, travels to the reward workers and model
servers, which import this module there. The engine serves the judge greedy, `max_new_tokens` long, each prompt
one user turn (with `mode`'s suffix when set, e.g. "no_think" for a Keye judge). Options neither the factory nor
the judge takes are refused by the reward registry, naming them. This module knows nothing about how judges
parse replies (`rewards.judge`) or are served (`rewards.model_server`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Callable

from rewards.judge import ConsistencyJudge, Generate, GenerativeJudge, OutcomeJudge

_JUDGES: dict[str, type[GenerativeJudge]] = {"outcome_judge": OutcomeJudge, "consistency_judge": ConsistencyJudge}


def engine_backed(spec, options: Mapping | None = None):
    """The spec a reward component is loaded by: a judge named with no `generate` of its own -> this module's
    engine-backed factory; anything else unchanged (a mapping of specs is mapped part by part).

    >>> engine_backed("consistency_judge", {"model": "m"}), engine_backed("math")
    ('posttrain.judge_engine:consistency_judge', 'math')
    """
    if isinstance(spec, Mapping):
        from rewards.combine import weight_and_options

        return {engine_backed(part, weight_and_options(part, value)[1]): value for part, value in spec.items()}
    if isinstance(spec, str) and spec in _JUDGES and "generate" not in (options or {}):
        return f"{__name__}:{spec}"
    return spec


def engine_generate(engine: Any, max_new_tokens: int = 32, mode: str | None = None) -> Generate:
    """`generate(prompts) -> texts` over a rollout engine: each prompt one user turn, greedy. A prompt the engine
    refuses (longer than its context) raises with the engine's message."""
    from rollout.types import GenerationRequest, SamplingParams

    sampling = SamplingParams(temperature=0.0, max_tokens=max_new_tokens)

    def generate(prompts: list[str]) -> list[str]:
        requests = [GenerationRequest(f"judge-{i}", [{"role": "user", "content": p}], mode)
                    for i, p in enumerate(prompts)]
        completions = engine.generate(requests, sampling)
        failed = [c for c in completions if c.finish_reason == "error"]
        if failed:
            raise RuntimeError(f"judge engine could not answer {failed[0].request_id}: {failed[0].error}")
        return [c.text for c in completions]

    return generate


def judge_engine(model: Any, tokenizer: Any = None, engine: str = "transformers",
                 engine_options: dict | None = None, device: str = "cpu"):
    """The rollout engine a judge generates with: `build_engine` for a directory, the engine class itself for a
    loaded model. A judge given a GPU (`device` "cuda") needs an engine that runs there: the CPU engines would
    leave it idle, so they are refused rather than silently run on CPU."""
    from rollout.engines import CPU_ENGINES, build_engine, check_options, engine_class

    options = dict(engine_options or {})
    if device != "cpu" and engine in CPU_ENGINES:
        raise ValueError(f"judge on {device!r}: the {engine!r} rollout engine generates on CPU; a GPU judge runs "
                         f"`engine: vllm` (or give its server no GPU)")
    if isinstance(model, str):
        return build_engine(engine, model, **options)
    if tokenizer is None or engine not in CPU_ENGINES:
        raise ValueError(f"judge: a loaded model needs its `tokenizer` and a CPU engine {CPU_ENGINES}; give "
                         f"`model` as a directory for the {engine!r} engine")
    check_options(engine, options)
    return engine_class(engine)(model, tokenizer, **options)


def _factory(name: str) -> Callable[..., GenerativeJudge]:
    judge_class = _JUDGES[name]

    def build(model: Any, tokenizer: Any = None, engine: str = "transformers", engine_options: dict | None = None,
              max_new_tokens: int = 32, mode: str | None = None, template: str | None = None,
              scale: float | None = None, device: str = "cpu") -> GenerativeJudge:
        generate = engine_generate(judge_engine(model, tokenizer, engine, engine_options, device), max_new_tokens,
                                   mode)
        return judge_class(generate, template=template, scale=scale)

    build.__name__ = build.__qualname__ = name
    build.__doc__ = (f"`{name}` generating through a rollout engine on `model` (a directory, or a loaded causal LM "
                     f"with its `tokenizer`); `template` and `scale` are the judge's (`rewards.judge`).")
    # what `@reward(name, factory=True, batched=True)` marks, without registering the name a second time: the
    # registered `name` is rewards' own judge, which takes `generate`
    build.__reward_name__, build.__reward_factory__, build.__reward_batched__ = name, True, True
    return build


outcome_judge = _factory("outcome_judge")
consistency_judge = _factory("consistency_judge")
