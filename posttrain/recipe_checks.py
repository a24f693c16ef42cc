"""What `validate` checks beyond the schema: everything a recipe names that can be checked without training.

`posttrain.recipe` checks what a recipe says; this module checks what it points at, so that a run fails in
seconds, before the cluster starts, instead of minutes later inside it: every reward resolves to a function (a
missing file or a misspelt function is named at its line); a TRL or verl function gets every parameter it requires
from the data's columns; each data file opens, maps through `columns` and holds valid rows and modes; every stage
that trains on rows has them; an SFT stage's warmup ends inside its length, which only the row count decides.

A data file is read to its first `PEEK_ROWS` rows and counted, so validating a large file stays quick; the run's
copy (`posttrain.data`) checks every row, also before the cluster starts. Rows a stage builds (`BUILDS_DATA`)
exist only once it has run, so the stages after one are not checked against the recipe's files, which they may
not read. Every problem is reported at once, each as `file:line: key: message`. `load_recipe` reads a recipe
(`posttrain.recipe.read_recipe`) and runs these checks and the rollout engine's (`posttrain.rollout_engine`).

This module knows nothing about running stages: it reads files and imports rewards.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from posttrain.data import arithmetic_files
from posttrain.data_files import check_rows, count_rows, peek_rows, renamed
from posttrain.judge_engine import engine_backed
from posttrain.recipe import (STAGE_PREFIX, ArithmeticData, FileData, Recipe, RecipeError, read_recipe,
                              supervised_steps)
from posttrain.recipe_errors import format_problems
from posttrain.rollout_engine import check_engine
from posttrain.yaml_lines import Location
from rewards.adapters import LoadedReward, missing_arguments
from rewards.registry import RewardSpecError, load_reward, spec_file, validate_reward

PEEK_ROWS = 1000
# stages that write data files (`<stage>/data`) which the stages after them read instead of the recipe's
BUILDS_DATA = ("cold_start_build", "rejection_sample", "pretrain_data", "score_filter")
# the data file a stage kind cannot start without (eval rows are optional: none, no evaluation)
NEEDS = {"sft": "sft", "rl": "prompts", "distill": "prompts", "rejection_sample": "prompts"}
WHERE_RELATIVE = "relative paths in a recipe are read from its folder, in an override from the working directory"

Problem = tuple[Location, str]


@dataclass
class Rows:
    """What validate knows of one data file: where it is, its first rows (renamed), how many rows it has."""

    source: str
    first: list[dict]
    count: int

    @property
    def columns(self) -> set[str]:
        return {"id", *(key for row in self.first for key in row)}  # rows without an id are given one


def load_recipe(path: str | Path, overrides: list[str] = (), check_environment: bool = True) -> Recipe:
    """Read, override and validate a recipe (`posttrain.recipe.read_recipe`), then check what it points at;
    raises RecipeError with file:line for every problem.

    `check_environment` also checks that this machine can run the recipe's rollout engine with its options
    (`posttrain.rollout_engine`) and what `check_recipe` checks; listing or planning recipes for another machine
    passes False.
    """
    read = read_recipe(path, overrides)
    if check_environment:
        check_engine(read.recipe, read.path, read.lines)
        check_recipe(read.recipe, read.path, read.lines, read.overridden)
    return read.recipe


def check_recipe(recipe: Recipe, path: Path, lines: dict[Location, int], overridden: dict[Location, str]) -> None:
    """Raise one RecipeError listing every problem, each at its key's line (or the override that set it)."""
    data, found = data_rows(recipe)
    found += missing_data(recipe, data)
    found += reward_problems(recipe, data)
    found += sft_warmup(recipe, data)
    found += teacher_tokenizers(recipe, path.parent)
    if found:
        raise RecipeError(format_problems(path, list(dict.fromkeys(found)), lines, overridden))


def data_rows(recipe: Recipe) -> tuple[dict[str, Rows | None], list[Problem]]:
    """The rows of each data file the data section gives: name -> Rows, or None for a file that is named but
    unusable (its problem is in the list)."""
    if isinstance(recipe.data, ArithmeticData):  # generated, and cheap to generate: the exact rows the run gets
        return {name: Rows(f"data.kind: arithmetic ({name})", rows[:PEEK_ROWS], len(rows))
                for name, rows in arithmetic_files(recipe.data).items()}, []
    data, found = {}, []
    for name in ("sft", "prompts", "eval"):
        path = getattr(recipe.data, name)
        if path is not None:
            data[name], problems = file_rows(recipe.data, name, path)
            found += problems
    return data, found


def file_rows(section: FileData, name: str, path: str) -> tuple[Rows | None, list[Problem]]:
    """One data file: it exists, opens, has rows, has every column `columns` maps, and its rows are valid."""
    key = ("data", name)
    if not Path(path).exists():
        return None, [(key, f"data file {path} does not exist ({WHERE_RELATIVE}); fix the path or give "
                            f"an absolute one")]
    try:
        first = peek_rows(path, None, section.split, PEEK_ROWS)  # not renamed yet: `columns` is checked per key
    except (ValueError, FileNotFoundError) as error:
        return None, [(key, str(error))]
    if not first:
        return None, [(key, f"data file {path} has no rows")]
    absent = [(("data", "columns", ours), f"column {yours!r} is not in {path} ({name}); its columns are "
               f"{sorted(first[0])}") for ours, yours in section.columns.items() if yours not in first[0]]
    if absent:
        return None, absent
    rows = renamed(first, section.columns, Path(path))
    try:
        check_rows(rows, Path(path), name)
    except ValueError as error:
        return None, [(key, str(error))]
    return Rows(path, rows, count_rows(path, section.split)), []


def built_before(recipe: Recipe, index: int) -> bool:
    return any(stage.kind in BUILDS_DATA for stage in recipe.stages[:index])


def rows_for(recipe: Recipe, data: dict[str, Rows | None], index: int, name: str) -> Rows | None:
    """The rows stage `index` reads as `name`, where validate knows them: the recipe's file, unless a stage
    before it builds data."""
    return None if built_before(recipe, index) else data.get(name)


def missing_data(recipe: Recipe, data: dict[str, Rows | None]) -> list[Problem]:
    """A stage that cannot start: no data file of what it reads, and no stage before it that builds one."""
    found = []
    for i, stage in enumerate(recipe.stages):
        name = NEEDS.get(stage.kind)
        if name and name not in data and not built_before(recipe, i):
            found.append((("data", name), f"stages.{i} ({stage.kind}) reads {name} rows, but data names no {name} "
                          f"file and no stage before it builds one; set data.{name}: path/to/{name}.jsonl"))
    return found


def reward_specs(recipe: Recipe) -> Iterator[tuple[Location, str, dict]]:
    """(key, spec as it is loaded, options) of every reward the recipe names."""
    for at, component in recipe._reward_components():
        yield at + ("spec",), engine_backed(component.spec, component.options), component.options
    yield ("reward", "eval_reward"), recipe.reward.eval_reward, {}
    for i, stage in enumerate(recipe.stages):
        if stage.kind == "eval" and stage.reward is not None:
            yield ("stages", i, "reward"), stage.reward, {}


def reward_uses(recipe: Recipe) -> Iterator[tuple[Location, int, str]]:
    """(a reward's key, the stage scoring with it, the data file whose rows it scores)."""
    components = [("reward", "components", j, "spec") for j in range(len(recipe.reward.components))]
    for i, stage in enumerate(recipe.stages):
        if stage.kind in ("rl", "distill"):
            yield from ((key, i, "prompts") for key in components)
            yield ("reward", "eval_reward"), i, "eval"
        elif stage.kind == "rejection_sample":
            own = [("stages", i, "reward", j, "spec") for j in range(len(stage.reward or []))]
            yield from ((key, i, "prompts") for key in own or components)
        elif stage.kind == "eval":
            yield (("stages", i, "reward") if stage.reward else ("reward", "eval_reward")), i, "eval"


def reward_problems(recipe: Recipe, data: dict[str, Rows | None]) -> list[Problem]:
    """Every reward loads; each one a stage scores known rows with gets the columns its signature requires."""
    loaded, found = {}, []
    for key, spec, options in reward_specs(recipe):
        try:
            loaded[key] = load_checked(spec, options)
        except RewardSpecError as error:
            found.append((key, str(error)))
    for key, index, name in reward_uses(recipe):
        reward, rows = loaded.get(key), rows_for(recipe, data, index, name)
        missing = missing_arguments(reward, rows.columns) if reward is not None and rows is not None else []
        if missing:
            found.append((key, missing_columns_message(reward, missing, rows)))
    return found


def load_checked(spec: str, options: dict) -> LoadedReward | None:
    """The reward `spec` names with its options bound, or None for a factory (a reward model, a judge): what it
    builds is known only once built, and building loads a model. Raises RewardSpecError."""
    file = spec_file(spec)
    if file and not Path(file[0]).is_file():
        raise RewardSpecError(f"reward file {file[0]} does not exist ({WHERE_RELATIVE}); fix the path "
                              f"or give an absolute one")
    if validate_reward(spec, **options) == "factory":
        return None
    return load_reward(spec, **options)


def missing_columns_message(reward: LoadedReward, missing: list[str], rows: Rows) -> str:
    columns = sorted(rows.columns)
    if reward.form == "verl":
        return (f"{reward.spec} is a verl reward requiring {missing}, but a verl reward is called with data_source, "
                f"solution_str, ground_truth and extra_info only; give {missing} defaults")
    return (f"{reward.spec} is a TRL reward requiring the column(s) {missing}, which the rows of {rows.source} lack "
            f"(their columns: {columns}); add the column(s) to the data, or take `solution`, which every TRL reward "
            f"is given as the row's answer")


def sft_warmup(recipe: Recipe, data: dict[str, Rows | None]) -> list[Problem]:
    """An SFT stage's warmup must end inside its steps, which its rows decide (`supervised_steps`); the learner
    would otherwise refuse the stage after the cluster started."""
    found = []
    for i, stage in enumerate(recipe.stages):
        rows = rows_for(recipe, data, i, "sft") if stage.kind == "sft" else None
        if rows is None:
            continue
        total = supervised_steps(rows.count, stage.epochs, stage.batch_size)
        warmup = recipe.stage_learner(stage).warmup_steps
        if warmup >= total:
            key = ("stages", i, "learner", "warmup_steps") if "warmup_steps" in stage.learner else \
                ("learner", "warmup_steps")
            found.append((key, f"warmup_steps {warmup} does not end inside stages.{i}'s {total} SFT steps "
                          f"({rows.count} rows of {rows.source} / batch_size {stage.batch_size} x epochs "
                          f"{stage.epochs:g}); set stages.{i}.learner.warmup_steps below {total}, or train longer"))
    return found


def student_tokenizer(recipe: Recipe, folder: Path):
    """The tokenizer every stage's policy keeps: the model directory's, the preset's tokenizer files, or the tiny
    one `keye-tiny` builds."""
    from keye_vl.tokenizer import build_tiny_tokenizer

    source = recipe.model.path or recipe.model.import_from or recipe.model.tokenizer
    if source:
        return str(folder / source if not Path(source).is_absolute() else source)
    return build_tiny_tokenizer()


def teacher_tokenizers(recipe: Recipe, folder: Path) -> list[Problem]:
    """A distill stage's teachers score the student's token ids, so each must hold the student's tokenizer."""
    from posttrain.teacher_server import same_tokenizer

    found: list[Problem] = []
    student = None
    for i, stage in enumerate(recipe.stages):
        for j, teacher in enumerate(getattr(stage, "teachers", None) or []):
            if teacher.model.startswith(STAGE_PREFIX):  # trained by this recipe, with the student's tokenizer
                continue
            model = Path(teacher.model) if Path(teacher.model).is_absolute() else folder / teacher.model
            key = ("stages", i, "teachers", j, "model")
            if not (model / "config.json").exists():
                found.append((key, f"{model} is no model directory (no config.json); {WHERE_RELATIVE}"))
                continue
            student = student if student is not None else student_tokenizer(recipe, folder)
            differs = same_tokenizer(student, model)
            if differs:
                found.append((key, f"teacher {model}: {differs}; a teacher scores the student's own token ids, so "
                              f"it must be trained with the student's tokenizer (copy the student's tokenizer files "
                              f"into it only if the vocabularies match, else distil from a teacher of that family)"))
    return found
