#!/usr/bin/env bash
# Fills .whl/ with what tools/gpu_check.sh installs on a GPU machine that cannot download: the
# locked versions of the packages the GPU image lacks or holds too old (its transformers is 5.17,
# below our floor), as Python 3.12 wheels, and DeepSpeed, which PyPI ships only as source, built
# here as a pure-Python wheel (its CUDA ops are compiled on first use, if ever). ~20 MB.
# Usage: tools/gpu_wheels.sh   (from the repository root, with the venv of `make test`)
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-.venv/bin/python}
locked() { grep -i "^$1==" requirements/lock.txt; }
mkdir -p .whl
"$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "$(locked transformers)" "$(locked peft)" "$(locked pydantic)" "$(locked pydantic_core)" \
    "$(locked annotated-types)" "$(locked typing-inspection)" hjson==3.1.0
"$py" -m pip download -q --no-deps --no-binary=:all: -d .whl/src deepspeed==0.19.8
DS_BUILD_OPS=0 "$py" -m pip wheel -q --no-deps --no-build-isolation -w .whl .whl/src/deepspeed-0.19.8.tar.gz
rm -r .whl/src
ls -1 .whl
