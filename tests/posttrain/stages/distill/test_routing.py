"""Distill stage without Ray: routing rows to teachers, per-teacher log-probs and KL, recipe checks."""

import inspect
from types import SimpleNamespace

import pytest
from pydantic import ValidationError

from posttrain.recipe import DistillStage, Teacher
from posttrain.stages import distill
from posttrain.stages.distill import refuse_images, route_of, start_teachers, teacher_logprobs
from posttrain.teacher_server import TeacherReplicas

TEACHERS = [Teacher(model="m/think", route={"mode": "think"}), Teacher(model="m/count", route={"task": "counting"}),
            Teacher(model="m/base")]


class FakeTeacher:
    """Returns a constant log-prob per token and records the pairs it was sent."""

    def __init__(self, value):
        self.value, self.seen = value, []

    def logprobs(self, pairs):
        self.seen += pairs
        return [[self.value] * len(completion) for _, completion in pairs]


def _completion(prompt, tokens, logprobs, mask=None):
    return SimpleNamespace(prompt_ids=prompt, token_ids=tokens, logprobs=logprobs, loss_mask=mask or [1] * len(tokens))


def test_every_row_goes_to_its_teacher():
    rows = [{"mode": "think", "task": "math"}, {"mode": "no_think", "task": "counting"},
            {"mode": "no_think", "task": "math"}, {"mode": "think", "task": "counting"}]
    # the first matching route wins (a think counting row goes to the think teacher); no match -> default
    assert [route_of(r, TEACHERS) for r in rows] == ["think", "count", "base", "think"]


def test_teacher_logprobs_sends_each_sample_to_its_teacher_and_reports_kl_per_teacher():
    g = 2  # two samples per prompt; prompt k's prompt id is [k]
    rows = [{"mode": "think"}, {"task": "counting"}, {"mode": "no_think"}]
    completions = [_completion([k // g], [10 + k, 20 + k], [-1.0, -2.0]) for k in range(len(rows) * g)]
    routes = [route_of(rows[i // g], TEACHERS) for i in range(len(completions))]
    teachers = {"think": FakeTeacher(-0.5), "count": FakeTeacher(-3.0), "base": FakeTeacher(-1.5)}
    out, stats = teacher_logprobs(rows, completions, g, teachers, routes)
    assert [p for p, _ in teachers["think"].seen] == [[0], [0]]
    assert [p for p, _ in teachers["count"].seen] == [[1], [1]]
    assert [c for _, c in teachers["base"].seen] == [[14, 24], [15, 25]]
    assert out[0] == [-0.5, -0.5] and out[3] == [-3.0, -3.0] and out[5] == [-1.5, -1.5]
    # kl = mean(log p_student - log p_teacher): student [-1, -2]; think -0.5 -> (-0.5 - 1.5) / 2 = -1.0
    assert stats["distill/kl/think"] == pytest.approx(-1.0)
    assert stats["distill/kl/count"] == pytest.approx(((-1 + 3) + (-2 + 3)) / 2)
    assert stats["distill/kl/base"] == pytest.approx(((-1 + 1.5) + (-2 + 1.5)) / 2)
    assert stats["distill/samples/think"] == 2.0


def test_masked_tokens_do_not_count_in_kl():
    c = _completion([0], [1, 2], [-1.0, -9.0], mask=[1, 0])  # the second token is an inserted tool output
    _, stats = teacher_logprobs([{}], [c], 1, {"base": FakeTeacher(-0.5)}, ["base"])
    assert stats["distill/kl/base"] == pytest.approx(-0.5)


def test_stage_needs_one_default_teacher_and_defaults_to_the_opd_loss():
    stage = DistillStage(teachers=[{"model": "m/a"}, {"model": "m/b", "route": {"mode": "think"}}],
                         distill={"adv_clip": 3.0})
    assert stage.learner["loss"] == {"name": "opd", "args": {"adv_clip": 3.0}}
    with pytest.raises(ValidationError, match="exactly one teacher without `route`"):
        DistillStage(teachers=[{"model": "m/a"}, {"model": "m/b"}])
    with pytest.raises(ValidationError, match="repeat"):
        DistillStage(teachers=[{"model": "m/a"}, {"model": "n/a", "route": {"task": "x"}}])


def test_validate_refuses_a_teacher_with_another_tokenizer(tmp_path, tiny_model_dir, llama_dir):
    from posttrain.recipe import RecipeError
    from posttrain.recipe_checks import load_recipe

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"name: t\nmodel: {{path: {tiny_model_dir}}}\nstages:\n  - kind: distill\n    teachers:\n"
                      f"      - {{model: {tiny_model_dir}}}\n      - {{model: {llama_dir}, route: {{mode: think}}}}\n")
    with pytest.raises(RecipeError) as error:
        load_recipe(recipe)
    message = str(error.value)
    assert "stages.0.teachers.1.model" in message and "vocabulary differs" in message
    assert "student's tokenizer" in message
    recipe.write_text(f"name: t\nmodel: {{path: {tiny_model_dir}}}\nstages:\n  - kind: distill\n    teachers:\n"
                      f"      - {{model: {tiny_model_dir}}}\n")
    assert load_recipe(recipe).stages[0].teachers[0].label == tiny_model_dir.name


def test_a_step_with_images_is_refused_since_teachers_would_score_placeholders():
    text = SimpleNamespace(images=[])
    refuse_images([{"prompt": "2+2"}], [text, text])  # text only: passes
    with pytest.raises(ValueError, match="teachers score text only"):
        refuse_images([{"prompt": "what is this?", "images": ["cat.png"]}], [text, text])
    with pytest.raises(ValueError, match="give the distill stage text prompts"):
        refuse_images([{"prompt": "zoom in"}], [text, SimpleNamespace(images=["crop.png"])])  # a tool's image


def test_a_teachers_supervision_knobs_reach_its_servers_and_bad_ones_are_refused_at_their_key(tmp_path, monkeypatch):
    from posttrain.recipe import RecipeError, read_recipe

    made = []
    monkeypatch.setattr(distill, "TeacherReplicas", lambda *args, **kwargs: made.append((args, kwargs)) or "server")
    teachers = [Teacher(model="m/a", timeout_s=30, startup_timeout_s=90, max_replacements=1), Teacher(model="m/b")]
    assert start_teachers(teachers, 0.6, lambda model: "/abs/" + model) == {"a": "server", "b": "server"}
    assert made[0] == (("/abs/m/a", 1, 0.0, 1.0, 16, 0.6),
                       {"timeout_s": 30.0, "startup_timeout_s": 90.0, "max_replacements": 1})
    signature = inspect.signature(TeacherReplicas).parameters  # the recipe's defaults are the servers' own
    assert made[1][1] == {knob: signature[knob].default for knob in made[1][1]}
    recipe = tmp_path / "recipe.yaml"
    for knob, value in (("timeout_s", 0), ("startup_timeout_s", ".nan"), ("max_replacements", -1)):
        recipe.write_text(f"name: t\nstages:\n  - kind: distill\n    teachers: [{{model: m, {knob}: {value}}}]\n")
        with pytest.raises(RecipeError, match=rf"stages\.0\.teachers\.0\.{knob}: "):
            read_recipe(recipe)
