"""Image and text embedders for the fidelity metrics: DINO ViT-S/16 and CLIP ViT-B/32.

Each accepts a Hub id or a local folder saved with `save_pretrained`; the tests' tiny scorers go
through the same loading and preprocessing code, so they exercise the real path.
"""

from __future__ import annotations

import gc
import threading
from pathlib import Path

import torch
from PIL import Image

from ..core.devices import pick_device
from ..core.models import _network_hint, describe_source
from ..errors import InputError
from .faces import DEFAULT_FACE_WEIGHTS, FaceScorer

DEFAULT_DINO_MODEL = "facebook/dino-vits16"
DEFAULT_CLIP_MODEL = "openai/clip-vit-base-patch32"
# Images embedded per forward pass: small enough for a CPU, large enough to batch.
EMBED_BATCH = 16

# DINO's own evaluation transform (its k-NN and linear evaluations): shorter side to 256,
# bicubic, centre crop 224, ImageNet mean/std. The Hub processor of facebook/dino-vits16
# instead squashes to 224x224 with mean/std 0.5, which stretches non-square photos and
# gives numbers that do not sit next to the paper's.
DINO_RESIZE = 256
DINO_CROP = 224
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def dino_preprocess(images: list[Image.Image], crop: int = DINO_CROP) -> torch.Tensor:
    """N x 3 x crop x crop pixels as DINO's evaluation prepares them.

    For a model whose input is not 224 px (the tests' tiny ViT) the resize keeps DINO's
    256/224 ratio, so the crop keeps the same share of the photo.
    """
    resize = round(crop * DINO_RESIZE / DINO_CROP)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    rows = []
    for im in _rgb(images):
        w, h = im.size
        # Truncating the long side and rounding the crop offset, as torchvision does, so
        # our pixels match the reference transform's.
        size = (resize, int(resize * h / w)) if w <= h else (int(resize * w / h), resize)
        im = im.resize(size, Image.Resampling.BICUBIC)
        left = round((size[0] - crop) / 2.0)
        top = round((size[1] - crop) / 2.0)
        im = im.crop((left, top, left + crop, top + crop))
        pixels = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8)
        pixels = pixels.view(crop, crop, 3).permute(2, 0, 1).float() / 255.0
        rows.append((pixels - mean) / std)
    return torch.stack(rows)


def dino_preprocessing_text(crop: int) -> str:
    resize = round(crop * DINO_RESIZE / DINO_CROP)
    return (f"DINO evaluation: shorter side to {resize} px (bicubic), centre crop {crop} px, "
            f"ImageNet mean {list(IMAGENET_MEAN)} std {list(IMAGENET_STD)}")


def _load(what: str, model_id_or_path: str, option: str, load):
    """Run `load(source)`, turning any failure into one InputError a person can act on."""
    path = Path(model_id_or_path).expanduser()
    kind = describe_source(model_id_or_path)
    if kind not in ("folder", "hub"):
        raise InputError(
            f"{what} model '{model_id_or_path}' not found: it is not an existing folder and "
            f"not a Hugging Face Hub id of the form owner/name. Choose another one with {option}."
        )
    local = kind == "folder"
    source = str(path) if local else model_id_or_path
    try:
        return load(source)
    except Exception as exc:  # transformers/hf raise many types; the user needs one message
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if local:
            reason = (f"the folder {path} is not a {what} model saved with save_pretrained "
                      f"({type(exc).__name__}: {detail})")
        elif _network_hint(exc) is not None:
            reason = ("it is not in the local Hugging Face cache and the Hub cannot be reached "
                      "(or HF_HUB_OFFLINE is set). Download it once with network access "
                      f"(hf download {model_id_or_path}), or pass a local folder")
        else:
            reason = f"{type(exc).__name__}: {detail}"
        raise InputError(
            f"Could not load the {what} model '{model_id_or_path}': {reason}. "
            f"Choose another one with {option}."
        ) from exc


def _features(output) -> torch.Tensor:
    # transformers 4 returns the projected features as a tensor, 5 as the pooler output.
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def _rgb(images: list[Image.Image]) -> list[Image.Image]:
    return [im if im.mode == "RGB" else im.convert("RGB") for im in images]


class DinoScorer:
    """DINO image embeddings: the CLS token of the ViT's last hidden state, as in the paper.

    The model folder's image processor is ignored on purpose: see DINO_RESIZE.
    """

    def __init__(self, model_id_or_path: str = DEFAULT_DINO_MODEL, device=None,
                 batch_size: int = EMBED_BATCH):
        from transformers import ViTModel

        self.name = model_id_or_path
        self.device = pick_device(device)
        self.batch_size = batch_size

        def load(source):
            # The CLS token is read before any pooler, so none is built (no random weights).
            return ViTModel.from_pretrained(source, add_pooling_layer=False)

        model = _load("DINO", model_id_or_path, "--dino-model", load)
        self.model = model.to(self.device, torch.float32).eval()
        self.crop = int(model.config.image_size)
        self.preprocessing = dino_preprocessing_text(self.crop)

    @torch.inference_mode()
    def embed_images(self, images: list[Image.Image]) -> torch.Tensor:
        """N x D float32 CPU tensor, one row per image."""
        rows = []
        for start in range(0, len(images), self.batch_size):
            pixels = dino_preprocess(images[start:start + self.batch_size], self.crop)
            hidden = self.model(pixel_values=pixels.to(self.device)).last_hidden_state
            rows.append(hidden[:, 0].float().cpu())
        return torch.cat(rows)


class ClipScorer:
    """CLIP image and text embeddings in the shared space (CLIP-I and CLIP-T)."""

    def __init__(self, model_id_or_path: str = DEFAULT_CLIP_MODEL, device=None,
                 batch_size: int = EMBED_BATCH):
        from transformers import CLIPModel, CLIPProcessor

        self.name = model_id_or_path
        self.device = pick_device(device)
        self.batch_size = batch_size

        def load(source):
            return CLIPProcessor.from_pretrained(source), CLIPModel.from_pretrained(source)

        self.processor, model = _load("CLIP", model_id_or_path, "--clip-model", load)
        self.model = model.to(self.device, torch.float32).eval()
        self.preprocessing = _clip_preprocessing_text(self.processor.image_processor)

    @torch.inference_mode()
    def embed_images(self, images: list[Image.Image]) -> torch.Tensor:
        rows = []
        for start in range(0, len(images), self.batch_size):
            batch = _rgb(images[start:start + self.batch_size])
            pixels = self.processor(images=batch, return_tensors="pt")["pixel_values"]
            rows.append(_features(self.model.get_image_features(
                pixel_values=pixels.to(self.device))).float().cpu())
        return torch.cat(rows)

    @torch.inference_mode()
    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        rows = []
        for start in range(0, len(texts), self.batch_size):
            # CLIP's text encoder sees at most 77 tokens; longer prompts are cut, as in SD.
            tokens = self.processor.tokenizer(
                list(texts[start:start + self.batch_size]), padding=True, truncation=True,
                return_tensors="pt",
            )
            tokens = {k: v.to(self.device) for k, v in tokens.items()}
            rows.append(_features(self.model.get_text_features(**tokens)).float().cpu())
        return torch.cat(rows)


def _clip_preprocessing_text(proc) -> str:
    # CLIP's own processor is what CLIP was trained with (shorter side, centre crop, its
    # mean/std), so it is used as shipped; the report says what that was.
    size, crop = getattr(proc, "size", {}) or {}, getattr(proc, "crop_size", {}) or {}
    short = size.get("shortest_edge", size)
    crop_text = (f", centre crop {crop.get('height')}x{crop.get('width')} px"
                 if getattr(proc, "do_center_crop", False) else ", no crop")
    try:
        resample = Image.Resampling(int(proc.resample)).name.lower()
    except (TypeError, ValueError):
        resample = str(proc.resample)
    return (f"CLIP processor: shorter side to {short} px ({resample}){crop_text}, "
            f"mean {list(proc.image_mean)} std {list(proc.image_std)}")


class ScorerCache:
    """DINO, CLIP and face scorers loaded once per model and device, kept until released.

    Loading a scorer takes seconds and hundreds of MB; the app scores LoRA after LoRA with
    the same models, so it holds one cache, and a sweep releases it when it is done.
    """

    def __init__(self):
        self._loaded: dict[tuple[str, str, str], DinoScorer | ClipScorer | FaceScorer] = {}
        self._lock = threading.Lock()

    def get(self, dino_model: str, clip_model: str, device=None) -> tuple[DinoScorer, ClipScorer]:
        device = pick_device(device)
        with self._lock:
            return (self._load(DinoScorer, "dino", dino_model, device),
                    self._load(ClipScorer, "clip", clip_model, device))

    def get_face(self, weights: str = DEFAULT_FACE_WEIGHTS, device=None) -> FaceScorer:
        device = pick_device(device)
        with self._lock:
            return self._load(FaceScorer, "face", weights, device)

    def release(self) -> int:
        """Drop every loaded scorer and give its memory back; returns how many there were.

        Scorers already handed out keep working for whoever holds them; the next get()
        loads afresh.
        """
        with self._lock:
            count = len(self._loaded)
            self._loaded.clear()
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return count

    close = release

    def _load(self, cls, kind: str, model: str, device):
        key = (kind, model, str(device))
        if key not in self._loaded:
            self._loaded[key] = cls(model, device=device)
        return self._loaded[key]

    def __len__(self) -> int:
        return len(self._loaded)
