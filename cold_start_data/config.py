"""The build configuration: sizes, proportions, sources per mode, teacher, judge, hygiene. Typed and validated.

Defaults are the paper's (Keye-VL report, cold start): non-thinking 330k, thinking 230k, auto-think 20k,
agentic 100k, plus video 104k (24k thinking + 80k non-thinking). `proportions` are shares of the image/text
part; `video_share` is the share of the whole mixture that is video. Which synthetic sources feed each mode
is ours (the paper's sources are not public). This module knows nothing about building.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cold_start_data.sources import SOURCES, TOOL_SOURCES, VIDEO_SOURCES
from keye_protocol.chat import Mode

PAPER_COUNTS = {"no_think": 330_000, "think": 230_000, "auto_think": 20_000, "agentic": 100_000}
PAPER_VIDEO_COUNTS = {"think": 24_000, "no_think": 80_000}
PAPER_VIDEO_SHARE = sum(PAPER_VIDEO_COUNTS.values()) / (sum(PAPER_COUNTS.values()) + sum(PAPER_VIDEO_COUNTS.values()))
VIDEO = "video"  # the bucket name of video samples

DEFAULT_SOURCES = {
    "no_think": {"arithmetic": 0.3, "word_problem": 0.15, "counting": 0.2, "grounding": 0.2, "ocr_math": 0.15},
    "think": {"arithmetic": 0.3, "word_problem": 0.3, "counting": 0.15, "grounding": 0.1, "ocr_math": 0.15},
    "auto_think": {"arithmetic": 0.4, "word_problem": 0.3, "counting": 0.15, "ocr_math": 0.15},
    "agentic": {"small_detail": 1.0},
    VIDEO: {"video_motion": 0.5, "video_order": 0.5},
}
MODES = [m.value for m in Mode]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TeacherConfig(_Strict):
    kind: Literal["solver", "model"] = "solver"
    flaw_rate: float = Field(0.0, ge=0.0, le=1.0)  # solver: share of flawable tasks written with the flaw
    repeat_rate: float = Field(0.0, ge=0.0, le=1.0)  # solver: share of responses whose last step loops
    model_dir: Path | None = None  # model teacher: a model directory the rollout engine loads
    samples: int = Field(4, ge=1)  # model teacher: paths sampled per task
    temperature: float = Field(0.6, ge=0.0)
    max_tokens: int = Field(256, ge=1)
    step_frequency: bool = False  # model teacher: keep the verified path whose steps recur most
    batch_size: int = Field(16, ge=1)

    @model_validator(mode="after")
    def _model_needs_dir(self) -> "TeacherConfig":
        if self.kind == "model" and self.model_dir is None:
            raise ValueError("teacher.kind 'model' needs teacher.model_dir (a model directory)")
        return self


class JudgeConfig(_Strict):
    kind: Literal["steps", "pass_rate"] = "steps"
    min_steps: int = Field(3, ge=1)  # steps judge: complex from this many solver steps
    samples: int = Field(4, ge=1)  # pass-rate judge: direct answers sampled per task
    threshold: float = Field(0.5, ge=0.0, le=1.0)  # pass-rate judge: complex below this pass rate


class BuildConfig(_Strict):
    size: int = Field(ge=1)
    seed: int = 0
    proportions: dict[str, float] = Field(default_factory=lambda: dict(PAPER_COUNTS))
    video_share: float = Field(PAPER_VIDEO_SHARE, ge=0.0, lt=1.0)
    video_modes: dict[str, float] = Field(default_factory=lambda: dict(PAPER_VIDEO_COUNTS))
    sources: dict[str, dict[str, float]] = Field(default_factory=lambda: {k: dict(v) for k, v in
                                                                          DEFAULT_SOURCES.items()})
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    judge: JudgeConfig = Field(default_factory=JudgeConfig)
    user_data: list[Path] = Field(default_factory=list)  # JSONL/Parquet files of the user's own rows
    user_default_mode: str = "no_think"  # for user rows with neither a mode nor a response to infer it from
    eval_sets: list[Path] = Field(default_factory=list)  # extra evaluation prompts to decontaminate against
    eval_size: int = Field(10, ge=0)  # held-out prompts per (mode, source), written to eval.jsonl
    phash_distance: int = Field(4, ge=0, le=64)  # near-duplicate images: at most this many differing bits
    iou_threshold: float = Field(0.5, gt=0.0, le=1.0)
    max_attempts: int = Field(20, ge=1)  # tries per wanted sample before a slot is declared impossible
    tokenizer: str = "tiny"  # for token-length statistics: "tiny" or a tokenizer/model directory

    @field_validator("proportions", "video_modes")
    @classmethod
    def _modes(cls, value: dict[str, float]) -> dict[str, float]:
        for mode, weight in value.items():
            if mode not in MODES:
                raise ValueError(f"unknown mode {mode!r}; valid modes are {MODES}")
            if weight < 0:
                raise ValueError(f"the weight of mode {mode!r} is negative ({weight})")
        if value and sum(value.values()) <= 0:
            raise ValueError("the weights must not all be zero")
        return value

    @field_validator("sources", mode="before")
    @classmethod
    def _merge_sources(cls, value: dict) -> dict:
        """A bucket given replaces that bucket's defaults; buckets not given keep theirs."""
        if not isinstance(value, dict):
            raise ValueError(f"sources must map buckets to {{source: weight}}, got {type(value).__name__}")
        return {**{k: dict(v) for k, v in DEFAULT_SOURCES.items()}, **value}

    @field_validator("user_default_mode")
    @classmethod
    def _default_mode(cls, value: str) -> str:
        if value not in MODES:
            raise ValueError(f"unknown mode {value!r}; valid modes are {MODES}")
        return value

    @model_validator(mode="after")
    def _sources(self) -> "BuildConfig":
        for bucket in [*self.proportions, *([VIDEO] if self.video_share else [])]:
            weights = self.sources.get(bucket)
            if not weights or sum(weights.values()) <= 0:
                raise ValueError(f"sources: no source weights for {bucket!r}")
            for name, weight in weights.items():
                if name not in SOURCES:
                    raise ValueError(f"sources.{bucket}: unknown source {name!r}; valid: {sorted(SOURCES)}")
                if weight < 0:
                    raise ValueError(f"sources.{bucket}.{name}: negative weight {weight}")
                if (bucket == VIDEO) != (name in VIDEO_SOURCES):
                    raise ValueError(f"sources.{bucket}: {name!r} " + ("is not a video source" if bucket == VIDEO
                                                                      else "is a video source: list it under "
                                                                           "'video'"))
                if bucket == "agentic" and name not in TOOL_SOURCES:
                    raise ValueError(f"sources.agentic: {name!r} has no code plan; agentic sources: "
                                     f"{list(TOOL_SOURCES)}")
        return self

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides) -> "BuildConfig":
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"build config {path} not found")
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping of build settings, got {type(data).__name__}")
        return cls(**{**data, **{k: v for k, v in overrides.items() if v is not None}})
