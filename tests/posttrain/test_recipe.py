from pathlib import Path

import pytest

from posttrain.commands.recipes import RECIPES_DIR, shipped_names
from posttrain.recipe import RecipeError
from posttrain.recipe_checks import load_recipe

MINIMAL = "name: t\nstages:\n  - kind: sft\n"


def write(tmp_path, text) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", shipped_names())
def test_every_shipped_recipe_validates_and_places(name):
    """Schema and placement on the declared cluster; the engine check is the machine's (test_rollout_engine)."""
    from posttrain.placement import make_plan

    recipe = load_recipe(RECIPES_DIR / f"{name}.yaml", check_environment=False)
    assert recipe.stages
    assert make_plan(recipe).of("learner")


def test_typo_names_file_line_key_and_suggestion(tmp_path):
    path = write(tmp_path, MINIMAL + "rollout:\n  smapling: {temperature: 1.0}\n")
    with pytest.raises(RecipeError) as error:
        load_recipe(path)
    message = str(error.value)
    assert f"{path}:5: rollout.smapling: unknown key 'smapling'; did you mean 'sampling'?" in message


def test_bad_choice_lists_the_valid_ones(tmp_path):
    path = write(tmp_path, MINIMAL + "rollout:\n  engine: vlm\n")
    with pytest.raises(RecipeError, match=r"recipe.yaml:5: rollout.engine: 'vlm' is not one of \['transformers', "
                                          r"'compact', 'vllm', 'auto'\]; did you mean 'vllm'\?"):
        load_recipe(path)


def test_rejection_sampling_pairs_choice_is_checked(tmp_path):
    stage = "name: t\nstages:\n  - kind: rejection_sample\n    pairs: {}\n"
    assert load_recipe(write(tmp_path, stage.format("all")), check_environment=False).stages[0].pairs == "all"
    assert load_recipe(write(tmp_path, "name: t\nstages: [{kind: rejection_sample}]\n"),
                       check_environment=False).stages[0].pairs == "best_vs_worst"
    with pytest.raises(RecipeError, match=r"recipe.yaml:\d: stages.0.*pairs: 'every' is not one of "
                                          r"\['best_vs_worst', 'all'\]"):
        load_recipe(write(tmp_path, stage.format("every")), check_environment=False)


def test_a_recipe_wide_error_says_what_is_wrong_without_echoing_the_recipe(tmp_path):
    recipe = ("name: t\nreward:\n  components: [{spec: reward_model, options: {model: 'stage:rm'}}]\n"
              "stages: [{kind: rl}]\n")
    with pytest.raises(RecipeError) as error:
        load_recipe(write(tmp_path, recipe), check_environment=False)
    assert "'stage:rm' names no reward_model stage of this recipe" in str(error.value)
    assert "(got {" not in str(error.value)


def test_start_from_and_teachers_name_an_earlier_stage(tmp_path):
    stages = ("stages:\n  - {{kind: sft, name: sft}}\n  - {{kind: rl, name: teacher}}\n"
              "  - {{kind: distill, start_from: {start}, teachers: [{{model: {teacher}}}]}}\n")
    recipe = load_recipe(write(tmp_path, "name: t\n" + stages.format(start="sft", teacher="stage:teacher")),
                         check_environment=False)
    assert recipe.stages[2].start_from == "sft" and recipe.stages[2].teachers[0].model == "stage:teacher"
    assert recipe.stages[2].teachers[0].label == "teacher"  # not made a path, named after its stage
    with pytest.raises(RecipeError, match=r"stages.2.start_from: 'grpo' names no earlier stage of this "
                                          r"recipe \(named ones: \['sft', 'teacher'\]\); give that stage `name: grpo`"):
        load_recipe(write(tmp_path, "name: t\n" + stages.format(start="grpo", teacher="stage:teacher")),
                    check_environment=False)
    later = "name: t\n" + stages.format(start="sft", teacher="stage:after") + "  - {kind: rl, name: after}\n"
    with pytest.raises(RecipeError, match=r"stages.2.teachers.0.model: 'stage:after' names no earlier stage"):
        load_recipe(write(tmp_path, later), check_environment=False)


def test_stage_output_is_the_named_stages_model_once_trained(tmp_path):
    recipe = load_recipe(write(tmp_path, f"name: t\nruns_dir: {tmp_path}\nstages:\n  - {{kind: sft, name: sft}}\n"
                                         "  - {kind: rl, start_from: sft}\n"), check_environment=False)
    with pytest.raises(FileNotFoundError, match="stage 'sft': .* holds no trained model yet; that stage must run before"):
        recipe.stage_output("stage:sft")
    model = recipe.stage_dirs()[0] / "model"
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}")
    assert recipe.stage_output("stage:sft") == model


def test_stage_keys_are_checked_against_their_kind(tmp_path):
    path = write(tmp_path, "name: t\nstages:\n  - kind: rl\n    step: 5\n  - kind: rll\n")
    with pytest.raises(RecipeError) as error:
        load_recipe(path)
    assert "recipe.yaml:4: stages.0.step: unknown key 'step'; did you mean 'steps'?" in str(error.value)
    assert ("recipe.yaml:5: stages.1.kind: 'rll' is not one of ['sft', 'rl', 'distill', 'eval', 'cold_start_build', 'rejection_sample', "
            "'preference', 'reward_model', 'pretrain_data', 'siglip', 'score_filter', 'align', 'pretrain', 'anneal', 'merge']; "
            "did you mean 'rl'?"
            ) in str(error.value)


def test_learner_overrides_are_validated_at_load(tmp_path):
    path = write(tmp_path, "name: t\nlearner:\n  zero_stag: 2\nstages:\n  - kind: sft\n    learner: {lr: fast}\n")
    with pytest.raises(RecipeError) as error:
        load_recipe(path)
    assert "recipe.yaml:3: learner.zero_stag: unknown key 'zero_stag'; did you mean 'zero_stage'?" in str(error.value)


def test_decaying_schedule_takes_its_length_from_the_stage(tmp_path):
    """A recipe need not set total_steps: each stage passes its own length; a bare LearnerConfig still must."""
    from posttrain.learners.learner_config import LearnerConfig

    path = write(tmp_path, MINIMAL)
    recipe = load_recipe(path, ["learner.schedule=cosine", "stages.0.learner.schedule=linear"])
    assert recipe.learner.schedule == "cosine" and recipe.stage_learner(recipe.stages[0]).schedule == "linear"
    with pytest.raises(ValueError, match="set learner.total_steps"):
        LearnerConfig(schedule="cosine")


def test_rl_steps_inside_the_warmup_fail_at_load_not_when_the_stage_starts(tmp_path):
    path = write(tmp_path, "name: t\nlearner: {warmup_steps: 10}\nstages: [{kind: sft}, {kind: rl, steps: 20}]\n")
    assert load_recipe(path, check_environment=False).stages[1].steps == 20
    with pytest.raises(RecipeError) as error:
        load_recipe(path, ["stages.1.steps=10"], check_environment=False)
    assert ("stages.1.steps: 10 rl steps end inside the learner's warmup_steps 10; give more steps or set "
            "stages.1.learner.warmup_steps below 10") in str(error.value)
    assert load_recipe(path, ["stages.1.steps=10", "stages.1.learner.warmup_steps=2"],
                       check_environment=False).stages[1].steps == 10
    siglip = write(tmp_path, "name: t\nlearner: {warmup_steps: 10}\nstages: [{kind: siglip, steps: 5}]\n")
    with pytest.raises(RecipeError) as error:  # any stage whose length is its `steps`
        load_recipe(siglip, check_environment=False)
    assert "stages.0.steps: 5 siglip steps end inside the learner's warmup_steps 10" in str(error.value)


def test_overrides_are_typed(tmp_path):
    path = write(tmp_path, MINIMAL)
    recipe = load_recipe(path, ["rollout.sampling.temperature=0.8", "stages.0.epochs=2", "model.seed=3"])
    assert recipe.rollout.sampling.temperature == 0.8 and recipe.stages[0].epochs == 2 and recipe.model.seed == 3
    with pytest.raises(RecipeError, match="stages.0.epochs"):
        load_recipe(path, ["stages.0.epochs=many"])
    with pytest.raises(RecipeError, match="must look like key.sub=value"):
        load_recipe(path, ["stages.0.epochs"])


def test_missing_recipe_and_bad_yaml(tmp_path):
    with pytest.raises(RecipeError, match="posttrain ls"):
        load_recipe(tmp_path / "nope.yaml")
    with pytest.raises(ValueError, match="recipe.yaml:3: not valid YAML"):
        load_recipe(write(tmp_path, "name: t\nstages: [\n  - kind"))


def test_actors_that_do_not_fit_fail_before_ray(tmp_path):
    from posttrain.cluster import check_fits

    recipe = load_recipe(write(tmp_path, MINIMAL + "rollout: {num_workers: 4, cpus_per_worker: 1.0}\n"))
    with pytest.raises(ValueError, match=r"(?s)do not fit the cluster \(1 node x \(0 GPUs, 2 CPUs\)\).*"
                                         r"rollout.num_workers 4 x \(rollout.gpus_per_worker 0, rollout.cpus_per_worker 1\)"):
        check_fits(recipe)


def test_cli_validate_ls_cp(tmp_path, capsys):
    from posttrain.cli import main

    assert main(["validate", "tiny/rl_math"]) == 0
    assert main(["ls"]) == 0
    assert "tiny/rl_math" in capsys.readouterr().out
    assert main(["cp", "tiny/rl_math", str(tmp_path)]) == 0
    original, copy = (RECIPES_DIR / "tiny" / "rl_math.yaml").read_text(), (tmp_path / "rl_math.yaml").read_text()
    assert load_recipe(tmp_path / "rl_math.yaml").name == "rl_math"  # its own run directory, not the original's
    assert load_recipe(RECIPES_DIR / "tiny" / "rl_math.yaml").name == "tiny-rl-math"
    assert [line for line in copy.splitlines() if not line.startswith("name:")] == \
        [line for line in original.splitlines() if not line.startswith("name:")]  # all else as shipped
    assert main(["cp", "tiny/rl_math", str(tmp_path)]) == 2  # no overwrite
    assert main(["validate", "tiny/nothing"]) == 2


def test_pipelined_rl_refuses_colocated_placement(tmp_path):
    """One-step-off-policy generation runs during training, when colocated engines would be asleep."""
    path = write(tmp_path, "name: t\ncluster: {placement: colocated}\n"
                           "stages:\n  - {kind: rl, pipeline: one_step_off_policy}\n")
    with pytest.raises(RecipeError, match=r"stages.0.pipeline: one_step_off_policy generates while the learners "
                                          r"train.*use placement: disaggregated or pipeline: sync"):
        load_recipe(path)
