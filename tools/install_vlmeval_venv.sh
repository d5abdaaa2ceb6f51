#!/usr/bin/env bash
# The VLMEvalKit test environment: torch 2.13.0 (the CPU wheel), prealign (editable), then every
# package of requirements/vlmeval-lock.txt at its exact version and without declared dependencies:
# VLMEvalKit (ms-vlmeval) declares GPU and GUI stacks its code paths here never import.
# Never the main environment: its torchvision changes transformers' image preprocessing.
set -euo pipefail
venv=$1
python3 -m venv "$venv"
pip=("$venv/bin/python" -m pip install -q --disable-pip-version-check)
"${pip[@]}" torch==2.13.0
"${pip[@]}" --no-deps -r requirements/vlmeval-lock.txt
"${pip[@]}" --no-deps -e .
