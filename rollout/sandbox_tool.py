"""The agentic loop's tool: run the model's code in `rewards.sandbox` with the sample's images.

The code sees the current images as `image` (the latest) and `images` (all, oldest first); what it prints is
the text the model reads, and PNG/JPEG files it writes become new images in the context.
"""

from __future__ import annotations

from typing import Any

from rollout.agentic import ToolResult, ToolRunner


def sandbox_tool_runner(**limits: Any) -> ToolRunner:
    def run(code: str, images: list[Any]) -> ToolResult:
        from rewards.sandbox import run_python

        result = run_python(code, images=images, **limits)
        text = result.stdout if result.exit_code == 0 else (result.stdout + result.stderr)
        return ToolResult(text=text, images=list(result.images), exit_code=result.exit_code)

    return run
