"""The README's quick starts, run as a reader would run them, so that no command in them goes stale.

Every code block under a `## Quick start: ...` heading carries a marker comment saying what the test does with it:

- `<!-- quick-start: file NAME -->`: the block is written to NAME in the quick start's working directory;
- `<!-- quick-start: sections RECIPE -->`: each top-level section of the block replaces that section of RECIPE;
- `<!-- quick-start: run -->`: each line is a `posttrain` command, run through the CLI in that directory;
- `<!-- quick-start: gpu -->`: the GPU install; `posttrain cp` and `plan` run, `pip` lines are checked against
  pyproject and constraints.txt, `ray start` and the cluster's `posttrain run` are not run (no GPU, no cluster).

A `posttrain run` runs at the smallest size (`SMALL` overrides appended, as tests/e2e's recipes shrink theirs), in
the slow tests; the fast ones validate the same recipe and overrides instead. `path/to/your-model` is the session's
tiny Llama (`llama_dir`), which stands in for the reader's model. Also checked: the README starts with the two
commands, keeps its known limits above the quick starts, and every relative link in it and in docs/ resolves.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
BLOCK = re.compile(r"(?:<!-- quick-start: (\w+)(?: (\S+))? -->\n)?```(\w*)\n(.*?)```", re.S)
# a posttrain run of a tiny/rl_math copy at the smallest size that still trains both stages
SMALL = ["stages.0.epochs=1", "stages.0.learner.warmup_steps=0", "stages.1.steps=2",
         "stages.1.learner.warmup_steps=0", "stages.1.prompts_per_step=2", "stages.1.group_size=4",
         "stages.1.eval_every=2"]
SMALL_ARITHMETIC = ["data.sft_rows=64", "data.rl_prompts=16", "data.eval_prompts=8"]
NEEDS_A_RUN = ("traces", "report")  # commands that read a finished run: only after a real one


@dataclass
class Block:
    action: str | None  # file | sections | run | gpu; None: unmarked
    target: str | None
    text: str


def sections(markdown: str) -> dict[str, list[Block]]:
    """The code blocks of each `## ` section, by heading."""
    found: dict[str, list[Block]] = {}
    for part in re.split(r"^## ", markdown, flags=re.M)[1:]:
        heading, _, body = part.partition("\n")
        found[heading.strip()] = [Block(m[1], m[2], m[4]) for m in BLOCK.finditer(body)]
    return found


def quick_starts() -> dict[str, list[Block]]:
    return {h: blocks for h, blocks in sections(README.read_text()).items() if h.startswith("Quick start")}


def commands(block: Block) -> list[list[str]]:
    """Each line of a shell block as argv, comments dropped."""
    return [argv for line in block.text.splitlines() if (argv := shlex.split(line, comments=True))]


def posttrain(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    process = subprocess.run([sys.executable, "-m", "posttrain.cli", *args], cwd=cwd, capture_output=True,
                             text=True, timeout=900)
    assert process.returncode == 0, f"posttrain {shlex.join(args)}:\n{process.stdout[-3000:]}{process.stderr[-3000:]}"
    return process


def small(recipe: Path) -> list[str]:
    data = yaml.safe_load(recipe.read_text())
    return SMALL + (SMALL_ARITHMETIC if data.get("data", {}).get("kind", "arithmetic") == "arithmetic" else [])


def play(heading: str, cwd: Path, *, run: bool, stand_ins: dict[str, str]) -> list[tuple[list[str], str]]:
    """Do what the quick start says, in `cwd`; returns each posttrain command with its stdout."""
    done = []
    for block in quick_starts()[heading]:
        if block.action == "file":
            (cwd / block.target).write_text(block.text)
        elif block.action == "sections":
            recipe = cwd / block.target
            data = yaml.safe_load(recipe.read_text())
            data.update(yaml.safe_load(block.text))
            recipe.write_text(yaml.safe_dump(data, sort_keys=False))
        elif block.action == "run":
            for argv in commands(block):
                assert argv[0] == "posttrain", f"{heading}: a run block holds posttrain commands, not {argv}"
                args = [stand_ins.get(a, a) for a in argv[1:]]
                if args[0] in ("run", "validate"):
                    args = [args[0] if run else "validate", *args[1:], *small(cwd / args[1])]
                elif args[0] in NEEDS_A_RUN and not run:
                    continue
                done.append((args, posttrain(args, cwd).stdout))
        else:
            raise AssertionError(f"{heading}: a code block without a quick-start marker:\n{block.text}")
    return done


def test_readme_starts_with_the_two_commands():
    first = README.read_text().split("```")[1]
    lines = first.splitlines()
    assert lines[0] == "bash" and [line.split("#")[0].strip() for line in lines[1:]] == ["make run", "make test"]


def test_known_limits_come_before_the_quick_starts_and_the_readme_stays_a_guide():
    text = README.read_text()
    headings = re.findall(r"^## (.+)$", text, flags=re.M)
    assert headings.index("Known limits") < min(i for i, h in enumerate(headings) if h.startswith("Quick start"))
    quick = {"Quick start: your reward function", "Quick start: your model and data", "Quick start: GPUs"}
    assert quick <= set(headings)
    assert len(text.splitlines()) <= 260


def test_every_quick_start_block_is_marked():
    for heading, blocks in quick_starts().items():
        assert blocks, heading
        for block in blocks:
            assert block.action in ("file", "sections", "run", "gpu"), f"{heading}: unmarked block\n{block.text}"


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@pytest.mark.parametrize("page", [README, *sorted((ROOT / "docs").glob("*.md")), ROOT / "bench" / "README.md"],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        assert file.exists(), f"{page.name}: link to {target}: no such file"
        if anchor:
            anchors = {slug(h) for h in re.findall(r"^#+ (.+)$", file.read_text(), flags=re.M)}
            assert anchor in anchors, f"{page.name}: link to {target}: no such heading in {file.name}"


def test_reward_quick_start(tmp_path):
    """Cheap part for real (file, reward check, cp, the YAML, validate at the run's overrides)."""
    done = play("Quick start: your reward function", tmp_path, run=False, stand_ins={})
    (check, check_out), *_ = done
    assert check[:2] == ["reward", "check"]
    rows = [json.loads(line) for line in check_out.splitlines() if line.startswith('{"row"')]
    # row 0: right, 26 characters; row 1: wrong (13 for 12), 52 characters
    assert [r["components"] for r in rows] == [{"correct": 1.0, "brevity": -0.026},
                                                 {"correct": 0.0, "brevity": -0.052}]
    components = yaml.safe_load((tmp_path / "my.yaml").read_text())["reward"]["components"]
    assert {"spec": "my_reward.py:short_answer", "weight": 0.5} in components


def test_the_reward_file_doctest_passes(tmp_path):
    [block] = [b for b in quick_starts()["Quick start: your reward function"] if b.target == "my_reward.py"]
    (tmp_path / "my_reward.py").write_text(block.text)
    process = subprocess.run([sys.executable, "-m", "doctest", "my_reward.py"], cwd=tmp_path, capture_output=True,
                             text=True)
    assert process.returncode == 0 and ">>>" in block.text, process.stdout


def test_model_and_data_quick_start(tmp_path, llama_dir):
    done = play("Quick start: your model and data", tmp_path, run=False,
                stand_ins={"path/to/your-model": str(llama_dir)})
    assert (tmp_path / "my-model" / "import.json").exists()
    assert [args[0] for args, _ in done] == ["model", "cp", "validate", "validate"]


@pytest.mark.slow
def test_reward_quick_start_runs(tmp_path):
    """The same quick start with its run for real, at the smallest size, then `traces show` on it."""
    done = play("Quick start: your reward function", tmp_path, run=True, stand_ins={})
    assert [args[0] for args, _ in done] == ["reward", "cp", "validate", "run", "traces"]
    rl = tmp_path / "runs" / "my" / "01-rl"
    records = [json.loads(line) for line in (rl / "traces.jsonl").read_text().splitlines()]
    assert len(records) == 2 * 2 * 4  # steps x prompts x group
    for record in records:  # the reader's reward scored every sample, as its file says
        components = record["reward_components"]
        assert components["short_answer/correct"] in (0.0, 1.0)
        assert components["short_answer/brevity"] == pytest.approx(-len(record["completion"]) / 1000, abs=1e-3)


@pytest.mark.slow
def test_model_and_data_quick_start_runs(tmp_path, llama_dir):
    play("Quick start: your model and data", tmp_path, run=True, stand_ins={"path/to/your-model": str(llama_dir)})
    config = json.loads((tmp_path / "runs" / "my_data" / "01-rl" / "model" / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]


def test_gpu_quick_start(tmp_path):
    """`posttrain cp` and `plan` run (`plan --declared`: on the cluster the recipe declares); the pip lines
    name the torch pinned in constraints.txt and extras pyproject has; ray and the cluster run are not run."""
    [block] = quick_starts()["Quick start: GPUs"]
    assert block.action == "gpu"
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    extras = set(pyproject["project"]["optional-dependencies"])
    pins = {line.split("==")[0]: line for line in (ROOT / "constraints.txt").read_text().splitlines() if "==" in line}
    ran = []
    for argv in commands(block):
        if argv[:2] == ["pip", "install"]:
            for spec in argv[2:]:
                if spec.startswith("-e"):
                    continue
                if spec.startswith(".["):
                    assert set(spec[2:-1].split(",")) <= extras, spec
                elif spec.startswith("torch=="):
                    assert pins["torch"] == spec
        elif argv[0] == "posttrain" and argv[1] in ("cp", "plan"):
            # --declared: a Ray instance another job runs on this machine is not the cluster the recipe declares
            args = argv[1:] + (["--declared"] if argv[1] == "plan" else [])
            ran.append(posttrain(args, tmp_path).stdout)
        else:
            assert argv[0] == "ray" or argv[:2] == ["posttrain", "run"], argv
    assert len(ran) == 2 and "learner 0" in ran[1]
