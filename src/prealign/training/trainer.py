"""Trainer glue: the transformers Trainer with per-module learning rates and length grouping.

Everything else - DDP/FSDP/DeepSpeed, bf16, gradient accumulation, checkpoints and resume,
logging - is the Trainer's own.
"""

from __future__ import annotations

import torch
from torch.utils.data import Sampler
from transformers import Trainer
from transformers.trainer_pt_utils import LengthGroupedSampler


class PrealignTrainer(Trainer):
    """A `Trainer` whose optimizer gives named modules their own learning rate.

    `module_learning_rates` maps a module path (e.g. "model.vision_tower") to its learning rate;
    every other trainable parameter uses `args.learning_rate`. The scheduler scales each group
    from its own base rate, so warmup and cosine decay apply to all of them.
    """

    def __init__(self, *args, module_learning_rates: dict[str, float] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.module_learning_rates = module_learning_rates or {}

    def create_optimizer(self, model=None):
        if self.optimizer is not None or not self.module_learning_rates:
            return super().create_optimizer(model)
        opt_model = self.model if model is None else model
        decay = set(self.get_decay_parameter_names(opt_model))
        groups: dict[tuple[float, float], list] = {}
        for name, param in opt_model.named_parameters():
            if not param.requires_grad:
                continue
            lr = self._learning_rate_of(name)
            weight_decay = self.args.weight_decay if name in decay else 0.0
            groups.setdefault((lr, weight_decay), []).append(param)
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
        param_groups = [{"params": ps, "lr": lr, "weight_decay": wd} for (lr, wd), ps in groups.items()]
        self.optimizer = optimizer_cls(param_groups, **optimizer_kwargs)
        return self.optimizer

    def compute_loss(self, model, inputs, return_outputs=False, **kwargs):
        result = super().compute_loss(model, inputs, return_outputs=return_outputs, **kwargs)
        loss = result[0] if return_outputs else result
        if torch.is_grad_enabled() and not loss.requires_grad:
            # A batch that reaches no trainable parameter - text-only records in stage 1, where only
            # the connector trains - has nothing to teach: backward through it gives no gradient
            # (and no optimizer update) instead of failing.
            loss = loss.detach().requires_grad_()
            result = (loss, *result[1:]) if return_outputs else loss
        return result

    def _learning_rate_of(self, parameter_name: str) -> float:
        """The rate of the innermost named module holding the parameter (a merger inside a tower
        takes the merger's rate, the rest of the tower the tower's)."""
        matches = [prefix for prefix in self.module_learning_rates if f".{prefix}." in f".{parameter_name}"]
        if not matches:
            return self.args.learning_rate
        return self.module_learning_rates[max(matches, key=len)]

    def _get_train_sampler(self, train_dataset=None) -> Sampler | None:
        # Length grouping from the dataset's cheap estimates: the Trainer would otherwise
        # tokenise every record to measure it.
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if self.args.train_sampling_strategy == "group_by_length" and hasattr(dataset, "approximate_lengths"):
            batch = self.args.train_batch_size * self.args.gradient_accumulation_steps
            return EpochSeededLengthGroupedSampler(
                batch, lengths=dataset.approximate_lengths(), seed=self.args.data_seed or self.args.seed
            )
        return super()._get_train_sampler(train_dataset)


class EpochSeededLengthGroupedSampler(LengthGroupedSampler):
    """Length-grouped order drawn from (seed, epoch) alone, so a resumed run sees the same order.

    The stock sampler draws from the global RNG when an epoch starts; a run resumed mid-epoch
    starts that epoch with another RNG state and would train on a different order.
    """

    def __init__(self, batch_size: int, lengths: list[int], seed: int):
        self.seed, self.epoch = seed, 0
        super().__init__(batch_size, lengths=lengths, generator=torch.Generator())

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        self.generator.manual_seed(self.seed + self.epoch)
        return super().__iter__()
