"""Pre-training the nano world's backbones on the transformers Trainer.

- Language models (Qwen3 architecture): a language-model loss on the replies of chat
  conversations - answers to questions about scenes given as text, descriptions of those scenes,
  arithmetic and invented facts - so scene reasoning and the captions stage 1 aligns to live in
  the LMs' text space before any image is seen.
- Vision tower (SigLIP architecture): the sigmoid contrastive loss on image-caption pairs, with
  the SigLIP paper's logit initialisation (scale ln 10, bias -10); transformers' default init
  left a prototype at chance.
"""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from transformers import (
    Qwen3Config,
    Qwen3ForCausalLM,
    SiglipConfig,
    SiglipImageProcessorPil,
    SiglipModel,
    Trainer,
    TrainingArguments,
)

from ..data.encoding import IGNORE_INDEX
from ..evaluation import score
from ..padding import pad_rows, pad_with_mask
from ..training.run import last_complete_checkpoint
from .language import CELL_WORDS, EMPTY_CELL, arithmetic, caption, fact, text_description, text_scene_question
from .scenes import GRID, IMAGE_SIZE, render, sample_scene
from .streams import CaptionStream, CorpusStream, encode_qa


@dataclass(frozen=True)
class LMSize:
    hidden: int
    layers: int
    heads: int
    kv_heads: int


# The perceiver : target ratio follows the paper's 0.6B : 4B as far as CPU time allows.
LM_SIZES = {
    "tiny": LMSize(hidden=64, layers=2, heads=4, kv_heads=2),  # tests
    "perceiver": LMSize(hidden=128, layers=4, heads=4, kv_heads=2),
    "target": LMSize(hidden=256, layers=6, heads=8, kv_heads=4),
}


def lm_config(size: LMSize, tokenizer) -> Qwen3Config:
    """The LM's config, its special tokens the tokenizer's (a VLM built on it then agrees with its
    processor, and the Trainer has nothing to realign)."""
    return Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=size.hidden,
        intermediate_size=4 * size.hidden,
        num_hidden_layers=size.layers,
        num_attention_heads=size.heads,
        num_key_value_heads=size.kv_heads,
        head_dim=size.hidden // size.heads,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def pad_lm_batch(batch: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad corpus examples to the batch's longest; padding is masked and unsupervised."""
    input_ids, attention_mask = pad_with_mask([b["input_ids"] for b in batch], pad_id, "right")
    labels = pad_rows([b["labels"] for b in batch], IGNORE_INDEX, "right")
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}


def pack_lm_batch(batch: list[dict], pad_id: int, row_length: int = 128) -> dict[str, torch.Tensor]:
    """The examples of `pad_lm_batch`, several to a row: a padded batch of the nano corpus is
    ~40% padding. Each example keeps its own position ids from 0, which transformers reads as
    separate sequences (a block-diagonal causal mask, given no attention mask and no cache), so
    the loss is the padded batch's. Rows are filled first-fit, longest example first."""
    row_length = max(row_length, *(len(b["input_ids"]) for b in batch))
    rows: list[list[dict]] = []
    used: list[int] = []
    for example in sorted(batch, key=lambda b: -len(b["input_ids"])):
        n = len(example["input_ids"])
        i = next((i for i, u in enumerate(used) if u + n <= row_length), len(rows))
        if i == len(rows):
            rows.append([])
            used.append(0)
        rows[i].append(example)
        used[i] += n
    width = max(used)
    out = {
        "input_ids": torch.full((len(rows), width), pad_id),
        "labels": torch.full((len(rows), width), IGNORE_INDEX),
        "position_ids": torch.zeros((len(rows), width), dtype=torch.long),
    }
    for i, row in enumerate(rows):
        start = 0
        for example in row:
            end = start + len(example["input_ids"])
            out["input_ids"][i, start:end], out["labels"][i, start:end] = (
                example["input_ids"],
                example["labels"],
            )
            out["position_ids"][i, start:end] = torch.arange(end - start)
            start = end
        # A row's padding is one more sequence (positions from 0 again) that no real token sees.
        out["position_ids"][i, start:] = torch.arange(width - start)
    return out


def _arguments(
    out_dir: str | Path, steps: int, batch: int, lr: float, seed: int, bf16: bool
) -> TrainingArguments:
    return TrainingArguments(
        output_dir=str(out_dir),
        max_steps=steps,
        per_device_train_batch_size=batch,
        learning_rate=lr,
        lr_scheduler_type="cosine",
        warmup_steps=0.05,
        weight_decay=0.01,
        logging_steps=max(1, steps // 20),
        save_steps=max(1, steps // 4),
        save_total_limit=1,
        seed=seed,
        bf16=bf16,
        use_cpu=not torch.cuda.is_available(),
        report_to="none",
        remove_unused_columns=False,
        dataloader_num_workers=0,
    )


def pretrain_lm(
    tokenizer,
    out_dir: str | Path,
    size: str = "perceiver",
    *,
    steps: int,
    batch: int,
    lr: float,
    seed: int = 0,
    bf16: bool = True,
    resume: bool = True,
    row_length: int | None = None,
) -> Qwen3ForCausalLM:
    """Train a Qwen3 LM on the nano corpus stream; saves a normal HF checkpoint folder.

    With `row_length`, each batch's examples are packed into rows of that many tokens
    (`pack_lm_batch`) instead of padded to the batch's longest: the same loss, 1.3-1.6x faster
    per step (`benchmarks/nano_lm_padding.py`)."""
    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(lm_config(LM_SIZES[size], tokenizer))
    compose_cell_embeddings(model, tokenizer)
    # With a cache, transformers drops the packed-sequence mask and the examples of a row would
    # see each other; training needs none.
    model.config.use_cache = False
    collate = (
        partial(pad_lm_batch, pad_id=tokenizer.pad_token_id)
        if row_length is None
        else partial(pack_lm_batch, pad_id=tokenizer.pad_token_id, row_length=row_length)
    )
    trainer = Trainer(
        model=model,
        args=_arguments(out_dir, steps, batch, lr, seed, bf16),
        train_dataset=CorpusStream(tokenizer, seed=seed, total=steps * batch),
        data_collator=collate,
    )
    trainer.train(resume_from_checkpoint=_last_checkpoint(out_dir) if resume else None)
    model.config.use_cache = True
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return model


@torch.no_grad()
def compose_cell_embeddings(model, tokenizer) -> None:
    """Start each cell word's embedding as the sum of its attribute words' (`large_red_circle` =
    `large` + `red` + `circle`), as new tokens are often initialised from their pieces. From a
    random start, the four shapes of one size and colour stayed one point in embedding space
    through 6,000 steps (shape unreadable from the embeddings, colour and size perfectly), and
    every skill that names a shape stayed at the majority answer (docs/nano_world.md)."""
    embeddings = model.get_input_embeddings().weight
    for word in CELL_WORDS:
        if word == EMPTY_CELL:
            continue
        parts = tokenizer.convert_tokens_to_ids(word.split("_"))
        embeddings[tokenizer.convert_tokens_to_ids(word)] = embeddings[parts].sum(0)


def _last_checkpoint(out_dir) -> str | None:
    return last_complete_checkpoint(out_dir)


def lm_eval_items(n_per_kind: int, seed: int = 12345) -> list:
    """Held-out text items per kind (a seed no training stream uses; arithmetic on held-out pairs)."""
    rng = random.Random(f"eval/{seed}")
    by_kind: dict[str, list] = defaultdict(list)
    while min((len(v) for v in by_kind.values()), default=0) < n_per_kind or len(by_kind) < 10:
        qa = rng.choice(
            [
                lambda: text_scene_question(sample_scene(rng), rng),
                lambda: text_description(sample_scene(rng), rng),
                lambda: arithmetic(rng, held_out=True),
                lambda: fact(rng),
            ]
        )()
        if len(by_kind[qa.kind]) < n_per_kind:
            by_kind[qa.kind].append(qa)
        if sum(len(v) for v in by_kind.values()) > 40 * n_per_kind:
            break
    return [qa for items in by_kind.values() for qa in items]


# Scenes with at least this many objects: a lookup there can no longer pass as a lucky guess
# between one or two candidates, so their score ("busy") shows whether an LM really reads.
BUSY_SCENE = 3


@torch.no_grad()
def evaluate_lm(model, tokenizer, items: list, batch: int = 64) -> dict[str, dict[str, float]]:
    """Greedy answers per kind, scored by the kind's rule against its majority-answer baseline;
    scene kinds also on their busy scenes alone."""
    model.eval()
    predictions: dict[str, list[str]] = defaultdict(list)
    for start in range(0, len(items), batch):
        chunk = items[start : start + batch]
        encoded = [encode_qa(tokenizer, qa) for qa in chunk]
        # The prompt is everything before the reply (the template's generation prompt included).
        prompts = [e["input_ids"][: int((e["labels"] != IGNORE_INDEX).nonzero()[0])] for e in encoded]
        replies = [int((e["labels"] != IGNORE_INDEX).sum()) for e in encoded]
        length = max(len(p) for p in prompts)
        ids = torch.full((len(chunk), length), tokenizer.pad_token_id)
        mask = torch.zeros_like(ids)
        for i, p in enumerate(prompts):
            ids[i, length - len(p) :], mask[i, length - len(p) :] = p, 1
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=max(replies) + 2,
            do_sample=False,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        for qa, row in zip(chunk, out[:, length:], strict=True):
            predictions[qa.kind].append(tokenizer.decode(row, skip_special_tokens=True))
    by_kind = defaultdict(list)
    for qa in items:
        by_kind[qa.kind].append(qa)
    scores = {}
    for kind, qas in by_kind.items():
        scores[kind] = score(qas[0].scoring, predictions[kind], [qa.answer for qa in qas])
        busy = [i for i, qa in enumerate(qas) if qa.objects >= BUSY_SCENE]
        if busy:
            busy_predictions = [predictions[kind][i] for i in busy]
            scores[kind]["busy"] = score(qas[0].scoring, busy_predictions, [qas[i].answer for i in busy])
    return scores


@torch.no_grad()
def answer_loss(model, tokenizer, items: list) -> float:
    """Mean cross-entropy (nats per token) on the reply tokens of held-out items."""
    model.eval()
    batch = pad_lm_batch([encode_qa(tokenizer, qa) for qa in items], tokenizer.pad_token_id)
    return model(**batch).loss.item()


def description_items(n: int, seed: int = 12345) -> list:
    """Held-out requests to describe a scene given as text (a seed no training stream uses)."""
    rng = random.Random(f"describe/{seed}")
    return [text_description(sample_scene(rng), rng) for _ in range(n)]


def unigram_loss(tokenizer, items: list) -> float:
    """Cross-entropy of the reply tokens under their own unigram frequencies: what a model that
    ignores the prompt can reach at best, the level a caption loss must go well below."""
    replies = []
    for qa in items:
        labels = encode_qa(tokenizer, qa)["labels"]
        replies.append(labels[labels != IGNORE_INDEX].tolist())
    return unigram_entropy(replies)


def unigram_entropy(sequences: list[list[int]]) -> float:
    """Nats per token of `sequences` under their own token frequencies."""
    counts = Counter(token for sequence in sequences for token in sequence)
    total = sum(counts.values())
    return -sum(c * math.log(c / total) for c in counts.values()) / total


def siglip_config(
    vocab_size: int, image_size: int = IMAGE_SIZE, hidden: int = 128, layers: int = 4
) -> SiglipConfig:
    """A 4-layer 128-d tower with one patch per grid cell: its 9 tokens are the 9 cells, in the
    order the LMs read a scene as text."""
    return SiglipConfig(
        text_config=dict(
            vocab_size=vocab_size,
            hidden_size=hidden,
            intermediate_size=4 * hidden,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=48,
            pad_token_id=0,
            bos_token_id=None,  # SigLIP's text tower uses neither; its defaults name ids of a 32k vocabulary
            eos_token_id=None,
        ),
        vision_config=dict(
            hidden_size=hidden,
            intermediate_size=4 * hidden,
            num_hidden_layers=layers,
            num_attention_heads=4,
            image_size=image_size,
            patch_size=image_size // GRID,
        ),
    )


def pretrain_vit(
    tokenizer,
    out_dir: str | Path,
    *,
    steps: int,
    batch: int,
    lr: float = 3e-4,
    seed: int = 0,
    image_size: int = IMAGE_SIZE,
    bf16: bool = True,
    resume: bool = True,
    hidden: int,
    layers: int,
) -> SiglipModel:
    """Sigmoid contrastive pre-training of a tiny SigLIP on rendered scenes and their captions."""
    torch.manual_seed(seed)
    model = SiglipModel(siglip_config(len(tokenizer), image_size, hidden, layers))
    with torch.no_grad():
        model.logit_scale.fill_(math.log(10.0))
        model.logit_bias.fill_(-10.0)
    processor = SiglipImageProcessorPil(size={"height": image_size, "width": image_size})
    stream = CaptionStream(processor, tokenizer, seed=seed, total=steps * batch, image_size=image_size)

    def collate(b):
        return {
            "input_ids": torch.stack([x["input_ids"] for x in b]),
            "pixel_values": torch.stack([x["pixel_values"] for x in b]),
            "return_loss": True,
        }

    trainer = Trainer(
        model=model,
        args=_arguments(out_dir, steps, batch, lr, seed, bf16),
        train_dataset=stream,
        data_collator=collate,
    )
    trainer.train(resume_from_checkpoint=_last_checkpoint(out_dir) if resume else None)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return model


def retrieval_pairs(
    tokenizer, n: int = 100, seed: int = 54321, image_size: int = IMAGE_SIZE
) -> dict[str, torch.Tensor]:
    """Held-out (image, caption) pairs from a seed no training stream uses."""
    processor = SiglipImageProcessorPil(size={"height": image_size, "width": image_size})
    stream = CaptionStream(processor, tokenizer, seed=seed, total=0, image_size=image_size)
    rng = random.Random(f"retrieval/{seed}")
    pairs = []
    for _ in range(n):
        scene = sample_scene(rng)
        pairs.append(stream.encode(render(scene, image_size), caption(scene)))
    return {
        "input_ids": torch.stack([p["input_ids"] for p in pairs]),
        "pixel_values": torch.stack([p["pixel_values"] for p in pairs]),
    }


@torch.no_grad()
def evaluate_retrieval(model: SiglipModel, pairs: dict[str, torch.Tensor]) -> dict[str, float]:
    """Image -> caption top-1 among the pairs (chance: 1/n), and the held-out sigmoid loss."""
    model.eval()
    out = model(**pairs, return_loss=True)
    n = pairs["input_ids"].shape[0]
    top1 = (out.logits_per_image.argmax(-1) == torch.arange(n)).float().mean().item()
    return {"top1": top1, "chance": 1 / n, "loss": out.loss.item()}
