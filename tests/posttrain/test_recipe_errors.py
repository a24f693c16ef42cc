"""Every recipe error reads `file:line: key: message` (or `override k=v: ...`), whatever the section or stage kind."""

from pathlib import Path

import pytest

from posttrain.recipe import RecipeError
from posttrain.recipe_checks import load_recipe


def write(tmp_path, text) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


def error_of(path, overrides=()) -> str:
    with pytest.raises(RecipeError) as error:
        load_recipe(path, list(overrides), check_environment=False)
    message = str(error.value)
    assert "Value error" not in message and "(top level)" not in message
    return message


@pytest.mark.parametrize("kind, keys, typo, meant", [
    ("reward_model", "    eval_fraction: 0.1\n", "epochz", "epochs"),
    ("rejection_sample", "    accept: 0.5\n", "samples_per_promt", "samples_per_prompt"),
    ("merge", "    models: [a, b]\n", "weigths", "weights"),
    ("align", "    steps: 300\n", "mixtrue", "mixture"),
    ("score_filter", "    scorer: s0\n", "treshold", "threshold"),
])
def test_an_unknown_stage_key_is_shown_at_its_line_with_its_kinds_keys(tmp_path, kind, keys, typo, meant):
    path = write(tmp_path, f"name: t\nstages:\n  - kind: sft\n  - kind: {kind}\n{keys}    {typo}: 1\n")
    message = error_of(path)
    assert f"{path}:6: stages.1.{typo}: unknown key {typo!r}; did you mean {meant!r}? (valid keys: " in message
    assert f".{kind}." not in message  # pydantic's union tag is not a key the user wrote


def test_the_valid_keys_are_the_stage_kinds_own(tmp_path):
    message = error_of(write(tmp_path, "name: t\nstages:\n  - kind: merge\n    models: [a, b]\n    modelz: 1\n"))
    assert message.endswith("stages.0.modelz: unknown key 'modelz'; did you mean 'models'? "
                            "(valid keys: eval_rows, group_weights, kind, models, name, weights)")


def test_a_data_key_named_like_a_union_tag_keeps_its_path(tmp_path):
    """`data.eval` of the `files` data: a hand list of tags once dropped `eval` from the path with the tag."""
    message = error_of(write(tmp_path, "name: t\ndata:\n  kind: files\n  eval: [1]\nstages: [{kind: sft}]\n"))
    assert f"{tmp_path / 'recipe.yaml'}:4: data.eval: Input should be a valid string" in message


def test_a_bad_or_missing_kind_is_shown_at_the_kind(tmp_path):
    message = error_of(write(tmp_path, "name: t\nstages:\n  - steps: 5\n  - name: x\n    kind: rll\n"))
    assert "recipe.yaml:3: stages.0.kind: required key 'kind' is missing; give one of ['sft', 'rl', " in message
    assert "recipe.yaml:5: stages.1.kind: 'rll' is not one of ['sft', 'rl', " in message


@pytest.mark.parametrize("recipe, expected", [
    ("model: {path: m, import_from: n.gguf}\nstages: [{kind: sft}]\n",
     "recipe.yaml:2: model.import_from: give either model.path"),
    ("learner: {warmup_steps: 10}\nstages:\n  - kind: sft\n  - kind: rl\n    steps: 5\n",
     "recipe.yaml:6: stages.1.steps: 5 rl steps end inside the learner's warmup_steps 10"),
    ("cluster: {placement: colocated}\nstages:\n  - kind: rl\n    pipeline: one_step_off_policy\n",
     "recipe.yaml:5: stages.0.pipeline: one_step_off_policy generates while the learners train"),
    ("reward:\n  components:\n    - spec: reward_model\n      options: {model: 'stage:rm'}\nstages: [{kind: rl}]\n",
     "recipe.yaml:5: reward.components.0.options.model: 'stage:rm' names no reward_model stage of this recipe"),
    ("stages:\n  - kind: merge\n    models: [a, b]\n    weights: [1]\n",
     "recipe.yaml:5: stages.0.weights: merge: weights has 1 entries for 2 models"),
    ("stages:\n  - kind: sft\n    learner:\n      lr: fast\n",
     "recipe.yaml:5: stages.0.learner.lr: Input should be a valid number"),
], ids=["model_sources", "warmup", "pipeline", "stage_reference", "merge_weights", "stage_learner"])
def test_a_cross_key_error_names_its_key_and_line(tmp_path, recipe, expected):
    assert expected in error_of(write(tmp_path, "name: t\n" + recipe))


def test_a_stage_learner_typo_gets_the_learners_keys(tmp_path):
    message = error_of(write(tmp_path, "name: t\nstages:\n  - kind: sft\n    learner: {zero_stag: 2}\n"))
    assert ("recipe.yaml:4: stages.0.learner.zero_stag: unknown key 'zero_stag'; did you mean 'zero_stage'? "
            "(valid keys: betas, ") in message


def test_an_override_naming_a_missing_stage_is_a_clear_error(tmp_path):
    path = write(tmp_path, "name: t\nstages: [{kind: sft}, {kind: rl}, {kind: eval}]\n")
    with pytest.raises(RecipeError, match=r"^override stages.5.steps=5: the recipe has 3 stages \(0-2\)"):
        load_recipe(path, ["stages.5.steps=5"], check_environment=False)
    with pytest.raises(RecipeError, match=r"^override stages.last.steps=5: 'last' is not an index: the recipe has 3"):
        load_recipe(path, ["stages.last.steps=5"], check_environment=False)
    with pytest.raises(RecipeError, match=r"^override name.first=x: name is the value 't', not a section with keys"):
        load_recipe(path, ["name.first=x"], check_environment=False)


def test_an_error_in_an_overridden_key_names_the_override(tmp_path):
    path = write(tmp_path, "name: t\nlearner: {warmup_steps: 10}\nstages: [{kind: rl, steps: 20}]\n")
    assert ("override rollout.smapling.temperature=1: rollout.smapling: unknown key 'smapling'; did you mean "
            "'sampling'?") in error_of(path, ["rollout.smapling.temperature=1"])
    assert "override stages.0.steps=5: stages.0.steps: 5 rl steps end inside" in error_of(path, ["stages.0.steps=5"])


def test_the_cli_prints_an_override_error_as_one_line_and_exits_2(tmp_path, capsys):
    from posttrain.cli import main

    path = write(tmp_path, "name: t\nstages: [{kind: sft}, {kind: rl}, {kind: eval}]\n")
    assert main(["validate", str(path), "stages.5.steps=5"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("posttrain validate: error: override stages.5.steps=5: the recipe has 3 stages (0-2)")
    assert len(err.splitlines()) == 1 and "Traceback" not in err


@pytest.mark.parametrize("line, key, message", [
    ("stages:\n  - {kind: rl, steps: 100000000000000000000000000000000}\n", "stages.0.steps",
     "less than or equal to 100000000"),
    ("stages:\n  - {kind: sft, epochs: .inf}\n", "stages.0.epochs", "finite number"),
    ("reward: {timeout_s: .inf}\nstages:\n  - {kind: rl}\n", "reward.timeout_s", "finite number"),
    ("reward: {components: [{spec: math, weight: .nan}]}\nstages:\n  - {kind: rl}\n",
     "reward.components.0.weight", "finite number"),
    ("cluster: {num_cpus: 10000000000}\nstages:\n  - {kind: rl}\n", "cluster.num_cpus", "less than or equal"),
    ("learner: {lr: .nan}\nstages:\n  - {kind: rl}\n", "learner.lr", "finite number"),
])
def test_numbers_no_run_can_mean_are_refused_at_their_key(tmp_path, line, key, message):
    error = error_of(write(tmp_path, "name: t\n" + line))
    assert f": {key}: " in error and message in error


@pytest.mark.parametrize("name", ["../../etc", "a/b", "run\x1b[2J", "", ".hidden"])
def test_a_name_that_is_not_a_plain_directory_name_is_refused(tmp_path, name):
    import json

    message = error_of(write(tmp_path, f"name: {json.dumps(name)}\nstages:\n  - {{kind: rl}}\n"))
    assert ": name: " in message and "pattern" in message
    message = error_of(write(tmp_path, f"name: t\nstages:\n  - {{kind: rl, name: {json.dumps(name)}}}\n"))
    assert ": stages.0.name: " in message
