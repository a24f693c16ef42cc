"""A run's starting model and data files, prepared once per run directory.

`prepare_model` returns the model directory the first stage reads (an existing one, or one imported or a preset
initialised into `runs/<name>/init-model`). `prepare_data` writes `runs/<name>/data/{sft,prompts,eval}.jsonl`:
- `arithmetic`: 2-digit additions (`cold_start_data.arithmetic_sft`) split into disjoint SFT / RL / held-out
  sets. The SFT teacher drops the carry on `carry_drop_rate` of the problems that carry: an imperfect teacher
  whose mistakes a verifier can select against, as sampled cold-start data is. Without that flaw, RL at this
  scale has nothing to improve on.
- `files`: your own files (JSONL, Parquet or `datasets` directories, `posttrain.data_files`), checked and copied.
  The copy records a digest of each source (`sources.json`); a rerun whose source changed since stops, as a rerun
  with an edited recipe does, instead of training on the stale copy.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

from rich.console import Console

from posttrain.recipe import ArithmeticData, FileData, Recipe


def prepare_model(recipe: Recipe, console: Console) -> Path:
    if recipe.model.path:
        path = Path(recipe.model.path)
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"model.path {path} has no config.json; point it at a Hugging Face model "
                                    f"directory or remove it to start from preset {recipe.model.preset!r}")
        return path
    path = recipe.run_dir / "init-model"
    if recipe.model.import_from and not (path / "config.json").exists():
        from posttrain.model_import import import_model, resolve_source

        staging = path.with_name(path.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        report = import_model(resolve_source(recipe.model.import_from), path, staging=staging)
        console.print(f"imported {report.architecture} ({report.parameters / 1e6:.0f}M parameters) into {path}")
        for line in report.changes():
            console.print(f"  {line}")
    elif not (path / "config.json").exists():
        from keye_vl.weights import init_model_dir

        init_model_dir(path, recipe.model.preset, recipe.model.tokenizer, seed=recipe.model.seed)
        console.print(f"initialised {recipe.model.preset} in {path}")
    return path


SOURCES = "sources.json"  # {path as the recipe gives it: sha256} of the files a run's data was copied from


def prepare_data(recipe: Recipe, console: Console) -> Path:
    out = recipe.run_dir / "data"
    if (out / "done").exists():
        check_sources(recipe, out)
        return out
    out.mkdir(parents=True, exist_ok=True)
    if isinstance(recipe.data, ArithmeticData):
        files = arithmetic_files(recipe.data)
    else:
        files = user_files(recipe.data, out)
        (out / SOURCES).write_text(json.dumps(source_digests(recipe.data), indent=2) + "\n")
    for name, rows in files.items():
        write_jsonl(out / f"{name}.jsonl", rows)
    (out / "done").write_text("")
    if files:
        console.print(f"data: {', '.join(f'{n} {len(r)}' for n, r in files.items())} rows in {out}")
    else:  # e.g. a recipe whose first stage builds the data
        console.print("data: no files given; the stages build their own")
    return out


def check_sources(recipe: Recipe, out: Path) -> None:
    """Stop a rerun whose data files changed since the run copied them into `out` (a run from before digests were
    recorded has nothing to compare: it goes on)."""
    from posttrain.stage_settings import StageSettingsChanged

    recorded_file = out / SOURCES
    if not isinstance(recipe.data, FileData) or not recorded_file.exists():
        return
    recorded, now = json.loads(recorded_file.read_text()), source_digests(recipe.data)
    changed = [path for path in recorded if now.get(path) != recorded[path]]
    if changed:
        raise StageSettingsChanged(
            f"data file {changed[0]} changed since this run copied it into {out}; the run would train on the old "
            f"copy. To keep that run, start a new one under another name (override `name=...`); to train on the "
            f"new file, delete {out} and the stage directories under {recipe.run_dir}")


def source_digests(data: FileData) -> dict[str, str]:
    """sha256 of each file the data section names (a `datasets` directory: of all its files, by relative path). A
    source that has become a FIFO or a device since the copy is refused before it is opened (`check_data_path`)."""
    from posttrain.data_files import check_data_path

    digests = {}
    for name in ("sft", "prompts", "eval"):
        path = getattr(data, name)
        if not path:
            continue
        check_data_path(path, f"data.{name}")
        source = Path(path)
        files = sorted(f for f in source.rglob("*") if f.is_file()) if source.is_dir() else [source]
        digest = hashlib.sha256()
        for file in files:
            digest.update(str(file.relative_to(source) if source.is_dir() else "").encode())
            with open(file, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
        digests[path] = digest.hexdigest()
    return digests


def arithmetic_files(data: ArithmeticData) -> dict[str, list[dict]]:
    """SFT rows, then RL prompts on other pairs, then held-out prompts per mode (all pairs disjoint)."""
    from cold_start_data.arithmetic_sft import arithmetic_sft_rows

    split = arithmetic_sft_rows(data.sft_rows + data.rl_prompts, seed=data.seed,
                                carry_drop_rate=data.carry_drop_rate, modes=tuple(data.modes),
                                n_eval=data.eval_prompts, prompt_style=data.prompt_style,
                                operands=data.operands)
    keys = ("prompt", "answer", "mode", "carry")
    sft = split.train[: data.sft_rows]
    rl = [{"id": f"rl{i}", **{k: row[k] for k in keys}, "hints": addition_hints(row["prompt"])}
          for i, row in enumerate(split.train[data.sft_rows:])]
    held_out = [{"id": f"eval{i}", **row} for i, row in enumerate(split.eval)]
    return {"sft": sft, "prompts": rl, "eval": held_out}


def addition_hints(prompt: str) -> list[str]:
    """Five progressive hints for "What is a + b?": the method, the carry rule, then the solution step by step."""
    from cold_start_data.sources.arithmetic import addition_steps

    a, b = (int(x) for x in re.findall(r"\d+", prompt)[:2])
    steps, _ = addition_steps(a, b, style="compact")
    revealed = [" ".join(steps[:k]) for k in range(1, len(steps) + 1)]
    hints = ["Add column by column, starting with the ones.",
             "When a column adds up to 10 or more, write the ones digit and carry 1 into the next column.",
             *revealed]
    return (hints + revealed[-1:] * 5)[:5]


def user_files(data: FileData, out: Path) -> dict[str, list[dict]]:
    from posttrain.data_files import check_data_path, check_rows, read_rows, save_images

    files = {}
    for name in ("sft", "prompts", "eval"):
        path = getattr(data, name)
        if path is not None:
            check_data_path(path, f"data.{name}")  # read_rows checks too, but cannot name the key
            rows = read_rows(path, data.columns, data.split)
            check_rows(rows, Path(path), name)
            save_images(rows, out / "images", name, Path(path))
            files[name] = rows
    return files


def write_jsonl(path: Path, rows: list[dict]) -> None:
    temp = path.with_suffix(".tmp")
    temp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    shutil.move(temp, path)
