#!/usr/bin/env bash
# Wheels of mammo's packages that a PyTorch GPU image usually lacks, at the lock file's versions,
# into .whl/ (git-ignored): for scripts/gpu_check.sh on a GPU machine that reaches no registry
# (the image brings torch, Lightning, timm, torchmetrics, NumPy, pandas, scikit-learn, matplotlib).
#
#   bash scripts/gpu_wheels.sh [PYTHON_VERSION]     # default 3.12, the GPU image's Python
#
# The compressed-DICOM plugins (python-gdcm, pylibjpeg-*) are left out: the check's demo DICOMs
# are uncompressed, and gdcm alone is 13 MB of the 64 MB a device call carries.
set -euo pipefail
cd "$(dirname "$0")/.."
PYVER=${1:-3.12}
NAMES="hydra-core omegaconf hydra-optuna-sweeper optuna sqlalchemy alembic mako colorlog pydicom
umap-learn pynndescent"
rm -rf .whl && mkdir .whl
for name in $NAMES; do
  pin=$(grep -i "^${name}==" requirements/lock.txt) || { echo "$name: not in requirements/lock.txt" >&2; exit 1; }
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "$pin" 2>&1 | grep -v "^WARNING: Location" || true
done
ls .whl | wc -l | xargs echo "wheels:"
du -sh .whl
