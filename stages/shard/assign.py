"""Where a row goes, from keyed hashes alone (no global state, so any task can compute it):

- order key `h`: 64-bit BLAKE2b of the uuid keyed with the seed. A row of a split with n shards
  goes to shard floor(h * n / 2**64) (a range of h per shard: shards hold about the same number
  of rows, from every partition, provider, host and taxon alike) and sits in its shard in (h,
  uuid) order;
- held out for validation when another keyed hash (of the uuid, or of the species key) falls
  below val_fraction * 2**64;
- a row digest: 128-bit BLAKE2b of everything the row contributes to its shard. A shard's
  digest is the sum of its rows' digests (two 64-bit limbs, each mod 2**64): independent of the
  order rows are met in, so partitions and staging groups can add them up separately.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

ORDER = b"tolpipe-order"
HOLD_OUT = b"tolpipe-val"
TRAIN, VAL = 0, 1
SPLIT_NAMES = ("train", "val")
SHARD_PREFIX = {TRAIN: "shard", VAL: "val"}


def _key(seed: int) -> bytes:
    return seed.to_bytes(8, "big")


def keyed_hashes(values: Iterable[str], seed: int, purpose: bytes) -> np.ndarray:
    """uint64 BLAKE2b-64 of each value, keyed with the seed, personalised by purpose."""
    key = _key(seed)
    hashes = [hashlib.blake2b(v.encode("utf-8"), digest_size=8, key=key, person=purpose) for v in values]
    return np.array([int.from_bytes(h.digest(), "big") for h in hashes], dtype=np.uint64)


def shard_of(h: np.ndarray, shards: int) -> np.ndarray:
    """floor(h * shards / 2**64), exactly, for shards < 2**31 (int64)."""
    if shards <= 0:
        return np.zeros(len(h), dtype=np.int64)
    n = np.uint64(shards)
    high, low = h >> np.uint64(32), h & np.uint64(0xFFFFFFFF)
    return ((high * n + ((low * n) >> np.uint64(32))) >> np.uint64(32)).astype(np.int64)


def held_out(keys: Sequence[str | None], seed: int, fraction: float) -> np.ndarray:
    """True where the key's hash falls below fraction * 2**64 (None keys: never)."""
    if fraction <= 0:
        return np.zeros(len(keys), dtype=bool)
    threshold = np.uint64(min(int(fraction * 2**64), 2**64 - 1))
    hashes = keyed_hashes(["" if k is None else k for k in keys], seed, HOLD_OUT)
    present = np.array([k is not None for k in keys], dtype=bool)
    return present & (hashes < threshold)


def row_digests(texts: Iterable[str]) -> np.ndarray:
    """(n, 2) uint64: 128-bit BLAKE2b of each row's text (see rows.row_texts)."""
    limbs = []
    for text in texts:
        digest = hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()
        limbs.append((int.from_bytes(digest[:8], "big"), int.from_bytes(digest[8:], "big")))
    return np.array(limbs, dtype=np.uint64).reshape(-1, 2)


@dataclass(frozen=True)
class Layout:
    """How many shards each split has; partition index = train shards first, then val shards."""

    train: int
    val: int

    @classmethod
    def for_counts(cls, train_samples: int, val_samples: int, per_shard: int, rows: int) -> Layout:
        """ceil(samples / per_shard) shards per split; one shard when there are rows but no
        sample at all (it accounts for the rows dropped here)."""
        train, val = math.ceil(train_samples / per_shard), math.ceil(val_samples / per_shard)
        return cls(1 if rows and not train + val else train, val)

    @property
    def total(self) -> int:
        return self.train + self.val

    def partition(self, split: np.ndarray, h: np.ndarray) -> np.ndarray:
        """Partition index of each row (split TRAIN/VAL as int8)."""
        train = shard_of(h, self.train)
        val = shard_of(h, self.val) + self.train
        # A split without shards (no sample in it) still has rows to account for (no taxon):
        # they go to the other split's shards.
        if self.val == 0:
            val = train
        if self.train == 0:
            train = val
        return np.where(split == VAL, val, train)

    def name(self, index: int) -> str:
        """shard-NNNNN.tar or val-NNNNN.tar."""
        split = TRAIN if index < self.train else VAL
        number = index if split == TRAIN else index - self.train
        return f"{SHARD_PREFIX[split]}-{number:05d}.tar"

    def split_of(self, index: int) -> str:
        return SPLIT_NAMES[TRAIN if index < self.train else VAL]
