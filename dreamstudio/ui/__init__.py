"""The Gradio app: a thin layer that turns widget values into Studio calls.

Gradio is imported lazily, so `dreamstudio.ui.launch` can point Gradio's upload/cache folder
into the workspace (GRADIO_TEMP_DIR) before Gradio reads it.

    from dreamstudio.ui import build_ui, launch
"""

from __future__ import annotations

__all__ = ["build_ui", "launch"]


def __getattr__(name: str):
    if name == "build_ui":
        from .app_ui import build_ui

        return build_ui
    if name == "launch":
        from .launch import launch

        return launch
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
