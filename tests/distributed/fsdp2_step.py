"""Run under torchrun: shard a DPA model with FSDP2 (`fully_shard`, gloo on CPU) and train a step."""

from __future__ import annotations

import gc
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from PIL import Image
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import DTensor

from prealign.tiny import tiny_model
from prealign.training.distributed import fully_shard_model, transformer_blocks


def main() -> None:
    dist.init_process_group("gloo")
    torch.manual_seed(0)
    model, processor = tiny_model("dpa", target="llama")
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)) for _ in range(2)]
    prompt = processor.apply_chat_template([{"role": "user", "content": "<image> and <image>?"}])
    batch = processor(text=[prompt], images=images)
    full_shapes = {n: p.shape for n, p in model.named_parameters()}
    blocks = transformer_blocks(model)

    fully_shard_model(model, mesh=init_device_mesh("cpu", (dist.get_world_size(),)))
    sharded = {n: p for n, p in model.named_parameters()}
    all_dtensor = all(isinstance(p, DTensor) for p in sharded.values())
    local = torch.tensor(sum(p.to_local().numel() for p in sharded.values()))
    dist.all_reduce(local)
    full = sum(math.prod(shape) for shape in full_shapes.values())
    mine = sum(p.to_local().numel() for p in sharded.values())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(3):
        loss = model(**batch, labels=batch["input_ids"]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    result = {
        "world_size": dist.get_world_size(),
        "blocks": len(blocks),
        "all_dtensor": all_dtensor,
        "shards_add_up_to_the_model": int(local) == full,
        "holds_a_part": mine < full,
        "losses": losses,
    }
    Path(sys.argv[1], f"rank{dist.get_rank()}.json").write_text(json.dumps(result))
    del model, optimizer
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
