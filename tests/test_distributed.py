"""Really distributed, on CPU: DDP through the Trainer under torchrun, FSDP2 sharding by the wrap policy."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from data_fixtures import write_llava_set
from test_training import save_tiny, stage_config

HERE = Path(__file__).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(script: Path | str, *args: str, timeout: int = 420) -> subprocess.CompletedProcess:
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(free_port()),
        str(script),
        *args,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)


def rank_results(folder: Path) -> list[dict]:
    return [json.loads((folder / f"rank{r}.json").read_text()) for r in range(2)]


@pytest.mark.e2e
def test_torchrun_ddp_training_keeps_both_ranks_identical(tmp_path):
    data = write_llava_set(tmp_path / "data")
    checkpoint = save_tiny(tmp_path / "ckpt")
    config = stage_config(
        tmp_path,
        data,
        checkpoint,
        output_dir=str(tmp_path / "run"),
        max_steps=4,
        per_device_batch_size=1,
        learning_rate=1e-3,
    )
    (tmp_path / "ddp.yaml").write_text(yaml.safe_dump(config))
    result = torchrun(HERE / "distributed/ddp_train.py", str(tmp_path / "ddp.yaml"))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for rank in rank_results(tmp_path / "run"):
        assert rank["world_size"] == rank["trainer_world_size"] == 2
        assert rank["backend"] == "gloo"
        assert rank["steps"] == 4 and rank["agreement"] == [True] * 4 and rank["changed"]


@pytest.mark.e2e
@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU case: accelerate runs CPU processes as DDP")
def test_fsdp_where_the_trainer_would_not_shard_is_an_error_not_a_silent_ddp_run(tmp_path):
    data = write_llava_set(tmp_path / "data")
    checkpoint = save_tiny(tmp_path / "ckpt")
    config = stage_config(
        tmp_path, data, checkpoint, output_dir=str(tmp_path / "run"), max_steps=2, per_device_batch_size=1
    )
    (tmp_path / "fsdp.yaml").write_text(yaml.safe_dump({**config, "fsdp": True}))
    result = torchrun("-m", "prealign.cli", "train", str(tmp_path / "fsdp.yaml"))  # as the README runs it
    assert result.returncode != 0
    assert "fsdp=true, but the Trainer would not shard here" in result.stderr
    assert not (tmp_path / "run" / "model.safetensors").exists()


@pytest.mark.e2e
def test_fsdp2_shards_every_block_and_trains(tmp_path):
    result = torchrun(HERE / "distributed/fsdp2_step.py", str(tmp_path))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    ranks = rank_results(tmp_path)
    for rank in ranks:
        assert rank["world_size"] == 2 and rank["blocks"] == 7  # 3 target + 2 perceiver + 2 vision layers
        assert rank["all_dtensor"] and rank["shards_add_up_to_the_model"] and rank["holds_a_part"]
        assert rank["losses"][-1] < rank["losses"][0]
    assert ranks[0]["losses"] == ranks[1]["losses"]


def test_wrap_policy_names_the_blocks_of_every_backbone():
    from prealign.tiny import tiny_model
    from prealign.training.distributed import block_class_names

    model, _ = tiny_model("dpa", vision="clip", target="llama", perceiver="qwen3")
    assert block_class_names(model) == ["CLIPEncoderLayer", "LlamaDecoderLayer", "Qwen3DecoderLayer"]
