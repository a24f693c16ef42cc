"""`posttrain model import`: a Hugging Face causal LM directory (or a GGUF file) into a directory recipes accept.

What it changes, and reports (printed, and kept in `<out>/import.json`):
- the mode tags (`keye_protocol.chat.REASONING_TAGS`: `<think>`, `<answer>`, ...) the tokenizer lacks become ordinary
  added tokens, not special ones (DESIGN.md: decoders that skip special tokens would strip them and every format
  check would fail); their embedding rows, input and output (when untied), are set to the mean of the existing
  rows, so a new tag starts as an average token rather than as noise that can dominate the logits. The matrix is
  resized only when the tokenizer outgrows it (checkpoints often carry spare rows);
- the generation config's eos ids include the token that ends the chat template's assistant turn
  (`PromptEncoder.end_of_turn`), so `generate` elsewhere stops where the toolkit's engines stop.
Nothing else: every other weight, the chat template and the other tokens are kept as they were.

It refuses, naming the fix: a Keye-VL directory (recipes take it as it is), a source without config or
tokenizer, a tokenizer the toolkit cannot end turns with, and an output directory that already holds files.
This module knows nothing about recipes or training.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from keye_protocol.chat import REASONING_TAGS

REPORT_FILE = "import.json"


@dataclass
class ImportReport:
    source: str
    out: str
    architecture: str
    parameters: int
    tokens_added: dict[str, int] = field(default_factory=dict)  # tag -> its new id
    tags_special: list[str] = field(default_factory=list)  # tags the source already had, but as special tokens
    embedding_rows: tuple[int, int] = (0, 0)  # before, after
    tied_embeddings: bool = True
    end_of_turn: str = ""
    eos_ids: tuple[list[int], list[int]] = ([], [])  # generation config's, before and after

    def changes(self) -> list[str]:
        """What the import changed, one sentence each (empty: the model was usable as it was)."""
        lines = []
        if self.tokens_added:
            shown = ", ".join(f"{t}={i}" for t, i in self.tokens_added.items())
            before, after = self.embedding_rows
            rows = f"resized {before} -> {after} rows" if after != before else f"{after} rows, not resized"
            which = "input embeddings (tied to the output)" if self.tied_embeddings else \
                "input and output embeddings"
            lines.append(f"added {len(self.tokens_added)} mode tags as ordinary tokens ({shown}); {which}: {rows}, "
                         f"the new rows set to the mean of the existing ones")
        if self.eos_ids[0] != self.eos_ids[1]:
            lines.append(f"generation eos ids {self.eos_ids[0]} -> {self.eos_ids[1]} (the chat template ends a "
                         f"turn with {self.end_of_turn})")
        return lines


def import_model(source: str | Path, out: str | Path) -> ImportReport:
    """Load `source` (a Hugging Face directory, or a `.gguf` file), add what the toolkit needs, save to `out`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rollout.encoding import PromptEncoder

    source, out = Path(source), Path(out)
    directory, load_options = _source_options(source)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"output directory {out} already holds files; choose a new directory or remove it")
    tokenizer = AutoTokenizer.from_pretrained(str(directory), **load_options)
    model = AutoModelForCausalLM.from_pretrained(str(directory), dtype="auto", **load_options)
    report = ImportReport(source=str(source), out=str(out), architecture=type(model).__name__,
                          parameters=sum(p.numel() for p in model.parameters()))
    _add_mode_tags(model, tokenizer, report)
    end_of_turn = PromptEncoder(tokenizer).end_of_turn  # raises, naming the fix, for a tokenizer it cannot use
    report.end_of_turn = end_of_turn
    _set_eos_ids(model, [tokenizer.convert_tokens_to_ids(end_of_turn), tokenizer.eos_token_id], report)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / REPORT_FILE).write_text(json.dumps({**asdict(report), "changes": report.changes()}, indent=2) + "\n")
    return report


def _source_options(source: Path) -> tuple[Path, dict]:
    """The directory transformers reads and the options for it; errors name what is missing."""
    from keye_vl.processing import PREPROCESSOR_FILE

    if not source.exists():
        raise FileNotFoundError(f"{source} does not exist; give a Hugging Face model directory or a .gguf file")
    if source.is_file():
        if source.suffix != ".gguf":
            raise ValueError(f"{source} is a file but not a .gguf; give a Hugging Face model directory or a .gguf "
                             f"file")
        return source.parent, _gguf_options(source)
    if (source / PREPROCESSOR_FILE).exists():
        raise ValueError(f"{source} is a Keye-VL directory ({PREPROCESSOR_FILE}); recipes take it as it is: set "
                         f"`model.path: {source}`")
    if not (source / "config.json").exists():
        ggufs = sorted(source.glob("*.gguf"))
        hint = f"; to import its GGUF, give the file: {ggufs[0]}" if ggufs else ""
        raise FileNotFoundError(f"{source}/config.json not found: not a Hugging Face model directory{hint}")
    if not any((source / name).exists() for name in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")):
        raise FileNotFoundError(f"{source} has no tokenizer files (tokenizer.json or tokenizer_config.json); copy "
                                f"the model's tokenizer into it")
    return source, {}


def _gguf_options(file: Path) -> dict:
    """GGUF weights are dequantized on load: quantized tensors can be neither trained nor saved."""
    try:
        import gguf  # noqa: F401  (transformers reads GGUF through it)
    except ImportError:
        raise ImportError(f"reading {file} needs the `gguf` package: pip install -c constraints.txt gguf") from None
    from transformers import GgufConfig

    return {"gguf_file": file.name, "quantization_config": GgufConfig(dequantize=True)}


@torch.no_grad()
def _add_mode_tags(model, tokenizer, report: ImportReport) -> None:
    vocab = tokenizer.get_vocab()
    special = set(tokenizer.all_special_tokens)
    report.tags_special = [t for t in REASONING_TAGS if t in vocab and t in special]
    missing = [t for t in REASONING_TAGS if t not in vocab]
    inputs = model.get_input_embeddings()
    rows = inputs.weight.shape[0]
    report.embedding_rows = (rows, rows)
    outputs = model.get_output_embeddings()
    report.tied_embeddings = outputs is None or outputs.weight.data_ptr() == inputs.weight.data_ptr()
    if not missing:
        return
    known = min(len(tokenizer), rows)  # rows past the tokenizer's last id are untrained padding
    from tokenizers import AddedToken

    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in missing])
    ids = tokenizer.convert_tokens_to_ids(missing)
    report.tokens_added = dict(zip(missing, ids))
    means = [inputs.weight[:known].mean(0)]
    if not report.tied_embeddings:
        means.append(outputs.weight[:known].mean(0))
        bias = getattr(outputs, "bias", None)
        bias_mean = bias[:known].mean() if bias is not None else None
    if max(ids) >= rows:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)  # rows are set just below
    inputs, outputs = model.get_input_embeddings(), model.get_output_embeddings()
    inputs.weight[ids] = means[0]
    if not report.tied_embeddings:
        outputs.weight[ids] = means[1]
        if bias_mean is not None:
            outputs.bias[ids] = bias_mean
    report.embedding_rows = (rows, inputs.weight.shape[0])


def _set_eos_ids(model, wanted: list[int | None], report: ImportReport) -> None:
    config = model.generation_config
    current = config.eos_token_id
    before = [] if current is None else [current] if isinstance(current, int) else list(current)
    after = before + [i for i in dict.fromkeys(wanted) if i is not None and i not in before]
    report.eos_ids = (before, after)
    if after != before:
        config.eos_token_id = after[0] if len(after) == 1 else after
