"""Embedding plots: PNG panels of species prototypes with variant arrows, and what is reported
when the set cannot give them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from training.metrics import EvalInputs
from training.plots import plot_embeddings, project


def variant_set(species: int = 6, per_variant: int = 3) -> EvalInputs:
    rng = np.random.default_rng(0)
    rows, lineages, variants = [], [], []
    for s in range(species):
        family = f"Fam{s % 2}idae"
        lineage = ("Animalia", "Chordata", "Aves", "Passeriformes", family, f"Genus{s}", f"Genus{s} sp{s}")
        for variant, shift in (("small", -0.3), ("large", 0.3)):
            for _ in range(per_variant):
                vector = np.eye(16)[s] + shift * np.eye(16)[15] + 0.02 * rng.standard_normal(16)
                rows.append(vector / np.linalg.norm(vector))
                lineages.append(lineage)
                variants.append(variant)
    return EvalInputs(
        np.asarray(rows, np.float32), lineages, pd.DataFrame({"variant": variants}), None, seed=0
    )


def test_pca_and_tsne_panels_with_arrows(tmp_path: Path):
    out = tmp_path / "results" / "embeddings.png"
    summary = plot_embeddings(variant_set(), out, {"color_rank": "family", "dpi": 60})
    json.dumps(summary)
    assert summary["species"] == 6 and summary["methods"] == ["pca", "tsne"]
    assert summary["color_taxa"] == 2
    assert summary["arrows"] == {"variants": ["large", "small"], "species": 6}
    with Image.open(out) as image:
        assert image.format == "PNG"
        assert image.width > 1.8 * image.height  # two panels side by side
    assert [p.name for p in out.parent.iterdir()] == ["embeddings.png"]  # no temp file left


def test_pca_of_points_on_a_plane_keeps_their_distances():
    rng = np.random.default_rng(1)
    basis, _ = np.linalg.qr(rng.standard_normal((16, 2)))  # a random plane in 16-D
    flat = rng.standard_normal((10, 2)) * [3.0, 1.0]
    xy = project(flat @ basis.T, "pca", {}, seed=0)
    distances = np.linalg.norm(flat[:, None] - flat[None], axis=2)
    assert np.allclose(np.linalg.norm(xy[:, None] - xy[None], axis=2), distances)


def test_no_variant_column_and_too_few_species(tmp_path: Path):
    inputs = variant_set()
    bare = EvalInputs(inputs.image_embeddings, inputs.lineages, pd.DataFrame(), None)
    summary = plot_embeddings(bare, tmp_path / "bare.png", {"methods": ["pca"], "dpi": 60})
    assert summary["arrows"] == {"skipped": "no variant column"}
    assert (tmp_path / "bare.png").is_file()
    two = EvalInputs(inputs.image_embeddings[:12], inputs.lineages[:12], inputs.columns[:12], None)
    assert plot_embeddings(two, tmp_path / "two.png") == {
        "skipped": "2 species with a name; a 2-D map needs 3"
    }
    assert not (tmp_path / "two.png").exists()


def test_umap_panel(tmp_path: Path):
    # umap-learn's own code, interpreted: compiling its numba kernels would cost 10-40 s per
    # process, running them uncompiled on 18 points a few seconds.
    script = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from tests.test_plots import variant_set\n"
        "from training.plots import plot_embeddings\n"
        "out = Path(sys.argv[1])\n"
        "print(json.dumps(plot_embeddings(variant_set(), out, {'methods': ['umap'], 'dpi': 60})))\n"
    )
    out = tmp_path / "umap.png"
    env = {**os.environ, "NUMBA_DISABLE_JIT": "1"}
    done = subprocess.run([sys.executable, "-c", script, str(out)], env=env, capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parent.parent, timeout=240, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["methods"] == ["umap"] and summary["arrows"]["species"] == 6
    with Image.open(out) as image:
        assert image.format == "PNG"
