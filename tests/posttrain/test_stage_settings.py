"""Resuming with an edited recipe: a stage started under other settings stops the run with the change named."""

import json

import pytest

from posttrain.recipe_checks import load_recipe
from posttrain.stage_settings import StageSettingsChanged, check_resume, record

RECIPE = """
name: r
runs_dir: {runs}
stages:
  - {{kind: sft, epochs: 1, learner: {{lr: 1.0e-3}}}}
  - {{kind: eval}}
"""


@pytest.fixture()
def path(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text(RECIPE.format(runs=tmp_path / "runs"))
    return path


def start_all(recipe, finished=(0, 1)):
    for index, stage_dir in enumerate(recipe.stage_dirs()):
        record(recipe, index, stage_dir)
        if index in finished:
            (stage_dir / "done.json").write_text("{}")


def test_same_recipe_and_placement_changes_resume(path):
    start_all(load_recipe(path))
    check_resume(load_recipe(path))
    check_resume(load_recipe(path, ["rollout.num_workers=2", "reward.cpus_per_worker=0.5", "cluster.num_cpus=4",
                                    "stages.0.checkpoint_every=7"]))


def test_a_run_started_with_the_old_engine_and_micro_batching_defaults_resumes(path):
    start_all(load_recipe(path, ["rollout.engine=transformers", "learner.micro_batching=bucket"]))
    check_resume(load_recipe(path))  # now auto / auto: how fast, not what is trained


def test_a_learner_key_moved_between_top_level_and_stage_is_not_a_change(path):
    start_all(load_recipe(path))
    moved = path.read_text().replace("learner: {lr: 1.0e-3}", "learner: {}") + "learner: {lr: 1.0e-3}\n"
    path.write_text(moved)
    check_resume(load_recipe(path))
    with pytest.raises(StageSettingsChanged, match="learner.lr: 0.001 -> 0.002"):
        check_resume(load_recipe(path, ["learner.lr=2e-3"]))


def test_a_settings_file_torn_by_a_crash_is_recorded_again(path):
    recipe = load_recipe(path)
    start_all(recipe)
    torn = recipe.stage_dirs()[0] / "settings.json"
    torn.write_text('{"seed": 0, "mod')
    check_resume(load_recipe(path, ["stages.0.epochs=3"]))  # nothing readable to compare with
    record(recipe, 0, recipe.stage_dirs()[0])
    assert json.loads(torn.read_text())["stage"]["epochs"] == 1.0


def test_changed_stage_setting_names_stage_key_values_and_fix(path):
    start_all(load_recipe(path))
    with pytest.raises(StageSettingsChanged) as error:
        check_resume(load_recipe(path, ["stages.0.epochs=3"]))
    message = str(error.value)
    assert "00-sft" in message and "stage.epochs: 1.0 -> 3.0" in message
    assert "name=..." in message and "delete" in message


def test_a_change_stops_at_the_first_stage_that_reads_it(path):
    start_all(load_recipe(path))
    with pytest.raises(StageSettingsChanged) as error:  # sft does not read the rollout section; eval does
        check_resume(load_recipe(path, ["rollout.eval_sampling.max_tokens=99"]))
    assert "01-eval" in str(error.value) and "00-sft" not in str(error.value)
    assert "rollout.eval_sampling.max_tokens: 256 -> 99" in str(error.value)


def test_a_started_stage_after_one_that_will_run_is_refused(path):
    recipe = load_recipe(path)
    start_all(recipe, finished=())  # 00-sft stopped; 01-eval's directory exists with its settings
    check_resume(recipe)  # 01-eval produced nothing: nothing of it rests on 00-sft's earlier output
    (recipe.stage_dirs()[1] / "eval.jsonl").write_text('{"step": 0, "accuracy": 0.5}\n')
    with pytest.raises(StageSettingsChanged, match="01-eval started on an earlier output"):
        check_resume(recipe)


def test_a_stage_that_stopped_before_producing_anything_takes_the_edited_recipe(path):
    """A crash before the first step (a warmup the learner refused) leaves only settings.json, an empty log and
    TensorBoard's header: the rerun with the fixed recipe records it again instead of refusing it."""
    stage_dir = load_recipe(path).stage_dirs()[0]
    record(load_recipe(path), 0, stage_dir)
    (stage_dir / "metrics.jsonl").write_text("")
    (stage_dir / "tensorboard").mkdir()
    (stage_dir / "tensorboard" / "events.out.tfevents.1").write_bytes(b"header")
    edited = load_recipe(path, ["stages.0.epochs=3"])
    check_resume(edited)
    record(edited, 0, stage_dir)
    assert json.loads((stage_dir / "settings.json").read_text())["stage"]["epochs"] == 3.0
    (stage_dir / "metrics.jsonl").write_text('{"step": 0, "loss": 2.3}\n')  # one step trained: now it is locked
    with pytest.raises(StageSettingsChanged, match="stage.epochs: 3.0 -> 1.0"):
        check_resume(load_recipe(path))
    (stage_dir / "metrics.jsonl").write_text("")
    (stage_dir / "checkpoints" / "step-000001").mkdir(parents=True)
    (stage_dir / "checkpoints" / "step-000001" / "state.json").write_text('{"step": 1}')
    with pytest.raises(StageSettingsChanged, match="stage.epochs: 3.0 -> 1.0"):
        check_resume(load_recipe(path))
