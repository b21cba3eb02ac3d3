"""Command line and launch logic of the app (app.py only calls `main`).

Safe defaults: the server binds to 127.0.0.1, serves files only from the workspace, keeps
Gradio's uploads in the workspace, a public --share link never opens without a password,
and an address that fails to log in a few times in a row is refused for a while.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..config import default_of
from ..errors import DreamStudioError, InputError
from ..studio import DEFAULT_MODEL, EvalConfig, Studio, describe_source

if TYPE_CHECKING:
    import gradio as gr

SHARE_USER = "dreamstudio"
SCORERS = {"dino_model": "DINO", "clip_model": "CLIP"}  # EvalConfig field: what it scores


@dataclass
class LaunchOptions:
    model: str = DEFAULT_MODEL
    workspace: Path = Path("workspace")
    port: int = 7860
    host: str = "127.0.0.1"
    share: bool = False
    auth: tuple[str, str] | None = None
    generated_password: bool = False  # True when --share made the password up
    device: str | None = None
    scorer_models: dict[str, str] = field(default_factory=dict)  # --dino-model, --clip-model
    preview_decoder: Path | None = None
    vae: str | None = None  # replaces the base model's VAE (e.g. an fp16-safe SDXL VAE)


def parse_auth(text: str) -> tuple[str, str]:
    """'USER:PASS' -> (user, password); the password may itself contain colons."""
    user, sep, password = text.partition(":")
    if not sep or not user.strip() or not password:
        raise argparse.ArgumentTypeError(
            "--auth must be USER:PASS with a non-empty user and password, "
            "e.g. --auth anna:a-long-passphrase"
        )
    return user.strip(), password


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"--port must be a number from 1 to 65535 (got {text!r})")
    return port


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="app.py",
        description="DreamStudio: teach Stable Diffusion one subject from a few photos.",
    )
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help="base model: Hugging Face id, local diffusers folder or "
                             f".safetensors file (default: {DEFAULT_MODEL})")
    parser.add_argument("--vae", metavar="ID_OR_PATH",
                        help="a VAE to use instead of the model's own in training and "
                             "generation (diffusers folder, Hub id or file), e.g. an "
                             "fp16-safe SDXL VAE; default: the model's")
    parser.add_argument("--workspace", type=Path, default=Path("workspace"),
                        help="folder for photos, LoRAs and images (default: ./workspace)")
    parser.add_argument("--port", type=_port, default=7860, help="port (default: 7860)")
    parser.add_argument("--share", action="store_true",
                        help="also open a public gradio.live link (always password-protected)")
    parser.add_argument("--auth", type=parse_auth, metavar="USER:PASS",
                        help="require this login; with --share and no --auth a random "
                             "password is made and printed")
    parser.add_argument("--device",
                        help="force a device: cpu, cuda, cuda:N or mps (default: CUDA, else "
                             "Apple MPS, else CPU); one that is not there is refused at start")
    parser.add_argument("--preview-decoder", type=Path, metavar="FOLDER",
                        help="a TAESD-style preview decoder (diffusers AutoencoderTiny) on "
                             "disk for sharper previews of images forming (default: a quick "
                             "colour approximation)")
    for name, what in SCORERS.items():
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, metavar="ID_OR_FOLDER",
                            help=f"{what} model the Evaluate tab offers (and selects) besides "
                                 f"{default_of(EvalConfig, name)}; the app accepts no other")
    return parser


def parse_args(argv: list[str] | None = None) -> LaunchOptions:
    """Parse the command line; bad values exit with argparse's one-line usage error."""
    args = build_parser().parse_args(argv)
    auth, generated = args.auth, False
    if args.share and auth is None:
        auth, generated = (SHARE_USER, secrets.token_urlsafe(18)), True
    scorers = {name: getattr(args, name) for name in SCORERS if getattr(args, name)}
    return LaunchOptions(model=args.model, workspace=args.workspace, port=args.port,
                         share=args.share, auth=auth, generated_password=generated,
                         device=args.device, scorer_models=scorers,
                         preview_decoder=args.preview_decoder, vae=args.vae)


def check_model(model: str) -> None:
    """Fail fast on a local model path that cannot work; Hub ids are checked on first use."""
    kind = describe_source(model)
    if kind == "missing":
        raise InputError(
            f"Base model '{model}' not found: no such file or folder, and not a Hugging Face "
            "id like owner/name."
        )
    if kind == "folder" and not (Path(model).expanduser() / "model_index.json").is_file():
        raise InputError(
            f"Base model folder '{model}' has no model_index.json: point --model to a "
            "diffusers folder (with unet/, vae/, text_encoder/) or a .safetensors file."
        )


def _workspace_folder(path: Path) -> Path:
    """The workspace, made if missing; a path that cannot be one is refused here, so that
    the only OSError left for the server to raise is about its port."""
    workspace = path.expanduser().resolve()
    if workspace.exists() and not workspace.is_dir():
        raise InputError(f"--workspace {path} is a file, not a folder: give a folder "
                         "(it is created if missing).")
    try:
        workspace.mkdir(parents=True, exist_ok=True)
        if not os.access(workspace, os.R_OK | os.W_OK | os.X_OK):
            raise PermissionError(13, "permission denied", str(workspace))
    except OSError as exc:
        raise InputError(f"Cannot use --workspace {path} ({exc.strerror or exc}): give a "
                         "folder you can write to.") from exc
    return workspace


def launch(argv: list[str] | None = None, block: bool = True,
           quiet: bool = False) -> tuple[gr.Blocks, Studio]:
    """Build and start the app; returns (demo, studio). block=False returns at once
    (the server runs in a thread; call demo.close() to stop it)."""
    options = parse_args(argv)
    check_model(options.model)
    workspace = _workspace_folder(options.workspace)
    # Gradio reads these when it builds components and the server: uploads and cached
    # outputs go inside the workspace, the only folder the app serves files from.
    os.environ["GRADIO_TEMP_DIR"] = str(workspace / ".gradio-cache")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

    studio = Studio(workspace, model=options.model, device=options.device,
                    scorer_models=options.scorer_models,
                    preview_decoder=options.preview_decoder, vae=options.vae)
    # Before Gradio loads, so that a second app on this workspace is refused at once.
    studio.claim_workspace(options.port)
    from starlette.middleware import Middleware

    from .app_ui import CSS, THEME, build_ui
    from .login_limit import LoginLimit

    demo = build_ui(studio)
    demo.queue(default_concurrency_limit=1)
    if options.generated_password:
        user, password = options.auth
        print(f"Public link login: user '{user}', password '{password}' "
              "(made up for this session; pass --auth USER:PASS to choose one).", flush=True)
    demo.launch(
        server_name=options.host, server_port=options.port, share=options.share,
        auth=options.auth, auth_message="DreamStudio: log in with the user and password "
                                        "printed in the terminal that started the app.",
        allowed_paths=[str(workspace)], blocked_paths=studio.private_files(),
        prevent_thread_lock=not block, quiet=quiet,
        max_file_size="200mb", theme=THEME, css=CSS,
        app_kwargs={"middleware": [Middleware(LoginLimit)]} if options.auth else None,
    )
    return demo, studio


def main(argv: list[str] | None = None) -> int:
    try:
        launch(argv, block=True)
    except DreamStudioError as exc:
        print(f"app.py: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # e.g. the port is taken
        print(f"app.py: error: {exc} (try another --port)", file=sys.stderr)
        return 2
    return 0
