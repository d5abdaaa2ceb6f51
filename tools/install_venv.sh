#!/usr/bin/env bash
# Create a virtual environment with prealign (editable) and its test tools, from one version set:
#   locked   requirements/lock.txt: the exact set the suite last passed on (make test, make demo, CI)
#   latest   the newest releases pyproject.toml's ranges allow (make test-latest, make lock)
#   lowest   every direct dependency at its declared lower bound (make test-lowest)
# torch comes first and pinned: a CPU wheel of 2.13.0 is on the development machines, and an
# unpinned torch pulls gigabytes of CUDA wheels. lmms-eval is installed without its dependencies
# (they include torchvision, a CUDA build here that breaks transformers' image processors), then
# what its command line imports to run a local image task (tests/test_lmms_eval_cli.py); its
# evaluator imports `filelock._api`, which filelock 4 removed.
set -euo pipefail
venv=$1
versions=$2
python3 -m venv "$venv"
py="$venv/bin/python"
case $versions in
    locked) constraints=(-c requirements/lock.txt) ;;
    latest) constraints=() ;;
    lowest)
        "$py" tools/lowest_constraints.py pyproject.toml >"$venv/lowest.txt"
        constraints=(-c "$venv/lowest.txt")
        ;;
    *)
        echo "install_venv.sh: unknown version set '$versions' (locked, latest or lowest)" >&2
        exit 2
        ;;
esac
pip=("$py" -m pip install -q --disable-pip-version-check "${constraints[@]}")
"${pip[@]}" torch==2.13.0
"${pip[@]}" -e ".[dev]"
"${pip[@]}" --no-deps lmms-eval==0.7.3
"${pip[@]}" loguru pytz datasets tenacity sacrebleu evaluate pytablewriter "filelock<4"
