"""Run under torchrun: one training stage through the Trainer, checking ranks agree after every step."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from transformers import TrainerCallback

from prealign.training import build_trainer, load_settings
from prealign.training.distributed import release_process_group


class RanksAgree(TrainerCallback):
    def __init__(self):
        self.agreement: list[bool] = []

    def on_step_end(self, args, state, control, model=None, **kwargs):
        flat = torch.cat([p.detach().flatten() for p in model.parameters()])
        gathered = [torch.empty_like(flat) for _ in range(dist.get_world_size())]
        dist.all_gather(gathered, flat)
        self.agreement.append(all(torch.equal(gathered[0], g) for g in gathered))


def main() -> None:
    settings = load_settings(sys.argv[1], sys.argv[2:])
    trainer = build_trainer(settings)
    agree = RanksAgree()
    trainer.add_callback(agree)
    initial = torch.cat([p.detach().flatten() for p in trainer.model.parameters()]).clone()
    trainer.train()
    final = torch.cat([p.detach().flatten() for p in trainer.model.parameters()])
    rank = dist.get_rank()
    result = {
        "world_size": dist.get_world_size(),
        "trainer_world_size": trainer.args.world_size,
        "backend": dist.get_backend(),
        "steps": trainer.state.global_step,
        "agreement": agree.agreement,
        "changed": not torch.equal(initial, final),
    }
    Path(settings.output_dir, f"rank{rank}.json").write_text(json.dumps(result))
    del trainer, agree
    release_process_group()  # the library's teardown, as `prealign train` runs it


if __name__ == "__main__":
    main()
