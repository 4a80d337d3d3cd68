"""The loopback image server (demo/server.py), under the names the tests use; `python -m
tests.support.loopback_server` serves by hand like `python -m demo.server`."""

import sys

from demo.server import (
    FAULTS,
    UNRESOLVABLE_HOST,
    ImageFactory,
    LogEntry,
    LoopbackServer,
    bomb_png,
    fault_urls,
    huge_jpeg,
    main,
    mixed_image_urls,
    write_url_csv,
)

__all__ = ["FAULTS", "UNRESOLVABLE_HOST", "ImageFactory", "LogEntry", "LoopbackServer", "bomb_png",
           "fault_urls", "huge_jpeg", "mixed_image_urls", "write_url_csv"]  # fmt: skip

if __name__ == "__main__":
    sys.exit(main())
