"""`validate` runs every check that needs no training: rewards resolve and get their columns, data files open and
map, relative paths are read from the recipe's folder, an SFT warmup ends inside the stage. Each failure is exit 2
with file:line, the key and the fix."""

import json
import os

import pytest

from posttrain.cli import main
from posttrain.commands.recipes import RECIPES_DIR, shipped_names
from posttrain.recipe_checks import load_recipe

ROWS = [{"prompt": "What is 2 + 3?", "answer": "5", "mode": "think"},
        {"prompt": "What is 4 + 4?", "answer": "8"}]
SFT_ROWS = [{"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a"}]}
            for i in range(10)]
REWARDS = """
from rewards import reward

def exact(prompts, completions, answer, **kwargs):
    return [float(c == a) for c, a in zip(completions, answer)]

def needs_ground_truth(prompts, completions, ground_truth, **kwargs):
    return [0.0 for _ in completions]
"""


def jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def recipe(tmp_path, data: str, reward: str = "math", stages: str = "  - {kind: rl, steps: 2}\n",
           name: str = "recipe.yaml"):
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"name: t\nruns_dir: {tmp_path / 'runs'}\ndata:\n{data}reward:\n  components:\n"
                    f"    - {{spec: {reward}}}\nstages:\n{stages}")
    return path


def validate(path, capsys, *overrides) -> str:
    assert main(["validate", str(path), *overrides]) == 2
    return capsys.readouterr().err


@pytest.fixture()
def prompts(tmp_path):
    jsonl(tmp_path / "prompts.jsonl", ROWS)
    (tmp_path / "my_rewards.py").write_text(REWARDS)
    return tmp_path / "prompts.jsonl"


def test_a_misspelt_reward_function_names_the_line_and_the_functions_the_file_has(tmp_path, prompts, capsys):
    path = recipe(tmp_path, f"  kind: files\n  prompts: {prompts}\n", f"{tmp_path}/my_rewards.py:exakt")
    err = validate(path, capsys)
    assert f"{path}:8: reward.components.0.spec: reward spec '{tmp_path}/my_rewards.py:exakt'" in err
    assert "has no attribute 'exakt'; its functions are [exact, needs_ground_truth" in err


def test_a_missing_reward_file_is_named_with_its_full_path_and_the_rule(tmp_path, prompts, capsys):
    path = recipe(tmp_path, f"  kind: files\n  prompts: {prompts}\n", "rewards/nowhere.py:score")
    err = validate(path, capsys)
    assert (f"{path}:8: reward.components.0.spec: reward file {tmp_path}/rewards/nowhere.py does not exist "
            f"(relative paths in a recipe are read from its folder") in err


def test_relative_reward_and_data_paths_are_read_from_the_recipes_folder(tmp_path, prompts, capsys, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # neither file is here: the recipe's folder is where they are
    path = recipe(tmp_path, "  kind: files\n  prompts: prompts.jsonl\n", "my_rewards.py:exact")
    assert main(["validate", str(path)]) == 0
    loaded = load_recipe(path)
    assert loaded.data.prompts == str(prompts)
    assert loaded.reward.components[0].spec == f"{tmp_path}/my_rewards.py:exact"
    # an override's path is typed in the shell: it is read from the working directory
    err = validate(path, capsys, "data.prompts=prompts.jsonl")
    assert f"data file {elsewhere}/prompts.jsonl does not exist" in err and "override data.prompts=" in err


def test_a_trl_reward_needing_a_column_the_data_lacks_names_it_and_the_columns(tmp_path, prompts, capsys):
    path = recipe(tmp_path, f"  kind: files\n  prompts: {prompts}\n", "my_rewards.py:needs_ground_truth")
    err = validate(path, capsys)
    assert (f"{path}:8: reward.components.0.spec: {tmp_path}/my_rewards.py:needs_ground_truth is a TRL reward "
            f"requiring the column(s) ['ground_truth'], which the rows of {prompts} lack (their columns: "
            f"['answer', 'id', 'mode', 'prompt'])") in err
    assert "take `solution`" in err


def test_a_missing_data_file_is_named_with_its_full_path(tmp_path, capsys):
    path = recipe(tmp_path / "recipes", "  kind: files\n  prompts: data/prompts.jsonl\n")
    err = validate(path, capsys)
    assert (f"{path}:5: data.prompts: data file {tmp_path}/recipes/data/prompts.jsonl does not exist "
            f"(relative paths in a recipe are read from its folder") in err


@pytest.mark.timeout(20)  # before the check, validate's open() on the FIFO waited for ever
def test_a_data_file_that_is_a_fifo_is_refused_by_validate_without_opening_it(tmp_path, capsys):
    fifo = tmp_path / "prompts.jsonl"
    os.mkfifo(fifo)
    path = recipe(tmp_path, f"  kind: files\n  prompts: {fifo}\n")
    assert (f"{path}:5: data.prompts: data file {fifo} is a FIFO (named pipe), not a file; give a .jsonl or "
            f".parquet file or a directory saved by datasets' save_to_disk") in validate(path, capsys)


def test_a_columns_mapping_to_an_absent_column_lists_the_files_columns(tmp_path, prompts, capsys):
    path = recipe(tmp_path, f"  kind: files\n  prompts: {prompts}\n  columns: {{answer: solution}}\n")
    err = validate(path, capsys)
    assert (f"{path}:6: data.columns.answer: column 'solution' is not in {prompts} (prompts); its columns are "
            f"['answer', 'mode', 'prompt']") in err


def test_a_bad_mode_in_a_row_names_the_row_and_the_valid_modes(tmp_path, capsys):
    rows = jsonl(tmp_path / "prompts.jsonl", [ROWS[0], {**ROWS[1], "mode": "thinking"}])
    err = validate(recipe(tmp_path, f"  kind: files\n  prompts: {rows}\n"), capsys)
    assert f"data.prompts: {rows} row 2: unknown chat mode 'thinking'; valid modes are ['no_think', 'think'" in err


def test_sft_warmup_beyond_the_stages_steps_names_the_key_and_the_total(tmp_path, capsys):
    sft = jsonl(tmp_path / "sft.jsonl", SFT_ROWS)  # 10 rows / batch 4 = 2 steps per epoch, 3 epochs: 6 steps
    stages = "  - kind: sft\n    epochs: 3\n    batch_size: 4\n    learner: {warmup_steps: 6}\n"
    path = recipe(tmp_path, f"  kind: files\n  sft: {sft}\n", stages=stages)
    err = validate(path, capsys)
    assert (f"{path}:13: stages.0.learner.warmup_steps: warmup_steps 6 does not end inside stages.0's 6 SFT steps "
            f"(10 rows of {sft} / batch_size 4 x epochs 3); set stages.0.learner.warmup_steps below 6") in err
    assert main(["validate", str(path), "stages.0.learner.warmup_steps=5"]) == 0


def test_every_problem_is_reported_at_once(tmp_path, capsys):
    path = recipe(tmp_path, "  kind: files\n  prompts: nowhere.jsonl\n", "mth")
    err = validate(path, capsys)
    assert "data.prompts: data file" in err and "reward.components.0.spec: reward spec 'mth'" in err


@pytest.mark.parametrize("name", [n for n in shipped_names() if not n.startswith("keye-8b/")])  # vLLM, your data
def test_every_shipped_recipe_passes_validate(name):
    assert main(["validate", name]) == 0


def test_a_path_in_a_shipped_recipe_is_read_from_its_folder():
    recipe = load_recipe(RECIPES_DIR / "keye-8b" / "rl.yaml", check_environment=False)
    assert recipe.data.prompts == os.path.join(RECIPES_DIR, "keye-8b", "data", "rl_prompts.jsonl")


def test_every_input_path_is_read_from_the_recipes_folder_and_choices_are_left_alone(tmp_path):
    path = tmp_path / "sub" / "recipe.yaml"
    path.parent.mkdir()
    path.write_text("name: t\nmodel: {path: ../models/base, tokenizer: tok}\n"
                    "stages:\n  - {kind: pretrain_data, user_shards: {caption: shards/caption.jsonl}}\n"
                    "  - {kind: rejection_sample, pairs: all}\n  - {kind: reward_model, pairs: pairs.jsonl}\n"
                    "  - {kind: eval, reward: 'my_rewards.py:exact'}\n")
    recipe = load_recipe(path, check_environment=False)
    folder = path.parent
    assert (recipe.model.path, recipe.model.tokenizer) == (str(tmp_path / "models" / "base"), str(folder / "tok"))
    assert recipe.stages[0].user_shards == {"caption": str(folder / "shards" / "caption.jsonl")}
    assert (recipe.stages[1].pairs, recipe.stages[2].pairs) == ("all", str(folder / "pairs.jsonl"))
    assert recipe.stages[3].reward == f"{folder}/my_rewards.py:exact"
    assert recipe.reward.eval_reward == "math" and recipe.runs_dir == "runs"  # names and the output stay
