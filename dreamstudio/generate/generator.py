"""Generating images with a base model plus an optional subject LoRA.

The pipeline and the loaded LoRA are cached: moving the UNet / text-encoder scale, the
guidance or the sampler and generating again only changes adapter weights or swaps the
scheduler object, it never reloads anything. The prompt embeddings are kept too while the
prompt, the negative prompt and the text-encoder scale stay: a UNet-scale, guidance, seed or
sampler change runs the text encoder not at all. The UNet LoRA is folded into the UNet's
weights at its scale (lora_fuse.py), so a step costs what a base-model step costs. Only a
new precision reloads the model.

SDXL models work the same way: their pipeline encodes with two text encoders and also
returns pooled embeddings, which are kept and passed along with the others, and the one
text-encoder scale applies to both encoders' LoRAs.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from ..config import GenerateConfig
from ..core.cpu_memory import reuse_freed_memory
from ..core.devices import inference_dtype, pick_device, precision_name, release_memory
from ..core.families import pipeline_family
from ..core.models import load_pipeline
from ..errors import InputError
from ..lora.adapters import ADAPTER_NAME
from ..lora.embeddings import (
    embedding_path,
    embedding_record,
    load_embedding,
    pivotal_prompt,
    unload_embedding,
)
from ..lora.files import WEIGHTS_NAME, is_lora_dir, read_lora_info
from ..lora.kohya import find_kohya_file, finish_export
from .lora_fit import describe_load_failure, family_mismatch, quiet_diffusers
from .lora_fuse import FoldedLora
from .png_metadata import save_png_with_parameters
from .previews import PreviewFn, is_preview_step, preview_for
from .samplers import DEFAULT_SAMPLER, a1111_name, make_scheduler

CHANNELS_LAST_DEVICES = ("cpu", "cuda")
# What `encode_prompt` returns, in its order, as the pipeline call's argument names: SD 1.x
# and 2.x return the first two, SDXL all four (its second encoder's pooled outputs too).
PROMPT_ARGUMENTS = ("prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds",
                    "negative_pooled_prompt_embeds")
# The pipeline components a LoRA's text-encoder scale applies to (SDXL has both).
TEXT_ENCODERS = ("text_encoder", "text_encoder_2")


@dataclass
class GeneratedImage:
    image: Image.Image
    seed: int
    path: Path | None  # None when not saved (no output folder, or the run was stopped)


def lora_file_name(lora_dir: Path) -> str:
    """The name A1111 knows the LoRA by: the stem of its kohya file, else the folder name."""
    kohya = find_kohya_file(lora_dir)
    return kohya.stem if kohya else Path(lora_dir).name


class Generator:
    """Owns one cached pipeline for one base model; thread-safe."""

    def __init__(self, model: str, device: str | None = None, dtype: torch.dtype | None = None,
                 model_config_dir: str | None = None, vae: str | None = None):
        self.model = model
        self.vae = vae  # a VAE that replaces the model's own (e.g. fp16-safe for SDXL)
        self.device = pick_device(device)
        self._auto_dtype = dtype or inference_dtype(self.device)  # what 'auto' resolves to
        self.dtype = self._auto_dtype
        self.model_config_dir = model_config_dir
        self._pipe = None
        self._embeddings: tuple | None = None  # (key, what encode_prompt returned)
        self._folded: FoldedLora | None = None  # the UNet LoRA, folded into the weights
        self._original_scheduler = None  # the model's own, to return to "Default"
        self._sampler = DEFAULT_SAMPLER
        self._lora_dir: Path | None = None
        self._weights: dict | None = None  # adapter weights last set, to skip no-op updates
        self._pivotal: dict | None = None  # the LoRA's trained token embedding, if it has one
        self._lock = threading.Lock()
        self.model_loads = 0  # counted so tests and benchmarks can prove nothing reloads
        self.lora_loads = 0
        self.prompt_encodes = 0

    @property
    def pipeline(self):
        if self._pipe is None:
            self._pipe = load_pipeline(self.model, self.device, self.dtype, self.model_config_dir,
                                       self.vae)
            if self.device.type in CHANNELS_LAST_DEVICES:
                # oneDNN's and cuDNN's convolutions run faster on NHWC: -10% UNet time,
                # -11% VAE decode in bf16 on a 2-core CPU (bench/generation.py).
                self._pipe.unet.to(memory_format=torch.channels_last)
                self._pipe.vae.to(memory_format=torch.channels_last)
            self._original_scheduler = self._pipe.scheduler
            self._sampler = DEFAULT_SAMPLER
            self.model_loads += 1
        return self._pipe

    def dtype_for(self, precision: str) -> torch.dtype:
        """The dtype a config's precision draws in on this generator's device."""
        return self._auto_dtype if precision == "auto" else inference_dtype(self.device, precision)

    def _activate_dtype(self, dtype: torch.dtype) -> None:
        if dtype != self.dtype:
            # Casting back up would keep the rounding of the lower precision: reload.
            self._drop()
            self.dtype = dtype

    @property
    def sampler_name(self) -> str:
        """A1111 name of the sampler the next image uses (loads the model if needed)."""
        return a1111_name(self.pipeline.scheduler)

    def sampler_label(self, choice: str) -> str:
        """A1111 name of a sampler choice; "Default" is named after the model's own."""
        if choice != DEFAULT_SAMPLER:
            return choice  # the choices are A1111's names already
        self.pipeline  # noqa: B018 - loads the model (once) to learn its scheduler
        return a1111_name(self._original_scheduler)

    def _activate_sampler(self, name: str) -> None:
        pipe = self.pipeline
        if name != self._sampler:
            # Always from the original config: switching A -> B -> Default ends where it began.
            pipe.scheduler = make_scheduler(name, self._original_scheduler)
            self._sampler = name

    def _activate_lora(self, lora_dir: Path | None, unet_scale: float, te_scale: float) -> None:
        pipe = self.pipeline
        if lora_dir is not None:
            lora_dir = Path(lora_dir).resolve()
            if not is_lora_dir(lora_dir):
                raise InputError(
                    f"No LoRA found in {lora_dir}: it has no {WEIGHTS_NAME}. "
                    "Train one first, or pick another folder."
                )
        if lora_dir != self._lora_dir:
            self._embeddings = None
            if self._lora_dir is not None:
                if self._folded is not None:
                    self._folded.restore()
                    self._folded = None
                pipe.unload_lora_weights()
                self._unload_embedding(pipe)
                self._lora_dir = None
                self._weights = None
            if lora_dir is not None:
                # Caught before loading: diffusers may load another family's LoRA partly,
                # without an error, onto the layers whose names happen to match.
                mismatch = family_mismatch(lora_dir / WEIGHTS_NAME, self.model,
                                           pipeline_family(pipe))
                if mismatch:
                    raise InputError(mismatch)
                # A run killed while exporting looks finished: give it its kohya file now,
                # before the PNGs name the LoRA after it.
                finish_export(lora_dir)
                try:
                    with quiet_diffusers():
                        pipe.load_lora_weights(str(lora_dir), adapter_name=ADAPTER_NAME)
                except Exception as exc:
                    pipe.unload_lora_weights()
                    raise InputError(describe_load_failure(
                        pipe, lora_dir / WEIGHTS_NAME, self.model, exc)) from exc
                self._load_embedding(pipe, lora_dir)
                self.lora_loads += 1
                if "unet" in pipe.get_list_adapters():
                    self._folded = FoldedLora(pipe.unet, ADAPTER_NAME)
            self._lora_dir = lora_dir
        if self._lora_dir is not None:
            loaded = pipe.get_list_adapters()
            weights = {"unet": unet_scale} | dict.fromkeys(TEXT_ENCODERS, te_scale)
            weights = {k: v for k, v in weights.items() if ADAPTER_NAME in loaded.get(k, [])}
            # set_adapters walks every LoRA layer; a grid often repeats the same scales.
            if weights != self._weights:
                pipe.set_adapters(ADAPTER_NAME, adapter_weights=weights)
                if self._folded is not None:
                    self._folded.fold(unet_scale)  # after set_adapters, which re-enables peft
                self._weights = weights

    def _load_embedding(self, pipe, lora_dir: Path) -> None:
        """The pivotal-tuned tokens of the LoRA in `lora_dir`, if its record names them."""
        record = embedding_record(read_lora_info(lora_dir))
        if record is None:
            return
        path = embedding_path(lora_dir, record)
        try:
            # Every text encoder the file has rows for (SDXL: both) gets the tokens.
            load_embedding(pipe, lora_dir, record)
        except Exception as exc:
            # SDXL: text encoder 1 may have taken the tokens before text encoder 2 failed.
            with contextlib.suppress(Exception):  # the error below is the one to show
                unload_embedding(pipe, record)
            pipe.unload_lora_weights()
            raise InputError(
                f"The LoRA in {lora_dir} was trained with its own tokens, but their embedding "
                f"{path} cannot be loaded ({exc}). Train the LoRA again, or restore the file."
            ) from exc
        self._pivotal = record

    def _unload_embedding(self, pipe) -> None:
        # Back to the base tokenizer(s) and embedding matrices (diffusers rebuilds them).
        if self._pivotal is not None:
            unload_embedding(pipe, self._pivotal)
            self._pivotal = None

    def pipeline_prompt(self, prompt: str) -> str:
        """`prompt` as the pipeline takes it: for a pivotal-tuned LoRA the identifier
        becomes its token, as in training."""
        record = self._pivotal
        return pivotal_prompt(prompt, record["identifier"], record["token"]) if record \
            else prompt

    def _activate(self, config: GenerateConfig) -> None:
        self._activate_dtype(self.dtype_for(config.precision))
        self._activate_lora(config.lora_dir, config.unet_scale, config.text_encoder_scale)
        self._activate_sampler(config.sampler)

    def _prompt_embeddings(self, config: GenerateConfig) -> tuple[torch.Tensor, ...]:
        """(prompt, negative prompt) embeddings of one image (SDXL: then their pooled ones,
        in PROMPT_ARGUMENTS' order), kept until the prompt, the negative prompt or the
        text-encoder scale changes (a new LoRA or model drops them)."""
        weights = self._weights or {}
        te_scale = next((weights[k] for k in TEXT_ENCODERS if k in weights), None)
        key = (config.prompt, config.negative_prompt, te_scale)
        if self._embeddings is None or self._embeddings[0] != key:
            with torch.no_grad():
                # The pipeline's own encoder, so the pixels equal a plain pipeline call's.
                outputs = self.pipeline.encode_prompt(
                    prompt=self.pipeline_prompt(config.prompt), device=self.device,
                    num_images_per_prompt=1, do_classifier_free_guidance=True,
                    negative_prompt=config.negative_prompt or None)
            self._embeddings = (key, tuple(outputs))
            self.prompt_encodes += 1
        return self._embeddings[1]

    def load_for(self, config: GenerateConfig) -> None:
        """Load what `config` needs and set its LoRA scales and sampler, without drawing:
        all the work a generation does besides the pipeline call (the benchmark times it)."""
        with self._lock:
            self._activate(config)

    def generate(
        self,
        config: GenerateConfig,
        output_dir: Path | None = None,
        progress: Callable[[int, int], None] | None = None,
        cancel: threading.Event | None = None,
        preview: PreviewFn | None = None,
    ) -> list[GeneratedImage]:
        """Generate `config.num_images` images; image i uses seed `config.seed + i`.

        A set `cancel` stops within one sampler step; the half-denoised images are returned
        (path None) but never saved. `preview(pictures, step, steps)` gets a cheap picture
        of each image every `config.preview_every` steps.
        """
        with self._lock:
            self._activate(config)
            pipe = self.pipeline
            total = config.steps
            every = config.preview_every if preview is not None else 0
            picture = preview_for(pipe, config.preview_decoder) if every else None

            def on_step_end(pipeline, step, timestep, kwargs):
                # PNDM (SD 1.x's default) runs one step more than asked: clamp the count.
                done = min(step + 1, total)
                if progress is not None:
                    progress(done, total)
                if cancel is not None and cancel.is_set():
                    pipeline._interrupt = True
                elif picture is not None and is_preview_step(step + 1, every, total):
                    preview(picture(kwargs["latents"]), done, total)
                return kwargs

            seeds = [config.seed + i for i in range(config.num_images)]
            generators = [torch.Generator(device="cpu").manual_seed(s) for s in seeds]
            embeddings = dict(zip(PROMPT_ARGUMENTS, self._prompt_embeddings(config),
                                  strict=False))
            with reuse_freed_memory(self.device):
                images = pipe(
                    **embeddings,
                    num_images_per_prompt=config.num_images,
                    num_inference_steps=config.steps,
                    guidance_scale=config.guidance,
                    height=config.height,
                    width=config.width,
                    generator=generators,
                    callback_on_step_end=on_step_end,
                ).images
            sampler_name = a1111_name(pipe.scheduler)
            family = pipeline_family(pipe)
        stopped = cancel is not None and cancel.is_set()
        results = []
        for image, seed in zip(images, seeds, strict=True):
            path = None
            if output_dir is not None and not stopped:
                params = self.image_parameters(config, seed, image.size, sampler_name,
                                               family)
                path = save_png_with_parameters(image, Path(output_dir), params)
            results.append(GeneratedImage(image, seed, path))
        return results

    def image_parameters(self, config: GenerateConfig, seed: int, size: tuple[int, int],
                         sampler_name: str, family: str | None = None) -> dict:
        """What a PNG of this generator stores: the config plus what it resolved to
        (`family`: the base model's, e.g. "sdxl"; None: asked of the loaded pipeline)."""
        family = family or pipeline_family(self.pipeline)
        params = {**config.to_dict(), "seed": seed, "num_images": 1, "model": self.model,
                  "model_family": family,
                  "width": size[0], "height": size[1], "sampler_name": sampler_name,
                  "precision": precision_name(self.dtype_for(config.precision))}
        if config.lora_dir is not None:
            params["lora_name"] = lora_file_name(config.lora_dir)
        return params

    def unload(self) -> None:
        """Drop the pipeline (e.g. before training on a small GPU)."""
        with self._lock:
            self._drop()

    def _drop(self) -> None:
        self._pipe = None
        self._original_scheduler = None
        self._sampler = DEFAULT_SAMPLER
        self._lora_dir = None
        self._weights = None
        self._pivotal = None
        self._embeddings = None
        self._folded = None
        release_memory()


def timestamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S")
