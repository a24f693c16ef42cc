"""What a stage is given: `StageContext`, the recipe, the stage's own section, its directory, its input model and
data. The runner builds one per stage; the stages read it and import nothing of the runner (which imports them,
through `posttrain.stages.registry`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from posttrain.recipe import Recipe


@dataclass
class StageContext:
    recipe: Recipe
    index: int
    stage: Any
    dir: Path
    model_in: Path
    data_dir: Path  # the newest data directory (the run's, or the last stage's that built data)
    console: Console
    placement: Any = None  # posttrain.placement.Placement: the run's bundles (None: actors ask Ray directly)
    earlier_data_dirs: tuple[Path, ...] = ()  # older data directories, newest first

    def data_file(self, name: str) -> Path:
        """The newest copy of data file `name`: a stage that builds data replaces the files it writes and
        leaves the others (a pre-training data stage after `cold_start_build` keeps its `eval.jsonl`)."""
        for directory in (self.data_dir, *self.earlier_data_dirs):
            if (directory / name).exists():
                return directory / name
        return self.data_dir / name

    @property
    def model_out(self) -> Path:
        return self.dir / "model"

    @property
    def label(self) -> str:
        return f"{self.index:02d}-{self.stage.name or self.stage.kind}"
