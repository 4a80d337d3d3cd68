"""256-bit hash codes as numpy arrays: (n, 32) uint8 rows, most significant bit first, or the same
bits as (n, 4) uint64 words (big-endian), and their Hamming distances."""

from __future__ import annotations

import numpy as np

CODE_BYTES = 32
CODE_BITS = 256
WORDS = 4


def as_codes(rows: np.ndarray) -> np.ndarray:
    """Check and return an (n, 32) uint8 array of codes (contiguous)."""
    codes = np.ascontiguousarray(rows, dtype=np.uint8)
    if codes.ndim != 2 or codes.shape[1] != CODE_BYTES:
        raise ValueError(f"hash codes must be (n, {CODE_BYTES}) bytes, got shape {codes.shape}")
    return codes


def from_bytes(values: list[bytes]) -> np.ndarray:
    """Codes from 32-byte strings."""
    if not values:
        return np.zeros((0, CODE_BYTES), np.uint8)
    return as_codes(np.frombuffer(b"".join(values), dtype=np.uint8).reshape(-1, CODE_BYTES))


def from_hex(values: list[str]) -> np.ndarray:
    return from_bytes([bytes.fromhex(v) for v in values])


def to_hex(codes: np.ndarray) -> list[str]:
    return [row.tobytes().hex() for row in as_codes(codes)]


def words(codes: np.ndarray) -> np.ndarray:
    """(n, 4) uint64: bit 0 of a code is the most significant bit of word 0."""
    return as_codes(codes).view(">u8").astype(np.uint64)


def distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise Hamming distances between two (n, 4) uint64 word arrays (int32)."""
    return np.bitwise_count(a ^ b).sum(axis=1, dtype=np.int32)


def substring(word_rows: np.ndarray, start: int, length: int) -> np.ndarray:
    """Bits [start, start + length) of each code as uint64 keys (length <= 64)."""
    if not 1 <= length <= 64 or start + length > CODE_BITS:
        raise ValueError(f"bad substring [{start}, {start + length})")
    word, offset = divmod(start, 64)
    if offset + length <= 64:
        shifted = word_rows[:, word] >> np.uint64(64 - offset - length)
        return shifted & np.uint64((1 << length) - 1)
    high_bits = 64 - offset
    low_bits = length - high_bits
    high = word_rows[:, word] & np.uint64((1 << high_bits) - 1)
    low = word_rows[:, word + 1] >> np.uint64(64 - low_bits)
    return (high << np.uint64(low_bits)) | low
