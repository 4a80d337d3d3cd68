"""The open_clip embedder on a real (tiny, randomly initialised) open_clip architecture.

No pretrained weights exist offline, so the test registers two small ViT configs with
open_clip.add_model_config, saves one model's random weights to a local file and loads that file
through OpenClipEmbedder / load_embedder: the code path that real weights (ViT-L-14-336) take.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from demo.corpus import corpus_dir
from pipeline.digest import sha256_file
from pipeline.errors import ConfigError
from stages.filter.embedder import Embedder, OpenClipEmbedder, clear_cache, load_embedder
from tests.support.known_embedder import SPEC, KnownEmbedder

open_clip = pytest.importorskip("open_clip")
torch = pytest.importorskip("torch")

PHOTOS = corpus_dir()
TINY = "tolpipe-test-tiny-vit"
WIDE = "tolpipe-test-tiny-vit-wide"
EMBED_DIM = 16


def tiny_config(width: int) -> dict:
    return {
        "embed_dim": EMBED_DIM,
        "vision_cfg": {"image_size": 64, "layers": 2, "width": width, "head_width": 16, "patch_size": 16},
        "text_cfg": {"context_length": 16, "vocab_size": 128, "width": 32, "heads": 2, "layers": 1},
    }


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> dict[str, Path]:
    """Configs registered with open_clip, and the TINY model's random weights as .pt and
    .safetensors files."""
    folder = tmp_path_factory.mktemp("open_clip")
    configs = folder / "configs"
    configs.mkdir()
    (configs / f"{TINY}.json").write_text(json.dumps(tiny_config(32)))
    (configs / f"{WIDE}.json").write_text(json.dumps(tiny_config(48)))
    open_clip.add_model_config(configs)
    torch.manual_seed(0)
    model = open_clip.create_model(TINY, pretrained=None)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    torch.save(state, folder / "tiny.pt")
    from safetensors.torch import save_file

    save_file(state, str(folder / "tiny.safetensors"))
    return {"pt": folder / "tiny.pt", "safetensors": folder / "tiny.safetensors", "folder": folder}


@pytest.fixture
def photos() -> list[Image.Image]:
    return [Image.open(PHOTOS / name).convert("RGB") for name in ("felis_catus.jpg", "panthera_onca.jpg")]


@pytest.fixture(autouse=True)
def fresh_cache():
    clear_cache()
    yield
    clear_cache()


@pytest.mark.parametrize("kind", ["pt", "safetensors"])
def test_embeds_real_photos(weights, photos, kind):
    embedder = OpenClipEmbedder(TINY, str(weights[kind]), device="cpu", batch_size=32)
    assert isinstance(embedder, Embedder)
    vectors = embedder.embed(photos)
    assert vectors.shape == (2, EMBED_DIM) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(vectors[0], vectors[1])  # two different photos, two different vectors
    np.testing.assert_array_equal(embedder.embed(photos), vectors)  # deterministic
    one_by_one = OpenClipEmbedder(TINY, str(weights[kind]), batch_size=1).embed(photos)
    np.testing.assert_allclose(one_by_one, vectors, atol=1e-5)  # batching changes nothing that matters
    assert embedder.embed([]).shape == (0, EMBED_DIM)


def test_identity(weights):
    embedder = OpenClipEmbedder(TINY, str(weights["pt"]))
    assert embedder.identity == {
        "name": f"open_clip {TINY}",
        "version": open_clip.__version__,
        "weights_sha256": sha256_file(weights["pt"]),
    }


def test_load_embedder_loads_once_per_process(weights, photos):
    embedder = load_embedder(f"open_clip:{TINY}", str(weights["pt"]), "cpu", 4)
    assert isinstance(embedder, OpenClipEmbedder)
    assert load_embedder(f"open_clip:{TINY}", str(weights["pt"]), "cpu", 4) is embedder
    direct = OpenClipEmbedder(TINY, str(weights["pt"]), batch_size=4)
    np.testing.assert_array_equal(embedder.embed(photos), direct.embed(photos))


def test_no_weights_means_not_run():
    assert load_embedder("open_clip:ViT-L-14-336", "", "cpu", 32) is None


def one_line_error(call) -> str:
    with pytest.raises(ConfigError) as err:
        call()
    message = str(err.value)
    assert "\n" not in message and len(message) < 500
    return message


def test_missing_weights_file(weights):
    missing = weights["folder"] / "absent.pt"
    message = one_line_error(lambda: load_embedder(f"open_clip:{TINY}", str(missing), "cpu", 4))
    assert message.startswith(str(missing)) and "not found" in message


def test_weights_of_another_architecture(weights):
    message = one_line_error(lambda: OpenClipEmbedder(WIDE, str(weights["pt"])))
    assert str(weights["pt"]) in message and f"open_clip {WIDE}" in message and "size mismatch" in message


def test_file_that_is_not_weights(weights):
    junk = weights["folder"] / "junk.pt"
    junk.write_bytes(b"\x00not a checkpoint" * 10)
    message = one_line_error(lambda: OpenClipEmbedder(TINY, str(junk)))
    assert message.startswith(str(junk)) and "does not load as weights" in message


def test_bad_names_and_specs(weights):
    assert "no model" in one_line_error(lambda: OpenClipEmbedder("no-such-model", str(weights["pt"])))
    hub = "hf-hub:someone/model"
    assert "built-in model name" in one_line_error(lambda: OpenClipEmbedder(hub, str(weights["pt"])))
    assert "expected" in one_line_error(lambda: load_embedder("clip:ViT-B-32", "w.pt", "cpu", 4))
    text = weights["folder"] / "weights.txt"
    text.write_text("x")
    assert ".safetensors" in one_line_error(lambda: OpenClipEmbedder(TINY, str(text)))
    assert "cannot import" in one_line_error(lambda: load_embedder("python:no_such_pkg.mod:X", "", "cpu", 4))
    nope = "python:tests.support.known_embedder:Nope"
    assert "has no" in one_line_error(lambda: load_embedder(nope, "", "cpu", 4))
    assert "identity" in one_line_error(lambda: load_embedder("python:types:SimpleNamespace", "", "cpu", 4))
    assert "failed" in one_line_error(lambda: load_embedder("python:pathlib:PurePath", "", "cpu", 4))


def test_python_spec_constructs_the_users_class():
    embedder = load_embedder(SPEC, "my-weights", "cpu", 4)
    assert isinstance(embedder, KnownEmbedder) and embedder.identity["weights_sha256"] == "my-weights"
    assert isinstance(embedder, Embedder)
    assert load_embedder(SPEC, "my-weights", "cpu", 4) is embedder
