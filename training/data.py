"""Training data: stage 06's organism shards and image-text replay shards, read with webdataset
and open_clip's tar reader, deterministically, so a resumed run continues at the same sample.

- Organism shards (`shard-*.tar` under a folder with sizes.json, or a brace-expanded URL list):
  each sample's `jpg` and its caption files. Every batch uses ONE caption type, drawn from the
  configured set by a seeded hash of the step (`caption_type_for_step`), so a resumed run draws
  the same ones.
- Replay shards (`jpg` + `txt`, as img2dataset writes them): an endless stream mixed into every
  step at `replay_batch_size` samples.
- Order: each epoch permutes the shard list with (seed, epoch), gives rank r every world-th
  shard, streams samples through a seeded shuffle buffer; the data position is (epoch, batches
  taken in it) and a resume skips that many raw samples before decoding.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError

# Samples held in the shuffle buffer (and how many before the first one leaves it).
SHUFFLE_BUFFER = 2000
SHUFFLE_INITIAL = 500


@dataclass(frozen=True)
class ShardSet:
    urls: list[str]
    samples: int


def caption_type_for_step(caption_types: tuple[str, ...], seed: int, step: int) -> str:
    """The caption type of a global step: a seeded draw, the same on every rank and on resume."""
    digest = hashlib.blake2b(f"{seed}:{step}".encode(), digest_size=8).digest()
    return caption_types[int.from_bytes(digest, "big") % len(caption_types)]


def captions_for_step(captions: list[list[str]], caption_types: tuple[str, ...], seed: int,
                      step: int) -> tuple[str, list[str]]:  # fmt: skip
    """(caption type, the batch's texts of that one type) from a batch's caption columns (in
    ORGANISM_COLUMNS order, after the keys and images)."""
    kind = caption_type_for_step(caption_types, seed, step)
    return kind, list(captions[CAPTION_COLUMN[kind] - 2])


def organism_shards(data: str) -> ShardSet:
    """Training shards of stage 06's layout: a folder with sizes.json (validation shards left
    out), or a brace-expanded URL list with a sizes.json beside the first file."""
    import braceexpand

    path = Path(data)
    if path.is_dir():
        sizes_file = path / "sizes.json"
        urls = sorted(str(p) for p in path.glob("shard-*.tar"))
    else:
        urls = [u for part in data.split("::") for u in braceexpand.braceexpand(part) if Path(u).is_file()]
        sizes_file = Path(urls[0]).parent / "sizes.json" if urls else path
    if not urls:
        raise ConfigError(f"train.data = {data!r}: no shard-*.tar files (run `tolpipe run shard` first)")
    if not sizes_file.is_file():
        raise ConfigError(f"{sizes_file}: missing; stage 06 writes it once every shard is committed")
    sizes = json.loads(sizes_file.read_text())
    missing = [u for u in urls if Path(u).name not in sizes]
    if missing:
        raise ConfigError(f"{sizes_file}: no count for {Path(missing[0]).name}")
    return ShardSet(urls, sum(sizes[Path(u).name] for u in urls))


def replay_shards(data: str) -> list[str]:
    import braceexpand

    path = Path(data)
    urls = (
        sorted(str(p) for p in path.glob("*.tar")) if path.is_dir() else list(braceexpand.braceexpand(data))
    )
    if not urls:
        raise ConfigError(f"train.replay_data = {data!r}: no .tar shards")
    return urls


def _shards_of_rank(urls: list[str], seed: int, epoch: int, rank: int, world: int) -> list[str]:
    order = list(urls)
    random.Random(f"shards:{seed}:{epoch}").shuffle(order)
    if len(order) < world:
        raise ConfigError(
            f"{len(order)} shards for {world} ranks: stage 06 needs at least one shard per rank"
        )
    return order[rank::world]


def _repeat(urls: list[str]) -> Iterator[dict[str, str]]:
    """Every shard of the list, again and again: each rank gets exactly its batches per epoch
    even when its shards hold fewer samples than another rank's."""
    for _ in itertools.count():
        yield from ({"url": url} for url in urls)


def _worker_shards(urls: list[str]) -> Iterator[dict[str, str]]:
    import webdataset as wds

    return wds.split_by_worker(_repeat(urls))


def _skip(n: int) -> Callable[[Iterator[Any]], Iterator[Any]]:
    return lambda src: itertools.islice(src, n, None)


def _worker_share(batches: int, worker: int, workers: int) -> int:
    """Of the first `batches` batches a DataLoader takes round-robin, how many worker made."""
    return batches // workers + (1 if worker < batches % workers else 0)


def _pipeline(urls, seed_text: str, batch: int, skip_samples: int, columns: tuple[str, ...],
              image_transform, epoch_batches: int | None):  # fmt: skip
    import webdataset as wds
    from open_clip_train.data import tarfile_to_samples_nothrow

    if epoch_batches is not None and epoch_batches <= 0:
        return []  # this epoch is already done (with_epoch(0) would mean "endless")
    stages = [
        lambda: _worker_shards(urls),
        tarfile_to_samples_nothrow,
        wds.shuffle(bufsize=SHUFFLE_BUFFER, initial=SHUFFLE_INITIAL, rng=random.Random(seed_text)),
        _skip(skip_samples),
        wds.decode("pilrgb"),
        wds.map_dict(jpg=image_transform),
        wds.to_tuple(*columns),
        wds.batched(batch, partial=False),
    ]
    dataset = wds.DataPipeline(*stages)
    return dataset.with_epoch(epoch_batches) if epoch_batches is not None else dataset


def _loader(dataset, workers: int):
    import webdataset as wds

    return wds.WebLoader(dataset, batch_size=None, shuffle=False, num_workers=workers)


# webdataset lower-cases member keys ("taxonTag.txt" is read as "taxontag.txt").
ORGANISM_COLUMNS = ("__key__", "jpg", "sci.txt", "com.txt", "taxon.txt", "sci_com.txt", "taxon_com.txt",
                    "taxontag.txt", "taxontag_com.txt", "json")  # fmt: skip
CAPTION_COLUMN = {kind: i + 2 for i, kind in enumerate(("sci", "com", "taxon", "sci_com", "taxon_com",
                                                         "taxonTag", "taxonTag_com"))}  # fmt: skip


def batches_per_epoch(samples: int, batch: int, world: int) -> int:
    """Full global batches in one pass over the data (at least one)."""
    return max(1, samples // (batch * world))


def organism_batches(shards: ShardSet, image_transform, batch: int, seed: int, epoch: int,
                     skip_batches: int, rank: int, world: int, workers: int) -> Iterator[tuple]:  # fmt: skip
    """This rank's batches of one epoch from batch `skip_batches` on: tuples of (keys, images,
    sci, com, taxon, sci_com, taxon_com, taxonTag, taxonTag_com, json attribution)."""
    per_epoch = batches_per_epoch(shards.samples, batch, world)
    urls = _shards_of_rank(shards.urls, seed, epoch, rank, world)
    if workers <= 0:
        dataset = _pipeline(urls, f"samples:{seed}:{epoch}:{rank}", batch, skip_batches * batch,
                            ORGANISM_COLUMNS, image_transform, per_epoch - skip_batches)  # fmt: skip
        return iter(_loader(dataset, 0))
    return _multi_worker(urls, f"samples:{seed}:{epoch}:{rank}", batch, skip_batches, per_epoch,
                         ORGANISM_COLUMNS, image_transform, workers)  # fmt: skip


def _multi_worker(urls, seed_text, batch, skip_batches, per_epoch, columns, transform, workers):
    """With worker processes each worker reads every workers-th shard and skips the batches it
    had made; the DataLoader then interleaves them round-robin again."""
    import torch.utils.data as tud
    import webdataset as wds

    class PerWorker(tud.IterableDataset):
        def __iter__(self):
            info = tud.get_worker_info()
            worker = info.id if info else 0
            done = _worker_share(skip_batches, worker, workers)
            total = _worker_share(per_epoch, worker, workers)
            return iter(_pipeline(urls, f"{seed_text}:{worker}", batch, done * batch, columns, transform,
                                  total - done))  # fmt: skip

    return iter(wds.WebLoader(PerWorker(), batch_size=None, shuffle=False, num_workers=workers))


def replay_batches(urls: list[str], image_transform, batch: int, seed: int, skip_batches: int,
                   rank: int, world: int) -> Iterator[tuple]:  # fmt: skip
    """An endless stream of (images, texts) replay batches for this rank, from batch `skip_batches`."""
    order = list(urls)
    random.Random(f"replay:{seed}").shuffle(order)
    mine = order[rank::world] if len(order) >= world else order
    dataset = _pipeline(mine, f"replay:{seed}:{rank}", batch, skip_batches * batch, ("jpg", "txt"),
                        image_transform, None)  # fmt: skip
    return iter(_loader(dataset, 0))
