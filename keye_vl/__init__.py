"""The Keye-VL model: config, vision encoder, projector, Qwen3 decoder with 3-D RoPE, processor, chat modes.

Importing the package is cheap (the chat protocol and grounding helpers need no torch): the model, config and
processor classes load on first use. Loading the modeling module registers Keye with transformers' Auto classes
(`AutoConfig`, `AutoModel`, `AutoModelForCausalLM`, `AutoModelForImageTextToText`), so `from_pretrained` on a
saved directory, or on the public Keye-VL-8B-Preview files, needs no `trust_remote_code`; call
`keye_vl.register_auto_classes()` before using the Auto classes directly.
"""

from importlib import import_module

_LAZY = {
    "KeyeVLConfig": "keye_vl.configuration",
    "KeyeVisionConfig": "keye_vl.configuration",
    "KeyeTextConfig": "keye_vl.configuration",
    "KeyeForConditionalGeneration": "keye_vl.modeling",
    "KeyeVLProcessor": "keye_vl.processing",
    "register_auto_classes": "keye_vl.modeling",
    "Mode": "keye_vl.chat",
    "ParsedResponse": "keye_vl.chat",
    "format_response": "keye_vl.chat",
    "parse_response": "keye_vl.chat",
    "render_chat": "keye_vl.chat",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'keye_vl' has no attribute {name!r}")
