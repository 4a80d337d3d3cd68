"""The demo's photo corpus (demo/corpus.py), under the names the tests use."""

from demo.corpus import DATA_DIR, RANKS, SHIPPABLE_LICENCES, Photo, corpus_dir, faces_dir, load_corpus

__all__ = ["DATA_DIR", "RANKS", "SHIPPABLE_LICENCES", "Photo", "corpus_dir", "faces_dir", "load_corpus"]
