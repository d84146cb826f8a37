#!/usr/bin/env bash
# Wheels the lent GPU machine lacks (its python3 3.12 has torch, tensorboard, xarray, h5py, but
# not hydra, omegaconf, netCDF4 or google-crc32c, and it cannot reach a registry), fetched here
# into .whl/ (git-ignored, about 41 MB). Then, on the device, in one run with carry [".whl"]:
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl &&
#     PYTHONPATH=/tmp/site PY=python3 bash benchmarks/gpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
plat=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  plat+=(--platform "$p")
done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${plat[@]}" -d .whl hydra-core==1.3.2 omegaconf==2.3.0 netCDF4 cftime h5netcdf iris-sample-data \
  google-crc32c
python3 -m pip wheel -q --no-deps -w .whl antlr4-python3-runtime==4.9.3  # sdist only on PyPI
du -sh .whl
