"""The camera-trap filter: MegaDetector v6 loaded with ultralytics, scores and the keep/drop rule.

The decision logic is checked on recorded detections (no model). The model path runs the real
MDV6-yolov9-c architecture with untrained weights built at test time (no weights can be
downloaded): its boxes are arbitrary, so those tests check types, invariants, class mapping (with
a checkpoint biased towards one class) and batching, not what is in the photos.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from demo.corpus import corpus_dir
from stages.filter.megadetector import (
    MDScores,
    MDSettings,
    MegaDetector,
    MegaDetectorError,
    detector,
    empty_frame,
    size_batches,
    summarize,
)
from tests.support.megadetector_weights import SMALL_ARCHITECTURE, build_weights, cached_weights

REPO = Path(__file__).resolve().parent.parent
PHOTOS = corpus_dir()
GIRAFFE = PHOTOS / "giraffa_camelopardalis.jpg"  # 512x342
# Below the untrained model's confidences (about 0.004), so its boxes are reported and counted.
LOW = {"detection_floor": 0.001, "count_confidence": 0.001, "animal_threshold": 0.001}


# --- Decisions on recorded detections (no model) -----------------------------------------------


@pytest.mark.parametrize(
    ("detections", "empty"),
    [
        ([(0, 0.19)], True),
        ([(0, 0.2)], False),
        ([(1, 0.97), (1, 0.6)], True),
        ([(2, 0.9), (0, 0.5)], False),
        ([], True),
    ],
    ids=["animal-0.19", "animal-0.2", "persons-only", "vehicle-and-animal-0.5", "nothing"],
)
def test_recorded_detections_decide_empty_frames(detections, empty):
    settings = MDSettings()
    assert empty_frame(summarize(detections, settings), settings) is empty


def test_counts_use_count_confidence_and_floor():
    detections = [(0, 0.05), (0, 0.15), (0, 0.25), (1, 0.3), (1, 0.1), (2, 0.95), (2, 0.19)]
    assert summarize(detections, MDSettings()) == MDScores(
        md_animal_count=1, md_animal_conf_max=0.25, md_person_count=1, md_vehicle_count=1
    )
    # A lower count threshold counts more boxes; 0.05 is below the floor, never reported.
    lower = MDSettings(count_confidence=0.1)
    assert summarize(detections, lower) == MDScores(
        md_animal_count=2, md_animal_conf_max=0.25, md_person_count=2, md_vehicle_count=2
    )
    assert summarize([(0, 0.05)], MDSettings()).md_animal_conf_max is None


def test_rethreshold_from_stored_scores_alone():
    stored = MDScores(md_animal_count=1, md_animal_conf_max=0.25, md_person_count=0, md_vehicle_count=0)
    assert not empty_frame(stored, MDSettings(animal_threshold=0.2))
    assert empty_frame(stored, MDSettings(animal_threshold=0.3))
    assert not empty_frame(stored, MDSettings(animal_threshold=0.25))


def test_unknown_class_id_is_refused():
    with pytest.raises(ValueError, match="class id 3"):
        summarize([(3, 0.9)], MDSettings())


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"animal_threshold": 0.05}, "animal_threshold .* below detection_floor"),
        ({"count_confidence": 0.05}, "count_confidence .* below detection_floor"),
        ({"detection_floor": 1.5}, "detection_floor must be in 0..1"),
        ({"image_size": 1000}, "multiple of 32"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_settings_refuse_inconsistent_values(options, message):
    with pytest.raises(ValueError, match=message):
        MDSettings(**options)


def test_size_batches_keep_one_size_per_batch_in_order():
    sizes = [(512, 342), (512, 288), (512, 342), (512, 342), (320, 240), (512, 288)]
    assert size_batches(sizes, 2) == [[0, 2], [3], [1, 5], [4]]
    assert size_batches([], 8) == []


# --- The model path ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def md6_weights(tmp_path_factory) -> Path:
    pytest.importorskip("ultralytics", reason="needs the megadetector extra")
    return cached_weights(tmp_path_factory)


@pytest.fixture(scope="session")
def photos():
    from PIL import Image

    names = ["giraffa_camelopardalis.jpg", "giraffa_camelopardalis_2.jpg", "alces_alces.jpg"]
    images = []
    for name in names:
        with Image.open(PHOTOS / name) as image:
            images.append(image.convert("RGB"))
    return images


def _check_invariants(scores: MDScores, settings: MDSettings) -> None:
    assert isinstance(scores.md_animal_count, int) and scores.md_animal_count >= 0
    assert isinstance(scores.md_person_count, int) and scores.md_person_count >= 0
    assert isinstance(scores.md_vehicle_count, int) and scores.md_vehicle_count >= 0
    best = scores.md_animal_conf_max
    if best is None:
        assert scores.md_animal_count == 0
    else:
        assert isinstance(best, float) and settings.detection_floor <= best <= 1.0
        # Counted boxes exist exactly when the best one reaches the count threshold.
        assert (scores.md_animal_count > 0) == (best >= settings.count_confidence)
    assert empty_frame(scores, settings) == (best is None or best < settings.animal_threshold)


def test_untrained_md6_scores_a_real_photo(md6_weights, photos):
    settings = MDSettings(weights_path=str(md6_weights), image_size=640, **LOW)
    [scores] = MegaDetector(settings).score(photos[:1])
    _check_invariants(scores, settings)
    assert scores.md_animal_count > 0  # the floor is below every untrained box: the path is exercised
    # At the default floor the untrained model reports nothing: an empty frame.
    default = MDSettings(weights_path=str(md6_weights), image_size=640)
    [nothing] = detector(default).score(photos[:1])
    assert nothing == MDScores(0, None, 0, 0) and empty_frame(nothing, default)


def test_identity_names_the_weights_file(md6_weights):
    found = detector(MDSettings(weights_path=str(md6_weights))).identity
    import ultralytics

    assert found == {
        "name": "MegaDetector",
        "version": "MDV6-yolov9-c",
        "weights_sha256": hashlib.sha256(md6_weights.read_bytes()).hexdigest(),
        "loader": f"ultralytics {ultralytics.__version__}",
    }


def test_scores_do_not_depend_on_the_other_images_of_a_batch(md6_weights, photos):
    # Two sizes among three photos; unpadded, one size per batch, each equals the photo alone.
    settings = MDSettings(weights_path=str(md6_weights), image_size=640, batch_size=8, **LOW)
    model = detector(settings)
    together = model.score(photos)
    alone = [model.score([image])[0] for image in photos]
    assert together == alone
    assert together[0] != together[1]  # the sizes do give different scores: the check can fail


def test_detector_is_loaded_once_per_process(md6_weights):
    first = detector(MDSettings(weights_path=str(md6_weights)))
    assert detector(MDSettings(weights_path=str(md6_weights))) is first
    # Other thresholds share the loaded model.
    other = detector(MDSettings(weights_path=str(md6_weights), animal_threshold=0.5))
    assert other is not first and other._loaded is first._loaded


def test_animal_checkpoint_keeps_the_frame_at_default_settings(tmp_path_factory, photos):
    """Default settings, 1280 px: boxes of class 0 are counted as animals and keep the frame."""
    pytest.importorskip("ultralytics", reason="needs the megadetector extra")
    settings = MDSettings(weights_path=str(cached_weights(tmp_path_factory, favour=0)))
    assert settings.image_size == 1280
    [scores] = detector(settings).score(photos[:1])
    _check_invariants(scores, settings)
    assert scores.md_animal_count > 0 and scores.md_animal_conf_max > 0.9
    assert (scores.md_person_count, scores.md_vehicle_count) == (0, 0)
    assert not empty_frame(scores, settings)


def test_person_checkpoint_gives_an_empty_frame(tmp_path_factory, photos):
    pytest.importorskip("ultralytics", reason="needs the megadetector extra")
    settings = MDSettings(weights_path=str(cached_weights(tmp_path_factory, favour=1)), image_size=640)
    [scores] = detector(settings).score(photos[:1])
    _check_invariants(scores, settings)
    assert scores.md_person_count > 0 and scores.md_animal_conf_max is None
    assert empty_frame(scores, settings)


@pytest.mark.parametrize("architecture", ["yolov9t.yaml", "yolov10n.yaml"])
def test_yolov9_and_yolov10_architectures_load(tmp_path_factory, photos, architecture):
    """MDv6 comes as YOLOv9 and YOLOv10 (end-to-end head) files: small stand-ins of both load."""
    pytest.importorskip("ultralytics", reason="needs the megadetector extra")
    settings = MDSettings(
        weights_path=str(cached_weights(tmp_path_factory, architecture=architecture)), image_size=320, **LOW
    )  # fmt: skip
    [scores] = detector(settings).score(photos[:1])
    _check_invariants(scores, settings)


# --- Errors -----------------------------------------------------------------------------------


def _one_line(error: pytest.ExceptionInfo) -> str:
    text = str(error.value)
    assert "\n" not in text
    return text


def test_missing_file_is_named(tmp_path):
    missing = tmp_path / "md_v6.pt"
    with pytest.raises(FileNotFoundError) as error:
        MegaDetector(MDSettings(weights_path=str(missing)))
    assert str(missing) in _one_line(error)


def test_unset_weights_path_is_an_error():
    with pytest.raises(MegaDetectorError, match="weights_path is not set"):
        MegaDetector(MDSettings())


def test_wrong_class_names_are_refused(tmp_path):
    pytest.importorskip("ultralytics", reason="needs the megadetector extra")
    names = {0: "cat", 1: "dog"}
    path = build_weights(tmp_path / "two_classes.pt", names=names, architecture=SMALL_ARCHITECTURE)
    with pytest.raises(MegaDetectorError) as error:
        MegaDetector(MDSettings(weights_path=str(path)))
    text = _one_line(error)
    assert str(path) in text and "'cat'" in text and "animal" in text


def test_file_that_is_not_a_checkpoint_is_refused(tmp_path):
    pytest.importorskip("ultralytics", reason="needs the megadetector extra")
    path = tmp_path / "photo.pt"
    path.write_bytes(GIRAFFE.read_bytes())
    with pytest.raises(MegaDetectorError) as error:
        MegaDetector(MDSettings(weights_path=str(path)))
    assert str(path) in _one_line(error) and "not an ultralytics detection checkpoint" in str(error.value)
    other = tmp_path / "weights.onnx"
    other.write_bytes(b"\0")
    with pytest.raises(MegaDetectorError, match=r"weights\.onnx is not a MegaDetector v6 file"):
        MegaDetector(MDSettings(weights_path=str(other)))


def test_rtdetr_file_is_refused(tmp_path):
    """MDV6-rtdetr-c needs RT-DETR's predictor: refused by name rather than scored wrongly."""
    pytest.importorskip("ultralytics", reason="needs the megadetector extra")
    import torch
    from ultralytics.nn.tasks import RTDETRDetectionModel

    model = RTDETRDetectionModel("rtdetr-l.yaml", nc=3, verbose=False)
    model.names = {0: "animal", 1: "person", 2: "vehicle"}
    path = tmp_path / "MDV6-rtdetr-c.pt"
    torch.save({"model": model.half(), "train_args": {"imgsz": 1280, "task": "detect"}}, path)
    with pytest.raises(MegaDetectorError, match="RTDETRDetectionModel") as error:
        MegaDetector(MDSettings(weights_path=str(path)))
    assert str(path) in _one_line(error)


# --- No network -------------------------------------------------------------------------------

_NO_NETWORK = textwrap.dedent(
    """
    import json, socket, sys
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(repr(args[:2]))
        raise OSError("network refused by the test")

    socket.getaddrinfo = socket.create_connection = socket.socket.connect = refuse
    import os
    import torch
    from PIL import Image
    from stages.filter.megadetector import MDSettings, detector
    torch.set_num_threads(2)
    settings = MDSettings(weights_path=sys.argv[1], image_size=320, detection_floor=0.001,
                          count_confidence=0.001, animal_threshold=0.001)
    model = detector(settings)
    scores = model.score([Image.open(sys.argv[2]).convert("RGB")])
    print(json.dumps({
        "attempts": attempts, "identity": model.identity, "count": scores[0].md_animal_count,
        "threads": torch.get_num_threads(), "omp": os.environ.get("OMP_NUM_THREADS"),
    }))
    """
)


def test_loading_and_scoring_never_touch_the_network_nor_the_process_settings(tmp_path_factory):
    """In a fresh process without YOLO_OFFLINE in the environment, with every socket refused:
    importing ultralytics, loading the weights and scoring make no network attempt, and leave
    torch's thread count and OMP_NUM_THREADS (inherited by processes started later) as they were."""
    pytest.importorskip("ultralytics", reason="needs the megadetector extra")
    weights = cached_weights(tmp_path_factory, architecture=SMALL_ARCHITECTURE)
    env = {k: v for k, v in os.environ.items() if not k.startswith("YOLO_") and k != "OMP_NUM_THREADS"}
    done = subprocess.run(
        [sys.executable, "-c", _NO_NETWORK, str(weights), str(GIRAFFE)],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=240,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["attempts"] == []
    assert report["count"] > 0 and report["identity"]["loader"].startswith("ultralytics ")
    assert (report["threads"], report["omp"]) == (2, None)


def test_loading_leaves_pillow_and_torch_as_they_were(tmp_path: Path):
    """ultralytics patches PIL.Image.open and torch.save when imported; the download stage and
    checkpoints in the same process must see the originals (an undecodable body stays
    `UnidentifiedImageError`, not an import error of an optional HEIF plugin)."""
    import io

    import torch
    from PIL import Image

    from stages.filter.megadetector import _import_yolo

    _import_yolo()
    assert Image.open.__module__ == "PIL.Image" and torch.save.__module__.startswith("torch")
    with pytest.raises(Image.UnidentifiedImageError):
        Image.open(io.BytesIO(b"<html>not an image</html>"))
