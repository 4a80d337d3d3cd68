"""The museum non-organism classifier (constants.md, "Filters", first row).

Museum archives hold many images that show no organism: drawers, labels, text documents,
microscope slides, landscapes. Per collection area a support set of labelled example images is
embedded and each (area, label) is clustered with K-means; the L2-normalised centres are the
classifier. An image's label is that of its nearest centre (cosine similarity) among the centres
of its collection area and those that apply to every area; the filter drops configured
non-organism labels and stores the label and similarity, so the decision can be re-applied.

Support-set folder layout (one level of areas, one of labels, then images):

    folder/<collection area>/<label>/*.jpg|*.jpeg|*.png|*.webp
    folder/_any/<label>/...        examples that apply to every collection area

Area folders are named like ingest's collection areas ("Insect", "Invertebrate Zoology", ...);
they are matched without regard to case. Labels sit only under an area folder, never directly
under `folder`: a folder of images one level up would be ambiguous (area or label?), so it is an
error, as are images directly in an area folder and label folders without images. Hidden files
and files of other types (READMEs, credits) are ignored.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from pipeline import atomic
from pipeline.digest import sha256_file
from pipeline.errors import ConfigError, InputError
from stages.filter.embedder import Embedder, describe

ANY_AREA = "_any"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
FORMAT = "tolpipe museum support set"
FORMAT_VERSION = 1
LAYOUT = "expected <area>/<label>/<images>, with _any/<label>/<images> for every area"
BUILD = "build it with `tolpipe filter build-support-set`"
REBUILD = "re" + BUILD
# Images opened and embedded at a time while building: bounds memory, not results.
BUILD_CHUNK = 64
# K-means restarts: fixed, so a support set depends only on its images, k and seed.
N_INIT = 10


@dataclass
class SupportSet:
    """Centres with their label and area (ANY_AREA for all areas), and how they were built."""

    centres: np.ndarray  # float32 (n, d), rows L2-normalised
    labels: list[str]
    areas: list[str]
    identity: dict[str, str]
    k: int
    seed: int
    images: dict[str, dict[str, int]] = field(default_factory=dict)  # area -> label -> images
    digest: str = ""  # sha256 of the file it was saved to or loaded from

    def metadata(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "version": FORMAT_VERSION, "identity": self.identity, "k": self.k,
            "seed": self.seed, "labels": self.labels, "areas": self.areas, "images": self.images,
        }  # fmt: skip

    def to_bytes(self) -> bytes:
        """The .npz bytes: `centres` and `metadata` (a JSON string). The same set gives the same
        bytes (numpy's zip entries carry a fixed date)."""
        buffer = io.BytesIO()
        meta = json.dumps(self.metadata(), sort_keys=True, ensure_ascii=False)
        centres = np.ascontiguousarray(self.centres, dtype=np.float32)
        np.savez(buffer, centres=centres, metadata=np.array(meta))
        return buffer.getvalue()

    def save(self, path: Path) -> None:
        data = self.to_bytes()
        atomic.write_bytes(Path(path), data)
        self.digest = sha256_file(path)

    @classmethod
    def load(cls, path: Path, expected_identity: dict[str, str] | None) -> SupportSet:
        """Read a saved set; refuse one built with another embedder than `expected_identity`
        (None: no check, for inspecting a file)."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: museum support set not found: {BUILD}")
        support = _parse(path)
        if expected_identity is not None and support.identity != expected_identity:
            raise ConfigError(
                f"{path}: support set built with {describe(support.identity)}, the configured embedder is "
                f"{describe(expected_identity)}: {REBUILD}"
            )
        return support


def _parse(path: Path) -> SupportSet:
    try:
        with np.load(path, allow_pickle=False) as npz:
            centres = np.asarray(npz["centres"], dtype=np.float32)
            meta = json.loads(str(npz["metadata"]))
        if meta.get("format") != FORMAT or meta.get("version") != FORMAT_VERSION:
            raise InputError(path, f"not a version {FORMAT_VERSION} museum support set; {REBUILD}")
        support = SupportSet(
            centres=centres, labels=list(meta["labels"]), areas=list(meta["areas"]),
            identity=dict(meta["identity"]), k=int(meta["k"]), seed=int(meta["seed"]),
            images=meta["images"], digest=sha256_file(path),
        )  # fmt: skip
    except InputError:
        raise
    except Exception as exc:  # zip, key, type and JSON errors all mean the same to the user
        raise InputError(path, f"not a museum support set ({type(exc).__name__}: {exc}); {REBUILD}") from exc
    if not (centres.ndim == 2 and len(support.labels) == len(support.areas) == centres.shape[0]):
        raise InputError(path, f"centres, labels and areas disagree in length; {REBUILD}")
    return support


# ---------------------------------------------------------------------------------------------
# Building
# ---------------------------------------------------------------------------------------------


def scan_folder(folder: Path) -> dict[tuple[str, str], list[Path]]:
    """(area, label) -> image files, sorted; errors name the offending path."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "support-set folder not found")
    groups: dict[tuple[str, str], list[Path]] = {}
    for area_dir in _visible(folder):
        if _is_image(area_dir):
            raise InputError(area_dir, f"image directly in the support-set folder: {LAYOUT}")
        if not area_dir.is_dir():
            continue
        for label_dir in _visible(area_dir):
            if _is_image(label_dir):
                raise InputError(label_dir, f"image directly in an area folder: {LAYOUT}")
            if not label_dir.is_dir():
                continue
            for inner in _visible(label_dir):
                if inner.is_dir():
                    raise InputError(inner, f"folder inside a label folder: {LAYOUT}")
            files = [p for p in _visible(label_dir) if _is_image(p)]
            if not files:
                raise InputError(label_dir, f"label folder without images ({', '.join(IMAGE_SUFFIXES)})")
            groups[(area_dir.name, label_dir.name)] = files
    if not groups:
        raise InputError(folder, "no <area>/<label>/<images> found in the support-set folder")
    return groups


def _visible(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES


def embed_files(embedder: Embedder, files: list[Path]) -> np.ndarray:
    """Embeddings of image files, a chunk at a time so a large support set fits in memory."""
    chunks = [embedder.embed(list(images)) for images in _open_chunks(files)]
    return np.concatenate(chunks, axis=0).astype(np.float32, copy=False)


def _open_chunks(files: list[Path]) -> Iterator[list[Image.Image]]:
    for start in range(0, len(files), BUILD_CHUNK):
        images = []
        for path in files[start : start + BUILD_CHUNK]:
            try:
                with Image.open(path) as image:
                    images.append(image.convert("RGB"))
            except (OSError, Image.DecompressionBombError) as exc:
                raise InputError(path, f"not a readable image ({exc})") from exc
        yield images


def cluster(embeddings: np.ndarray, k: int, seed: int) -> np.ndarray:
    """L2-normalised K-means centres, float32, in a canonical (lexicographic) order.

    n_clusters = min(k, distinct rows): more clusters than distinct points would only repeat
    centres. When every distinct row gets its own cluster the rows are the centres."""
    distinct = np.unique(np.asarray(embeddings, dtype=np.float32), axis=0)
    n_clusters = min(k, distinct.shape[0])
    if n_clusters == distinct.shape[0]:
        centres = distinct
    else:
        from sklearn.cluster import KMeans

        model = KMeans(n_clusters=n_clusters, random_state=seed, n_init=N_INIT)
        centres = model.fit(np.asarray(embeddings, dtype=np.float32)).cluster_centers_
    centres = _normalise(np.asarray(centres, dtype=np.float64)).astype(np.float32)
    return centres[np.lexsort(centres.T[::-1])]


def _normalise(rows: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return rows / np.where(norms == 0.0, 1.0, norms)


def build_support_set(embedder: Embedder, folder: Path, k: int = 3, seed: int = 0) -> SupportSet:
    """Embed every example image and cluster each (area, label); deterministic for fixed inputs."""
    if k < 1:
        raise ConfigError(f"support-set k must be >= 1, got {k}")
    centres: list[np.ndarray] = []
    labels: list[str] = []
    areas: list[str] = []
    images: dict[str, dict[str, int]] = {}
    for (area, label), files in scan_folder(folder).items():
        group = cluster(embed_files(embedder, files), k, seed)
        centres.append(group)
        labels += [label] * len(group)
        areas += [area] * len(group)
        images.setdefault(area, {})[label] = len(files)
    return SupportSet(
        centres=np.concatenate(centres, axis=0), labels=labels, areas=areas,
        identity=dict(embedder.identity), k=k, seed=seed, images=images,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Classifying
# ---------------------------------------------------------------------------------------------


def _area_key(area: str | None) -> str | None:
    return None if area is None else area.strip().casefold()


def candidate_mask(support: SupportSet, area: str | None) -> np.ndarray:
    """Which centres an image of `area` is compared with: its area's and the all-area ones; all
    centres when the area has none of its own (or is unknown)."""
    keys = [_area_key(a) for a in support.areas]
    own = np.array([k == _area_key(area) for k in keys], dtype=bool) if area is not None else None
    if own is None or not own.any():
        return np.ones(len(keys), dtype=bool)
    return own | np.array([k == ANY_AREA for k in keys], dtype=bool)


def nearest(
    support: SupportSet, embeddings: np.ndarray, areas: list[str | None]
) -> tuple[list[str], list[float]]:
    """Per row, the label of the nearest candidate centre (cosine = dot product, rows normalised)
    and its similarity. Ties go to the first centre in the set's order."""
    rows = np.asarray(embeddings, dtype=np.float32)
    if rows.shape[0] != len(areas):
        raise ValueError(f"{rows.shape[0]} embeddings but {len(areas)} areas")
    if rows.shape[0] == 0:
        return [], []
    if not support.labels:
        raise ValueError("the support set has no centres")
    similarity = rows @ support.centres.T
    masks = {area: candidate_mask(support, area) for area in set(areas)}
    mask = np.stack([masks[area] for area in areas])
    best = np.argmax(np.where(mask, similarity, -np.inf), axis=1)
    picked = similarity[np.arange(len(best)), best]
    return [support.labels[i] for i in best], [float(s) for s in picked]


def non_organism(label: str, labels: set[str]) -> bool:
    """Whether a nearest-centre label is one of the configured non-organism labels."""
    return label in labels


# ---------------------------------------------------------------------------------------------
# For the CLI
# ---------------------------------------------------------------------------------------------


def build_and_save(
    embedder: Embedder, folder: Path, out_path: Path, k: int = 3, seed: int = 0
) -> dict[str, Any]:
    """Build a support set, save it, and return a summary (see format_summary)."""
    support = build_support_set(embedder, folder, k, seed)
    support.save(Path(out_path))
    return summary(support, Path(out_path))


def summary(support: SupportSet, path: Path | None = None) -> dict[str, Any]:
    """Images and centres per area and label, plus what identifies the set."""
    per_area: dict[str, dict[str, dict[str, int]]] = {}
    for area, label in zip(support.areas, support.labels, strict=True):
        entry = per_area.setdefault(area, {}).setdefault(label, {"images": 0, "centres": 0})
        entry["centres"] += 1
    for area, by_label in support.images.items():
        for label, count in by_label.items():
            per_area.setdefault(area, {}).setdefault(label, {"images": 0, "centres": 0})["images"] = count
    return {
        "path": str(path) if path else None, "digest": support.digest, "embedder": dict(support.identity),
        "k": support.k, "seed": support.seed, "dim": int(support.centres.shape[1]),
        "centres": len(support.labels), "areas": per_area,
    }  # fmt: skip


def format_summary(info: dict[str, Any]) -> str:
    """The summary as lines for a terminal."""
    lines = [
        f"support set {info['path'] or ''} sha256 {info['digest'][:12]}".rstrip(),
        f"embedder {describe(info['embedder'])}, k={info['k']}, seed={info['seed']}, "
        f"{info['centres']} centres of dimension {info['dim']}",
    ]
    for area in sorted(info["areas"]):
        name = "(every area)" if area == ANY_AREA else area
        lines.append(f"  {name}")
        for label, counts in sorted(info["areas"][area].items()):
            lines.append(f"    {label:<24} {counts['images']:>6} images  {counts['centres']:>3} centres")
    return "\n".join(lines)
