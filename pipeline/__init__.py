"""tolpipe's framework: config, manifest ledger, runner, executors, provenance and CLI."""

__version__ = "0.1.0"
