"""vLLM plugin (entry point `vllm.general_plugins`): Keye-VL's classes in every process vLLM starts.

vLLM has its own Keye model (`KeyeForConditionalGeneration`), but reads the checkpoint's config and processor
through transformers' Auto classes, which know Keye only once `keye_vl` has registered it. In-process mode
inherits the registration from the engine's own imports; in multiprocess mode the engine core is a fresh
process, and vLLM calls every `vllm.general_plugins` entry point there before loading the model.
"""


def register() -> None:
    from keye_vl import register_auto_classes

    register_auto_classes()
