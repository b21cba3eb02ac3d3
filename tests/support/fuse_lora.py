"""Fuse a LoRA file into the tiny model with diffusers' own load_lora_weights, on whichever
diffusers / transformers / peft stack imports: ours, or an older one put first on
PYTHONPATH (`python fuse_lora.py MODEL_DIR LORA_FILE OUT_FILE`).

It imports nothing of DreamStudio's, so it runs the same on both stacks. The fused weights
are keyed `unet.<path>` and `text_encoder.<path>` with the text encoder's path as
transformers 5 has it (no `text_model.`), so the two stacks' results compare key by key.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _text_encoder(folder: Path):
    from safetensors.torch import load_file
    from transformers import CLIPTextConfig, CLIPTextModel

    # transformers 4 and 5 save and expect different keys (`text_model.` or not), and 4
    # cannot read 5's tokenizer files (which load_lora_weights does not need): built by hand.
    model = CLIPTextModel(CLIPTextConfig.from_pretrained(folder))
    weights = {k.removeprefix("text_model."): v
               for k, v in load_file(folder / "model.safetensors").items()}
    if hasattr(model, "text_model"):
        weights = {f"text_model.{k}": v for k, v in weights.items()}
    missing, unexpected = model.load_state_dict(weights, strict=False)
    # position_ids is a buffer some versions keep out of the file.
    if [k for k in missing if "position_ids" not in k] or unexpected:
        raise RuntimeError(f"text encoder weights do not fit: {missing} {unexpected}")
    return model


def fused_weights(model_dir: Path, lora_file: Path) -> tuple[dict, dict]:
    """(the fused weights, what diffusers says it loaded: {component: [adapter names]})."""
    from diffusers import (
        AutoencoderKL,
        PNDMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )

    model_dir = Path(model_dir)
    pipe = StableDiffusionPipeline(
        vae=AutoencoderKL.from_pretrained(model_dir / "vae"),
        text_encoder=_text_encoder(model_dir / "text_encoder"), tokenizer=None,
        unet=UNet2DConditionModel.from_pretrained(model_dir / "unet"),
        scheduler=PNDMScheduler.from_pretrained(model_dir / "scheduler"),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    # Folder and name, as users call it: offline, diffusers 0.35 cannot take a file's path.
    lora_file = Path(lora_file)
    pipe.load_lora_weights(str(lora_file.parent), weight_name=lora_file.name)
    adapters = {k: list(v) for k, v in pipe.get_list_adapters().items()}
    pipe.fuse_lora()
    pipe.unload_lora_weights()  # keeps the fused weights, drops the LoRA layers
    fused = {f"unet.{k}": v for k, v in pipe.unet.state_dict().items()}
    fused |= {f"text_encoder.{k.removeprefix('text_model.')}": v
              for k, v in pipe.text_encoder.state_dict().items()}
    return {k: v.detach().contiguous() for k, v in fused.items()}, adapters


def main(model_dir: str, lora_file: str, out_file: str) -> None:
    import diffusers
    import peft
    import transformers
    from safetensors.torch import save_file

    fused, adapters = fused_weights(Path(model_dir), Path(lora_file))
    save_file(fused, out_file)
    print(json.dumps({"adapters": adapters, "versions": {
        "diffusers": diffusers.__version__, "transformers": transformers.__version__,
        "peft": peft.__version__}}))


if __name__ == "__main__":
    main(*sys.argv[1:4])
