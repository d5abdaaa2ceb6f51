"""prealign models in lmms-eval: `lmms-eval --model prealign --model_args pretrained=DIR --tasks ...`.

Installing prealign registers the model through the `lmms_eval.models` entry point (`manifest`);
this module is imported only by lmms-eval. Two interfaces, as lmms-eval defines them: the chat
model (`PrealignLmmsChat`, what `--model prealign` picks) answers a task's messages - several
rounds included - through `serving.conversation.Conversations`; the simple model (`PrealignLmms`,
picked by tasks that give a prompt and visuals rather than messages) through `evaluation.answering`.
Both use the chat template and placeholder expansion of training and `prealign eval`. Images only:
a task that hands over videos or audio is refused.
"""

from __future__ import annotations

import torch
from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms
from lmms_eval.models.registry_v2 import ModelManifest
from lmms_eval.protocol import ChatMessages
from PIL import Image
from tqdm import tqdm

from ..assembly import load_saved
from ..images import to_rgb
from ..serving.conversation import Conversations
from .answering import continuation_loglikelihoods, generate_answers


def manifest() -> ModelManifest:
    return ModelManifest(
        model_id="prealign",
        simple_class_path=f"{__name__}.PrealignLmms",
        chat_class_path=f"{__name__}.PrealignLmmsChat",
    )


class PrealignLmms(lmms):
    """A saved prealign model (folder or hub id, with its processor) for lmms-eval; greedy only."""

    def __init__(
        self,
        pretrained: str,
        device: str | None = None,
        dtype: str = "auto",
        batch_size: int | str = 1,
        max_new_tokens: int | str = 256,
        **unused,
    ) -> None:
        super().__init__()
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        model, self.processor = load_saved(pretrained, dtype=dtype)
        self.model = model.to(device)
        self.batch_size = int(batch_size)
        self.max_new_tokens = int(max_new_tokens)

    def _images(self, doc_to_visual, doc_id, task: str, split: str) -> list[Image.Image]:
        visuals = doc_to_visual(self.task_dict[task][split][doc_id]) if doc_to_visual else []
        flat = []
        for visual in visuals if isinstance(visuals, list | tuple) else [visuals]:
            flat += list(visual) if isinstance(visual, list | tuple) else [visual]
        if any(not isinstance(v, Image.Image) for v in flat):
            kinds = sorted({type(v).__name__ for v in flat})
            raise ValueError(f"{task}: prealign models read images only, got {kinds}")
        return [to_rgb(v, f"{task} document {doc_id}") for v in flat]

    def generate_until(self, requests: list[Instance]) -> list[str]:
        answers = []
        batches = range(0, len(requests), self.batch_size)
        for start in tqdm(batches, desc="prealign answering", disable=self.rank != 0):
            chunk = [r.args for r in requests[start : start + self.batch_size]]
            # A batch shares its generation settings; a chunk that mixes them goes one by one.
            same = all(args[1] == chunk[0][1] for args in chunk)
            for group in [chunk] if same else [[args] for args in chunk]:
                settings = group[0][1]
                stop = settings.get("until", [])
                answers += generate_answers(
                    self.model,
                    self.processor,
                    [context for context, *_ in group],
                    [self._images(*visual) for _, _, *visual in group],
                    max_new_tokens=int(settings.get("max_new_tokens", self.max_new_tokens)),
                    stop=[stop] if isinstance(stop, str) else stop,
                )
        return answers

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        results = []
        for context, doc_to_target, doc_to_visual, doc_id, task, split in (r.args for r in requests):
            doc = self.task_dict[task][split][doc_id]
            continuation = doc_to_target if isinstance(doc_to_target, str) else doc_to_target(doc)
            images = self._images(doc_to_visual, doc_id, task, split)
            results += continuation_loglikelihoods(
                self.model, self.processor, [context], [continuation], [images]
            )
        return results

    def generate_until_multi_round(self, requests: list[Instance]) -> list[str]:
        raise NotImplementedError("prealign answers single-round requests, not multi-round tasks")


class PrealignLmmsChat(PrealignLmms):
    """The chat interface: each request's messages (a task's `doc_to_messages`, earlier rounds
    included) answered as one conversation; consecutive requests that share a prefix (the rounds
    of one document) reuse its KV cache."""

    is_simple = False

    def generate_until(self, requests: list[Instance]) -> list[str]:
        chat = Conversations(self.model, self.processor)
        answers = []
        for request in tqdm(requests, desc="prealign answering (chat)", disable=self.rank != 0):
            _, doc_to_messages, settings, doc_id, task, split = request.args
            messages = ChatMessages(messages=doc_to_messages(self.task_dict[task][split][doc_id]))
            stop = settings.get("until", [])
            reply = chat.reply(
                messages.to_hf_messages(),
                max_new_tokens=int(settings.get("max_new_tokens", self.max_new_tokens)),
                temperature=float(settings.get("temperature", 0.0) or 0.0),
                top_p=float(settings.get("top_p", 1.0) or 1.0),
                stop=[stop] if isinstance(stop, str) else stop,
            )
            answers.append(reply.text)
        return answers
