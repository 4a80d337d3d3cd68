"""JPEG decoding ahead of the models: a loader thread decodes the next batches while the models
work on the current one (Pillow releases the GIL while decoding)."""

from __future__ import annotations

import contextlib
import io
import queue
import threading
from collections.abc import Iterable, Iterator

from PIL import Image

# Batches decoded ahead of the one the models are on.
AHEAD = 2
_DONE = object()

Decoded = tuple[str, Image.Image | None, str | None]  # uuid, RGB image (None: undecodable), error


def decode(jpeg: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(jpeg))
    image.load()
    return image.convert("RGB") if image.mode != "RGB" else image


def _decode_one(uuid: str, jpeg: bytes) -> Decoded:
    try:
        return uuid, decode(jpeg), None
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        return uuid, None, f"{type(exc).__name__}: {exc}"


def decoded_batches(items: Iterable[tuple[str, bytes]], batch_size: int) -> Iterator[list[Decoded]]:
    """Batches of (uuid, image or None, error) in the order of `items`."""
    ready: queue.Queue = queue.Queue(maxsize=AHEAD)
    stop = threading.Event()

    def work() -> None:
        batch: list[Decoded] = []
        try:
            for uuid, jpeg in items:
                if stop.is_set():
                    return
                batch.append(_decode_one(uuid, jpeg))
                if len(batch) == batch_size:
                    ready.put(batch)
                    batch = []
            if batch:
                ready.put(batch)
        except BaseException as exc:  # handed to the consumer, raised there
            ready.put(exc)
        finally:
            ready.put(_DONE)

    thread = threading.Thread(target=work, name="filter-decode", daemon=True)
    thread.start()
    try:
        while (batch := ready.get()) is not _DONE:
            if isinstance(batch, BaseException):
                raise batch
            yield batch
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            with contextlib.suppress(queue.Empty):
                ready.get(timeout=0.1)
        thread.join()
