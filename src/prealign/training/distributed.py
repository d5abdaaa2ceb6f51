"""Sharding policy: the repeated transformer blocks of every backbone are the FSDP units.

A block is a module the backbone itself marks as a `GradientCheckpointingLayer` (decoder layers
of the target and perceiver LMs, encoder layers of the vision tower), so the policy follows
whatever backbones the config names, with no list per model family.
"""

from __future__ import annotations

from torch import nn
from transformers.modeling_layers import GradientCheckpointingLayer


def transformer_blocks(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]


def block_class_names(model: nn.Module) -> list[str]:
    """For the Trainer's `fsdp_config={"transformer_layer_cls_to_wrap": ...}`."""
    return sorted({type(m).__name__ for m in transformer_blocks(model)})


def release_process_group() -> None:
    """End a torchrun run; call it once nothing holds the model or optimizer any more.

    With gloo on CPU, destroying the group while the model and optimizer are alive aborts a
    fraction of runs at exit; collecting them first, then a barrier, does not. A no-op outside
    a distributed run.
    """
    import gc

    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()


def fully_shard_model(model: nn.Module, **fsdp_kwargs) -> nn.Module:
    """FSDP2: shard every block, then the rest (embeddings, projector, aligner, heads) as the root."""
    from torch.distributed.fsdp import fully_shard

    for block in transformer_blocks(model):
        fully_shard(block, **fsdp_kwargs)
    fully_shard(model, **fsdp_kwargs)
    return model
