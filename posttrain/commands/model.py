"""`posttrain model init|import|info`: create a model directory from a preset, import a Hugging Face causal LM (or a
GGUF file) with the mode tags the toolkit needs, show a model's parameters by part."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

PRESETS = ("keye-tiny", "keye-vl-8b")  # keye_vl.presets.PRESETS; named here so the CLI starts without torch


def register(subparsers) -> None:
    parser = subparsers.add_parser("model", help="create, import or inspect model directories")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    init = actions.add_parser("init", help="write a complete Hugging Face model directory from a preset")
    init.add_argument("out", type=Path, help="directory to write (config, weights, tokenizer, processor)")
    init.add_argument("--preset", default="keye-tiny", choices=sorted(PRESETS))
    init.add_argument("--tokenizer", help="tokenizer directory (required for keye-vl-8b: the public files)")
    init.add_argument("--siglip", help="SiglipVisionModel directory to start the vision tower from")
    init.add_argument("--seed", type=int, default=0)
    init.set_defaults(run=run_init)

    imported = actions.add_parser("import", help="a Hugging Face causal LM directory or .gguf file -> a model "
                                  "directory recipes accept (adds missing mode tags, says what it changed)")
    imported.add_argument("source", type=Path, help="Hugging Face model directory, or a .gguf file")
    imported.add_argument("out", type=Path, help="new directory to write")
    imported.set_defaults(run=run_import)

    info = actions.add_parser("info", help="print parameter counts by part (visual, mlp_AR, model, lm_head)")
    info.add_argument("model_dir", type=Path)
    info.set_defaults(run=run_info)


def run_init(args: argparse.Namespace) -> int:
    from keye_vl.weights import MAX_INIT_PARAMETERS, init_model_dir

    counts = init_model_dir(args.out, args.preset, args.tokenizer, args.siglip, args.seed)
    print_counts(counts, f"{args.preset} -> {args.out}")
    if counts["total"] > MAX_INIT_PARAMETERS:
        Console().print("[yellow]config, tokenizer and processor written; no weights (too large to initialise "
                        "randomly here): copy the public checkpoint's *.safetensors into this directory[/]")
    return 0


def run_import(args: argparse.Namespace) -> int:
    from posttrain.model_import import REPORT_FILE, import_model

    report = import_model(args.source, args.out)
    console = Console(soft_wrap=True)  # one line per change, whole, for logs and grep
    console.print(f"{report.architecture} ({report.parameters:,} parameters): {args.source} -> {args.out}")
    for line in report.changes() or ["no changes: the tokenizer has every mode tag and the eos ids end its turns"]:
        console.print(f"  {line}")
    for tag in report.tags_special:
        console.print(f"  [yellow]{tag} is a special token in this tokenizer: decoders that skip special tokens "
                      f"drop it, so format rewards would not see it[/]")
    console.print(f"  end of turn: {report.end_of_turn}; report in {args.out / REPORT_FILE}")
    return 0


def run_info(args: argparse.Namespace) -> int:
    import torch

    import keye_vl.modeling  # noqa: F401  (registers the config class)
    from keye_vl.configuration import KeyeVLConfig
    from keye_vl.modeling import KeyeForConditionalGeneration
    from keye_vl.weights import parameter_counts

    if not (args.model_dir / "config.json").exists():
        raise FileNotFoundError(f"{args.model_dir}/config.json not found; create a model with "
                                f"`posttrain model init --preset keye-tiny {args.model_dir}`")
    config = KeyeVLConfig.from_pretrained(str(args.model_dir))
    with torch.device("meta"):
        counts = parameter_counts(KeyeForConditionalGeneration(config))
    print_counts(counts, str(args.model_dir))
    text = config.text_config
    print(json.dumps({"decoder": {"layers": text.num_hidden_layers, "hidden": text.hidden_size,
                                  "heads": text.num_attention_heads, "kv_heads": text.num_key_value_heads,
                                  "vocab": text.vocab_size, "mrope_section": text.mrope_section},
                      "vision": {"layers": config.vision_config.num_hidden_layers,
                                 "hidden": config.vision_config.hidden_size,
                                 "patch": config.vision_config.patch_size}}))
    return 0


def print_counts(counts: dict[str, int], title: str) -> None:
    table = Table(title=title)
    table.add_column("part")
    table.add_column("parameters", justify="right")
    for part, n in counts.items():
        table.add_row(part, f"{n:,}")
    Console().print(table)
