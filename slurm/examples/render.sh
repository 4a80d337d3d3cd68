#!/usr/bin/env bash
# Regenerates the example scripts of this folder with `tolpipe slurm render`: work root
# /scratch/bio123/tol (EXAMPLE_ROOT), with site.toml copied into it as a user would keep it.
# Rendering creates the root's batch/logs folder (sbatch needs it), so run this where that is
# harmless. tests/test_slurm_render.py checks that the checked-in scripts are current.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=${EXAMPLE_ROOT:-/scratch/bio123/tol}
python=${PYTHON:-python3}
mkdir -p "$root"
cp "$here/site.toml" "$root/site.toml"
cd "$root"
for stage in 01_ingest 02_download 03_taxonomy 04_filter 05_dedup 06_shard 07_train; do
    "$python" -m pipeline.cli --root "$root" --config "$root/site.toml" slurm render "$stage" \
        --output "$here/$stage.sbatch"
done
