"""The app launched in-process for the app and browser tests."""

from __future__ import annotations

import os
import socket
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def running_app(model: Path, workspace: Path, *options: str):
    """The app launched in-process on `model`, on a free localhost port, with app.py's
    `options` besides; yields (url, studio) and closes it afterwards, leaving
    GRADIO_TEMP_DIR as it was."""
    from dreamstudio.ui.launch import launch

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    old_temp = os.environ.get("GRADIO_TEMP_DIR")
    demo, studio = launch(["--model", str(model), "--workspace", str(workspace),
                           "--port", str(port), "--device", "cpu", *options], block=False,
                          quiet=True)
    try:
        yield f"http://127.0.0.1:{port}/", studio
    finally:
        studio.cancel_training()
        studio.jobs.wait(30)
        demo.close()
        if old_temp is None:
            os.environ.pop("GRADIO_TEMP_DIR", None)
        else:
            os.environ["GRADIO_TEMP_DIR"] = old_temp
