"""DINO's evaluation preprocessing, face identity, the leak check and releasing scorers."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from dreamstudio.errors import InputError
from dreamstudio.evaluate.faces import FACE_SIZE, FaceScorer, face_crop
from dreamstudio.evaluate.metrics import (
    DEFAULT_LEAK_MARGIN,
    leak_flagged,
    leak_score,
    subject_fidelity,
)
from dreamstudio.evaluate.report import EvalReport
from dreamstudio.evaluate.scorers import (
    ClipScorer,
    DinoScorer,
    ScorerCache,
    dino_preprocess,
)
from tests.support.tiny_scorers import build_tiny_face_weights, build_tiny_scorers

GREEN = (0, 255, 0)
# Written out rather than imported, so a change to the scorer's statistics fails here.
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _banded(width: int, height: int) -> Image.Image:
    """Green in the middle half, red on the left quarter, blue on the right quarter."""
    image = Image.new("RGB", (width, height), GREEN)
    image.paste((255, 0, 0), (0, 0, width // 4, height))
    image.paste((0, 0, 255), (width - width // 4, 0, width, height))
    return image


def _normalised(rgb) -> torch.Tensor:
    return torch.tensor([(c / 255 - m) / s for c, m, s in zip(rgb, IMAGENET_MEAN, IMAGENET_STD,
                                                               strict=True)])


# --- DINO preprocessing -----------------------------------------------------------------------

@pytest.mark.parametrize("size", [(400, 200), (200, 400)])
def test_dino_preprocessing_centre_crops_and_uses_imagenet_statistics(size):
    image = _banded(*size)
    if size[1] > size[0]:
        image = image.rotate(90, expand=True).resize(size)  # tall: bands top and bottom
    pixels = dino_preprocess([image])
    assert pixels.shape == (1, 3, 224, 224)
    # A wide photo keeps its middle 224/512: only green survives; a squash to 224x224
    # would keep the red and blue bands at the edges.
    expected = _normalised(GREEN).view(3, 1, 1).expand(3, 224, 224)
    assert torch.allclose(pixels[0], expected, atol=0.05)


def test_dino_preprocessing_resizes_the_shorter_side_to_256_before_cropping():
    # A 448 px square with a 32 px border: at 256 px the border is 18 px, and a 224 crop of
    # 256 cuts 16 px per side, leaving 2 px of it. Cropping 224 from 448 would leave none.
    image = Image.new("RGB", (448, 448), (255, 0, 0))
    image.paste(GREEN, (32, 32, 416, 416))
    pixels = dino_preprocess([image])[0]
    assert torch.allclose(pixels[:, 112, 112], _normalised(GREEN), atol=0.02)
    assert pixels[0, 112, 0] > _normalised(GREEN)[0] + 1.0  # red at the very edge


def test_dino_preprocessing_matches_the_reference_transform(dog_photos):
    # DINO's evaluation code builds this transform with torchvision; where torchvision is
    # installed, our PIL + torch version must give the same pixels.
    transforms = pytest.importorskip("torchvision.transforms")
    reference = transforms.Compose([
        transforms.Resize(256, interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.CenterCrop(224), transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    images = [Image.open(p).convert("RGB") for p in dog_photos[:2]] + [_banded(301, 170)]
    for image in images:
        assert torch.allclose(dino_preprocess([image])[0], reference(image), atol=1e-5)


@pytest.fixture(scope="module")
def scorer_dirs(tmp_path_factory):
    return build_tiny_scorers(tmp_path_factory.mktemp("scorers"))


def test_dino_scorer_uses_dino_preprocessing_not_the_folder_processor(scorer_dirs):
    dino = DinoScorer(str(scorer_dirs[0]), device="cpu")
    wide = _banded(400, 200)
    centre = wide.crop((100, 0, 300, 200))
    # The centre crop is all the scorer sees of a wide photo: same embedding.
    embeddings = dino.embed_images([wide, centre])
    assert subject_fidelity(embeddings[:1], embeddings[1:]) == pytest.approx(1.0, abs=1e-5)
    # And the pixels it embeds are dino_preprocess's at the model's input size.
    with torch.inference_mode():
        direct = dino.model(pixel_values=dino_preprocess([wide], 32)).last_hidden_state[:, 0]
    assert torch.allclose(embeddings[:1], direct, atol=1e-5)
    assert "centre crop 32 px" in dino.preprocessing and "ImageNet" in dino.preprocessing


def test_report_says_which_preprocessing_each_scorer_used(scorer_dirs):
    dino = DinoScorer(str(scorer_dirs[0]), device="cpu")
    clip = ClipScorer(str(scorer_dirs[1]), device="cpu")
    assert "bicubic" in clip.preprocessing and "centre crop 32x32" in clip.preprocessing
    report = EvalReport(config={}, model="m",
                        preprocessing={"dino": dino.preprocessing, "clip": clip.preprocessing})
    assert report.to_dict()["preprocessing"] == {"dino": dino.preprocessing,
                                                 "clip": clip.preprocessing}


# --- face identity ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def astronaut() -> Image.Image:
    skimage_data = pytest.importorskip("skimage.data")
    return Image.fromarray(skimage_data.astronaut())


@pytest.fixture(scope="module")
def face_scorer(tmp_path_factory) -> FaceScorer:
    weights = build_tiny_face_weights(tmp_path_factory.mktemp("faces") / "random.pt")
    return FaceScorer(str(weights), device="cpu")


def test_face_crop_is_the_detected_face_at_160_px(face_scorer, astronaut):
    crop = face_crop(astronaut, face_scorer.detector)
    assert crop is not None and crop.size == (FACE_SIZE, FACE_SIZE)
    assert face_crop(Image.new("RGB", (200, 200), (90, 140, 200)), face_scorer.detector) is None


def test_face_identity_known_answers(face_scorer, astronaut):
    plain = Image.new("RGB", (256, 256), (90, 140, 200))
    same = face_scorer.identity([astronaut, plain], [astronaut.copy()])
    assert same.score == pytest.approx(1.0, abs=1e-5)
    # The plain image is a miss, reported by index, and does not enter the score.
    assert same.misses == [1] and same.found == 1 and same.real_misses == []
    assert same.to_dict(names=["a.png", "plain.png"])["missed"] == ["plain.png"]

    # Another face (the astronaut mirrored and recoloured) scores lower with the same network.
    other = astronaut.transpose(Image.Transpose.FLIP_LEFT_RIGHT).convert("L").convert("RGB")
    different = face_scorer.identity([other], [astronaut])
    assert different.score is not None and different.score < same.score - 1e-3

    nothing = face_scorer.identity([plain], [astronaut])
    assert nothing.score is None and nothing.misses == [0] and nothing.found == 0


def test_face_weights_errors_are_one_clear_line(tmp_path, monkeypatch):
    with pytest.raises(InputError, match="not found: not a file") as err:
        FaceScorer(str(tmp_path / "missing.pt"), device="cpu")
    assert "\n" not in str(err.value)
    bad = tmp_path / "bad.pt"
    torch.save({"something": torch.zeros(1)}, bad)
    with pytest.raises(InputError, match="not an InceptionResnetV1 state dict"):
        FaceScorer(str(bad), device="cpu")

    # The named VGGFace2 weights download on first use; without network that must say so.
    import facenet_pytorch.models.inception_resnet_v1 as irv1

    def offline(*args, **kwargs):
        raise OSError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(irv1, "download_url_to_file", offline)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    with pytest.raises(InputError, match="download.*failed.*local weights file") as err:
        FaceScorer("vggface2", device="cpu")
    assert "\n" not in str(err.value)


# --- leak -------------------------------------------------------------------------------------

def test_leak_score_is_higher_for_copies_of_the_subject(scorer_dirs, dog_photos):
    dino = DinoScorer(str(scorer_dirs[0]), device="cpu")
    subject = [Image.open(p).convert("RGB") for p in dog_photos[:3]]
    unrelated = [Image.new("RGB", (96, 64), c) for c in ((20, 30, 200), (250, 250, 10))]
    subject_emb = dino.embed_images(subject)
    copies = leak_score(dino.embed_images([im.copy() for im in subject]), subject_emb)
    others = leak_score(dino.embed_images(unrelated), subject_emb)
    assert copies > others


def test_leak_flag_compares_with_the_base_model_by_a_margin():
    assert DEFAULT_LEAK_MARGIN > 0
    base = 0.40
    assert not leak_flagged(base, base)
    assert not leak_flagged(base + DEFAULT_LEAK_MARGIN / 2, base)
    assert leak_flagged(base + DEFAULT_LEAK_MARGIN * 2, base)
    assert not leak_flagged(0.55, 0.40, margin=0.2) and leak_flagged(0.55, 0.40, margin=0.1)
    with pytest.raises(ValueError):
        leak_flagged(0.5, 0.4, margin=-0.1)


def test_leak_score_is_the_mean_dino_similarity():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert leak_score(a, a[:1]) == pytest.approx(0.5)


# --- releasing --------------------------------------------------------------------------------

def test_scorer_cache_releases_its_models(scorer_dirs, tmp_path):
    dino_dir, clip_dir = (str(d) for d in scorer_dirs)
    weights = str(build_tiny_face_weights(tmp_path / "w.pt"))
    cache = ScorerCache()
    dino, _ = cache.get(dino_dir, clip_dir, "cpu")
    face = cache.get_face(weights, "cpu")
    assert cache.get_face(weights, "cpu") is face and len(cache) == 3
    assert cache.release() == 3 and len(cache) == 0
    again, _ = cache.get(dino_dir, clip_dir, "cpu")
    assert again is not dino  # loaded afresh after a release
    cache.close()
    assert len(cache) == 0
