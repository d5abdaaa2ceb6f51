#!/usr/bin/env bash
# The checks that need a GPU (docs/performance.md, "On a GPU"), in one run of under 10 minutes:
#   1. `prealign bench` on the nano backbones in bf16 with SDPA (baseline, DPA, transformers' Llava);
#   2. ten Trainer steps of a DPA model through FSDP (fsdp=true) on one GPU, under torchrun;
#   3. the same through DeepSpeed ZeRO-3 (deepspeed=configs/distributed/zero3.json);
#   4. each trained folder loaded back and generating.
# For a machine that cannot download: run tools/gpu_wheels.sh first where pip works; the wheels in
# .whl/ are installed here (into /tmp/site) when present. Results (a summary, the versions, the bench
# JSON, one log per step) go to RESULTS_DIR: the first argument, else $OUT where set, else
# runs/gpu-check. Exit status: the number of failed steps.
set -uo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
results=$(mkdir -p "${1:-${OUT:-runs/gpu-check}}" && cd "${1:-${OUT:-runs/gpu-check}}" && pwd)
if compgen -G "$repo/.whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        "$repo"/.whl/*.whl || exit 100
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$repo/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
failed=0
step() {  # step NAME COMMAND...: runs it, logs to RESULTS_DIR/NAME.log, one summary line
    local name=$1 start=$SECONDS
    shift
    if "$@" >"$results/$name.log" 2>&1; then
        echo "$name: ok, $((SECONDS - start)) s" | tee -a "$results/summary.txt"
    else
        echo "$name: FAILED (exit $?), $((SECONDS - start)) s; last lines:" | tee -a "$results/summary.txt"
        tail -n 15 "$results/$name.log" | tee -a "$results/summary.txt"
        failed=$((failed + 1))
    fi
}
: >"$results/summary.txt"
python3 - >"$results/versions.txt" 2>&1 <<'PY'
import importlib.metadata as md
import torch
print("gpu:", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none")
for name in ("torch", "transformers", "accelerate", "peft", "deepspeed", "tokenizers", "huggingface_hub"):
    try:
        print(f"{name}: {md.version(name)}")
    except md.PackageNotFoundError:
        print(f"{name}: not installed")
PY
cat "$results/versions.txt"

step bench python3 -m prealign.cli bench --preset nano --device cuda --dtype bfloat16 \
    --attn-implementation sdpa --repeats 5 --json "$results/bench.json"

# The nano recipe's paths (runs/nano/...) in a scratch folder: the shipped backbones, seed 0's data.
work=$(mktemp -d)
cd "$work" || exit 100
mkdir -p runs/nano && ln -s "$repo/src/prealign/assets/nano" runs/nano/backbones
step data python3 -m prealign.cli nano data runs/nano/data --seed 0
# A DPA model built from the backbones (so that every part trains), ten steps of the nano stage 2.
train=(configs/nano/dpa_untrained_perceiver/stage2.yaml model.checkpoint=null
    model.perceiver=runs/nano/backbones/lm_perceiver model.attn_implementation=sdpa
    max_steps=10 save_steps=1000 logging_steps=1 dataloader_num_workers=0)
launch=(torchrun --standalone --nproc_per_node 1 -m prealign.cli train)
step fsdp "${launch[@]}" "${train[@]}" fsdp=true output_dir=out/fsdp
step deepspeed "${launch[@]}" "${train[@]}" deepspeed=configs/distributed/zero3.json output_dir=out/deepspeed
step reload python3 - <<'PY'
import torch
from prealign import PrealignForConditionalGeneration, PrealignProcessor
for name in ("fsdp", "deepspeed"):
    folder = f"out/{name}"
    model = PrealignForConditionalGeneration.from_pretrained(folder, dtype=torch.bfloat16).cuda().eval()
    processor = PrealignProcessor.from_pretrained(folder)
    messages = [{"role": "user", "content": "What colour is the sky?"}]
    inputs = processor.apply_chat_template(messages, tokenize=True).to("cuda")
    out = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    finite = all(torch.isfinite(p).all() for p in model.parameters())
    print(name, "parameters finite:", finite, "reply:", processor.decode(out[0, inputs["input_ids"].shape[1]:]))
    assert finite, f"{folder}: non-finite parameters after training"
PY
cd "$repo" && rm -rf "$work"
echo "failed steps: $failed" | tee -a "$results/summary.txt"
exit "$failed"
