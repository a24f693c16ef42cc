"""The agentic loop's tool: run the model's code in `rewards.sandbox` with the sample's images.

The code sees the current images as `image` (the latest) and `images` (all, oldest first); what it prints is
the text the model reads, and PNG/JPEG files it writes become new images in the context (regular files within
the sandbox's byte and pixel budgets; the others are named in the text). See `rewards.sandbox` for what the
sandbox promises.
"""

from __future__ import annotations

from typing import Any

from rollout.agentic import ToolResult, ToolRunner


def sandbox_tool_runner(**limits: Any) -> ToolRunner:
    def run(code: str, images: list[Any]) -> ToolResult:
        from rewards.sandbox import run_python

        result = run_python(code, images=images, **limits)
        text = result.stdout if result.exit_code == 0 else (result.stdout + result.stderr)
        if result.skipped_images:  # say why an image the code wrote did not come back (FIFO, budget, ...)
            text += "".join(f"\n[image not returned: {why}]" for why in result.skipped_images)
        return ToolResult(text=text, images=list(result.images), exit_code=result.exit_code)

    return run
