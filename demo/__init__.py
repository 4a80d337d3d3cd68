"""The tolpipe demo: a small real corpus (demo/data/), the provider-style inputs built from it,
the loopback image server that serves them, and the driver behind `make demo` (`python -m demo`)."""
