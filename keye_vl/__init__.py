"""The Keye-VL model: config, vision encoder, projector, Qwen3 decoder with 3-D RoPE, processor, chat modes.

Importing this package registers the model with transformers' Auto classes (`AutoConfig`,
`AutoModelForCausalLM`, `AutoModelForImageTextToText`), so `from_pretrained` on a saved directory, or on the
public Keye-VL-8B-Preview files, needs no `trust_remote_code`.
"""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForImageTextToText

from keye_vl.chat import Mode, ParsedResponse, format_response, parse_response, render_chat
from keye_vl.configuration import KeyeTextConfig, KeyeVisionConfig, KeyeVLConfig
from keye_vl.modeling import KeyeVLForConditionalGeneration
from keye_vl.processing import KeyeVLProcessor

AutoConfig.register(KeyeVLConfig.model_type, KeyeVLConfig, exist_ok=True)
AutoConfig.register(KeyeVisionConfig.model_type, KeyeVisionConfig, exist_ok=True)
AutoConfig.register(KeyeTextConfig.model_type, KeyeTextConfig, exist_ok=True)
for auto_class in (AutoModel, AutoModelForCausalLM, AutoModelForImageTextToText):
    auto_class.register(KeyeVLConfig, KeyeVLForConditionalGeneration, exist_ok=True)

__all__ = [
    "KeyeVLConfig", "KeyeVisionConfig", "KeyeTextConfig", "KeyeVLForConditionalGeneration", "KeyeVLProcessor",
    "Mode", "ParsedResponse", "format_response", "parse_response", "render_chat",
]
