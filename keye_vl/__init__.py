"""The Keye-VL model: config, vision encoder, projector, Qwen3 decoder with 3-D RoPE, processor.

`import keye_vl` registers Keye with transformers' Auto classes (`AutoConfig`, `AutoModel`,
`AutoModelForCausalLM`, `AutoModelForImageTextToText`, `AutoProcessor`, `AutoImageProcessor`), so
`from_pretrained` on a saved directory, or on the public Keye-VL-8B-Preview files, needs no `trust_remote_code`
and no other call. That loads torch and transformers with the package. The chat-mode protocol and the grounding
format need neither and live in `keye_protocol`, which reward workers import without this package.
"""

from keye_vl.configuration import KeyeTextConfig, KeyeVisionConfig, KeyeVLConfig
from keye_vl.image_processing import KeyeImageProcessor
from keye_vl.modeling import KeyeForConditionalGeneration, register_auto_classes  # importing it registers
from keye_vl.processing import KeyeVLProcessor

__all__ = ["KeyeForConditionalGeneration", "KeyeImageProcessor", "KeyeTextConfig", "KeyeVLConfig",
           "KeyeVLProcessor", "KeyeVisionConfig", "register_auto_classes"]
