"""`posttrain demo`: the smallest end-to-end look at the model.

Creates a `keye-tiny` model directory (once), reloads it the way users do (`from_pretrained`), and samples one
answer per chat mode for a picture question. The model is untrained, so the text is noise; what the demo
shows is that config, tokenizer, processor, vision encoder, 3-D RoPE and cached generation work together.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rich.console import Console


def register(subparsers) -> None:
    parser = subparsers.add_parser("demo", help="init a tiny Keye-VL and generate in every chat mode")
    parser.add_argument("--dir", type=Path, default=Path("runs/demo/keye-tiny"))
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.set_defaults(run=run)


def demo_image():
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (196, 140), "white")
    draw = ImageDraw.Draw(image)
    draw.ellipse((20, 20, 80, 80), fill="red")
    draw.rectangle((110, 50, 170, 110), fill="blue")
    return image


def run(args: argparse.Namespace) -> int:
    import torch

    from keye_vl import KeyeForConditionalGeneration, KeyeVLProcessor
    from keye_protocol.chat import Mode
    from keye_vl.weights import init_model_dir

    console = Console()
    if not (args.dir / "model.safetensors").exists():
        init_model_dir(args.dir, "keye-tiny")
        console.print(f"created {args.dir}")
    model = KeyeForConditionalGeneration.from_pretrained(str(args.dir)).eval()
    processor = KeyeVLProcessor.from_pretrained(args.dir)
    messages = [{"role": "user", "content": [{"type": "image", "image": demo_image()},
                                             {"type": "text", "text": "How many shapes are there?"}]}]
    torch.manual_seed(0)
    for mode in Mode:
        batch = processor.process_conversations([messages], mode=mode)
        start = time.perf_counter()
        with torch.no_grad():
            out = model.generate(**batch, max_new_tokens=args.max_new_tokens, do_sample=True, temperature=0.6,
                                 top_p=0.95, top_k=20)
        new = out[0, batch["input_ids"].shape[1]:]
        seconds = time.perf_counter() - start
        console.rule(f"{mode.value}: {len(new)} tokens in {seconds:.2f}s ({len(new) / seconds:.0f} tok/s)")
        console.print(processor.decode(new), markup=False)
    console.print("[dim]untrained weights: the text is noise until a recipe trains the model[/]")
    return 0
