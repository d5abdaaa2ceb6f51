"""What evaluation harnesses ask of a model - a free answer up to stop strings, or the
log-likelihood of a given answer - for a prealign model, through the chat template and placeholder
expansion that training uses. `prealign eval` and the lmms-eval adapter are thin layers over it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image

from ..serving.generation import cut_at_stop

# The longest answer in VLMEvalKit: its prompts may ask for reasoning before the answer.
VLMEVAL_MAX_NEW_TOKENS = 512


@torch.no_grad()
def generate_answers(
    model,
    processor,
    questions: Sequence[str],
    images: Sequence[Sequence[Image.Image]],
    max_new_tokens: int = 32,
    stop: Sequence[str] = (),
) -> list[str]:
    """Greedy answers, left-padded so that every answer starts at the same column; each is cut
    at the first stop string."""
    turns = [[processor.user_turn(q, imgs)] for q, imgs in zip(questions, images, strict=True)]
    texts = [processor.apply_chat_template(turn) for turn in turns]
    inputs = processor(
        text=texts,
        images=[list(imgs) for imgs in images],
        instructions=[processor.perceiver_instruction(turn) for turn in turns],
        padding_side="left",
    ).to(model.device)
    tokenizer = processor.tokenizer
    out = model.generate(
        **inputs,
        max_new_tokens=max_new_tokens,
        do_sample=False,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
    )
    answers = processor.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    return [cut_at_stop(processor.answer_text(answer), stop) for answer in answers]


@torch.no_grad()
def continuation_loglikelihoods(
    model,
    processor,
    questions: Sequence[str],
    continuations: Sequence[str],
    images: Sequence[Sequence[Image.Image]],
) -> list[tuple[float, bool]]:
    """For each question, the summed log-probability of the assistant answering `continuation`,
    and whether greedy decoding would produce exactly those tokens."""
    tokenizer = processor.tokenizer
    turns = [[processor.user_turn(q, imgs)] for q, imgs in zip(questions, images, strict=True)]
    prompts = [processor.apply_chat_template(turn) for turn in turns]
    lengths = []
    for prompt, continuation in zip(prompts, continuations, strict=True):
        head = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        whole = tokenizer(prompt + continuation, add_special_tokens=False)["input_ids"]
        if whole[: len(head)] != head or len(whole) == len(head):
            raise ValueError(
                f"the continuation {continuation!r} does not tokenize as new tokens after the prompt"
            )
        lengths.append(len(whole) - len(head))
    inputs = processor(
        text=[p + c for p, c in zip(prompts, continuations, strict=True)],
        images=[list(imgs) for imgs in images],
        instructions=[processor.perceiver_instruction(turn) for turn in turns],
        padding_side="right",
    ).to(model.device)
    logprobs = model(**inputs).logits.float().log_softmax(-1)
    ends = inputs["attention_mask"].sum(-1).tolist()
    results = []
    for row, (end, n) in enumerate(zip(ends, lengths, strict=True)):
        targets = inputs["input_ids"][row, end - n : end]
        # The logits at position t predict the token at t + 1.
        predicted = logprobs[row, end - n - 1 : end - 1]
        total = predicted.gather(-1, targets.unsqueeze(-1)).sum().item()
        results.append((total, bool((predicted.argmax(-1) == targets).all())))
    return results
