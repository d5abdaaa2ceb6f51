"""Words about scenes: the scene as text, descriptions, questions with answers, arithmetic, facts.

Every question carries its benchmark group (general / reasoning / perception / text), a type and
the rule that scores it (choice letter, yes/no, number, exact), so training data, text corpus
and benchmarks all come from one generator.

A scene in text is its grid: one word per cell in reading order (`large_red_circle`, `empty`, ...)
between two delimiters. That is the layout of an image span - a marker, one vision token per cell
in the same order, a marker - so a connector has a per-token mapping to learn (patch -> the word of
its cell), and position in the sequence means position in the scene for text and images alike
(docs/nano_world.md).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, replace

from .scenes import COLOURS, GRID, SHAPES, SIZES, Scene, SceneObject, sample_scene

LETTERS = "ABCD"
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


@dataclass(frozen=True)
class QA:
    question: str
    answer: str
    group: str  # general | reasoning | perception | text
    kind: str  # e.g. colour_at, count, spatial, arithmetic
    scoring: str  # choice | yes_no | number | exact
    objects: int = 0  # in the scene asked about (0: text-only); lookups get harder with more


CAPTION_PROMPTS = ("describe the image briefly.", "what is in the picture?", "describe the scene.")
SCENE_START, SCENE_END = "scene", "end"  # where an image span has its two marker tokens
EMPTY_CELL = "empty"


def cell_word(obj: SceneObject | None) -> str:
    """One word per cell content (`large_red_circle`, `empty`): what the vision token of the cell
    should map to."""
    return EMPTY_CELL if obj is None else f"{obj.size}_{obj.colour}_{obj.shape}"


CELL_WORDS = (EMPTY_CELL, *(f"{z}_{c}_{s}" for z in SIZES for c in COLOURS for s in SHAPES))


def scene_text(scene: Scene) -> str:
    """The scene as the LMs read it: one word per grid cell in reading order, between two
    delimiters - the layout of an image span (`<image_start>`, a token per cell, `<image_end>`)."""
    by_cell = {(o.row, o.column): o for o in scene.objects}
    words = [cell_word(by_cell.get((r, c))) for r in range(GRID) for c in range(GRID)]
    return " ".join([SCENE_START, *words, SCENE_END])


def describe(scene: Scene) -> str:
    """The canonical description: every object with its position, in reading order."""
    return " ".join(f"a {o.name} at {o.position}." for o in scene.objects)


def caption(scene: Scene) -> str:
    """What the LMs answer when asked to describe a scene, and the stage-1 caption of its image:
    the number of objects, then the description."""
    n = len(scene.objects)
    return f"{NUMBER_WORDS[n]} object{'s' if n > 1 else ''}. {describe(scene)}"


def _colour_at(scene: Scene, rng: random.Random) -> QA:
    obj = rng.choice(scene.objects)
    return QA(f"what colour is the object at {obj.position}?", obj.colour, "perception", "colour_at", "exact")


def _shape_at(scene: Scene, rng: random.Random) -> QA:
    obj = rng.choice(scene.objects)
    return QA(f"what shape is at {obj.position}?", obj.shape, "perception", "shape_at", "exact")


def _exists(scene: Scene, rng: random.Random) -> QA:
    present = {(o.colour, o.shape) for o in scene.objects}
    if rng.random() < 0.5:
        colour, shape = rng.choice(sorted(present))
    else:
        colour, shape = rng.choice(sorted({(c, s) for c in COLOURS for s in SHAPES} - present))
    answer = "yes" if scene.count(shape, colour) else "no"
    return QA(f"is there a {colour} {shape}? answer yes or no.", answer, "perception", "exists", "yes_no")


def _colour_choice(scene: Scene, rng: random.Random) -> QA:
    # The options come first and the object last, next to the answer, as in `_colour_at`: the
    # model finds the colour as it does there, then the letter in front of it.
    obj = rng.choice(scene.objects)
    options = [*rng.sample([c for c in COLOURS if c != obj.colour], 3), obj.colour]
    rng.shuffle(options)
    listed = " ".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(options))
    question = f"{listed}. which letter is the colour of the {obj.shape} at {obj.position}?"
    return QA(question, LETTERS[options.index(obj.colour)], "perception", "colour_choice", "choice")


def _position_of(scene: Scene, rng: random.Random) -> QA:
    # Finding an object by colour and shape is the first step of existence and spatial questions;
    # asking for its position supervises that step with a nine-way answer instead of one bit.
    unique = [o for o in scene.objects if scene.count(o.shape, o.colour) == 1]
    if not unique:
        return _colour_at(scene, rng)
    obj = rng.choice(unique)
    return QA(f"where is the {obj.colour} {obj.shape}?", obj.position, "perception", "position_of", "exact")


def _count(scene: Scene, rng: random.Random) -> QA:
    if rng.random() < 0.5:
        shape = rng.choice(SHAPES)
        return QA(
            f"how many {shape}s are there?", str(scene.count(shape=shape)), "reasoning", "count", "number"
        )
    colour = rng.choice(list(COLOURS))
    return QA(
        f"how many {colour} objects are there?",
        str(scene.count(colour=colour)),
        "reasoning",
        "count",
        "number",
    )


def _total(scene: Scene, rng: random.Random) -> QA:
    a, b = rng.sample(SHAPES, 2)
    answer = str(scene.count(shape=a) + scene.count(shape=b))
    return QA(f"how many {a}s and {b}s are there in total?", answer, "reasoning", "count_sum", "number")


def _compare(scene: Scene, rng: random.Random) -> QA:
    # Half the questions hold, so always answering "no" (the likely answer for two random
    # colours, usually both absent) scores only 50%.
    colours = list(COLOURS)
    a = rng.choice(sorted({o.colour for o in scene.objects}))
    fewer = [c for c in colours if scene.count(colour=c) < scene.count(colour=a)]
    if rng.random() < 0.5:
        b = rng.choice(fewer)
    else:
        not_more = [c for c in colours if c != a and scene.count(colour=c) <= scene.count(colour=a)]
        a, b = rng.choice(not_more), a
    answer = "yes" if scene.count(colour=a) > scene.count(colour=b) else "no"
    return QA(
        f"are there more {a} objects than {b} objects? answer yes or no.",
        answer,
        "reasoning",
        "compare",
        "yes_no",
    )


def relative_position(first: SceneObject, second: SceneObject) -> str:
    """Where `first` lies seen from `second`, axis by axis: "above and left", "below", "right", ..."""
    vertical = "above" if first.row < second.row else "below" if first.row > second.row else ""
    horizontal = "left" if first.column < second.column else "right" if first.column > second.column else ""
    return " and ".join(word for word in (vertical, horizontal) if word)


def _spatial(scene: Scene, rng: random.Random) -> QA:
    # Asked as a relative position rather than "is A left of B? yes or no": each answer then
    # supervises both lookups by name and a comparison on each axis (eight answers, none above
    # ~20%), where one yes/no bit stayed at the majority answer within the pre-training budget.
    # Only objects their colour and shape name unambiguously can be compared by name.
    unique = [o for o in scene.objects if scene.count(o.shape, o.colour) == 1]
    if len(unique) < 2:
        return _count(scene, rng)
    first, second = rng.sample(unique, 2)
    question = f"where is the {first.colour} {first.shape} relative to the {second.colour} {second.shape}?"
    return QA(question, relative_position(first, second), "reasoning", "spatial", "exact")


def _how_many_objects(scene: Scene, rng: random.Random) -> QA:
    return QA("how many objects are there?", str(len(scene.objects)), "general", "total_objects", "number")


def _which_description(scene: Scene, rng: random.Random, distractors: list[Scene]) -> QA:
    options = [describe(s) for s in distractors[:3]] + [describe(scene)]
    rng.shuffle(options)
    listed = " ".join(f"{LETTERS[i]}. {text}" for i, text in enumerate(options))
    question = f"which description matches the image? {listed} answer with the letter."
    return QA(question, LETTERS[options.index(describe(scene))], "general", "match_description", "choice")


SCENE_QUESTIONS: tuple[Callable[[Scene, random.Random], QA], ...] = (
    _colour_at,
    _shape_at,
    _exists,
    _colour_choice,
    _count,
    _total,
    _compare,
    _spatial,
    _how_many_objects,
    _position_of,
)


# The LM corpus asks the question types that need two lookups (a conjunction, two objects, two
# counts, an option list) more often than the one-lookup types a tiny LM learns first; spatial
# relations and the option list, learned last, most often.
CORPUS_QUESTION_WEIGHTS = (1, 1, 2, 3, 1, 1, 2, 3, 0.5, 2)


def scene_question(
    scene: Scene,
    rng: random.Random,
    distractors: list[Scene] | None = None,
    weights: tuple[float, ...] | None = None,
) -> QA:
    """A random question about the scene (with distractor scenes, possibly a description match);
    `weights` (one per SCENE_QUESTIONS entry) skews the draw."""
    if distractors and rng.random() < 1 / (len(SCENE_QUESTIONS) + 1):
        qa = _which_description(scene, rng, distractors)
    elif weights is None:
        qa = rng.choice(SCENE_QUESTIONS)(scene, rng)
    else:
        qa = rng.choices(SCENE_QUESTIONS, weights)[0](scene, rng)
    return replace(qa, objects=len(scene.objects))


# Text-only knowledge: arithmetic and an invented fact base, for pre-training and forgetting.
ARITHMETIC_MAX = 20
_PLACES = ("zorbia", "quellan", "marrow", "tindle", "ospry", "vexholm", "larkin", "dunmere")
_CAPITALS = ("quell", "amber", "sorn", "pike", "hollow", "rime", "fenwick", "garth")
_ANIMALS = ("fox", "heron", "otter", "lynx", "moth", "newt", "crane", "badger")
FACTS = tuple(
    [(f"what is the capital of {p}?", c) for p, c in zip(_PLACES, _CAPITALS, strict=True)]
    + [(f"which animal lives in {p}?", a) for p, a in zip(_PLACES, _ANIMALS, strict=True)]
)


def is_held_out_pair(a: int, b: int) -> bool:
    """Addition pairs reserved for the text benchmark: never in the training corpus."""
    return (a * 7 + b * 3) % 10 == 0


def arithmetic(rng: random.Random, held_out: bool) -> QA:
    while True:
        a, b = rng.randint(0, ARITHMETIC_MAX), rng.randint(0, ARITHMETIC_MAX)
        if is_held_out_pair(a, b) == held_out:
            return QA(f"what is {a} plus {b}?", str(a + b), "text", "arithmetic", "number")


def fact(rng: random.Random) -> QA:
    question, answer = rng.choice(FACTS)
    return QA(question, answer, "text", "fact", "exact")


def text_scene_question(scene: Scene, rng: random.Random, weights: tuple[float, ...] | None = None) -> QA:
    """A scene question with the scene given as text: scene reasoning in the LM's text space."""
    qa = scene_question(scene, rng, weights=weights)
    question = f"{scene_text(scene)} {qa.question}"
    return QA(question, qa.answer, "text", f"text_{qa.kind}", qa.scoring, qa.objects)


def text_description(scene: Scene, rng: random.Random) -> QA:
    """A request to describe a scene given as text; the answer is the stage-1 caption."""
    question = f"{scene_text(scene)} {rng.choice(CAPTION_PROMPTS)}"
    return QA(question, caption(scene), "text", "text_description", "exact", len(scene.objects))


# The LM corpus, by conversation: scene questions (the skills a VLM should carry over to images),
# descriptions (what stage 1 aligns to; ~15 supervised tokens each against 1-3 for an answer, so
# a fifth of the conversations is about half the supervised tokens), addition and facts (the text
# skills whose forgetting is measured).
CORPUS_MIX = {"scene_question": 0.6, "description": 0.2, "arithmetic": 0.15, "fact": 0.05}


def corpus_conversation(rng: random.Random, max_objects: int, questions: int) -> list[QA]:
    """One LM pre-training conversation of `questions` turns: about one scene (its first turn
    gives the scene as text), or addition, or facts."""
    kind = rng.choices(list(CORPUS_MIX), list(CORPUS_MIX.values()))[0]
    if kind in ("scene_question", "description"):
        scene = sample_scene(rng, max_objects=max_objects)
        first = (
            text_scene_question(scene, rng, CORPUS_QUESTION_WEIGHTS)
            if kind == "scene_question"
            else text_description(scene, rng)
        )
        return [first] + [
            scene_question(scene, rng, weights=CORPUS_QUESTION_WEIGHTS) for _ in range(questions - 1)
        ]
    if kind == "arithmetic":
        return [arithmetic(rng, held_out=False) for _ in range(questions)]
    return [fact(rng) for _ in range(questions)]


def as_messages(turns: list[QA]) -> list[dict[str, str]]:
    """A conversation in the chat-template format: each question a user turn, its answer the reply."""
    return [
        m
        for qa in turns
        for m in ({"role": "user", "content": qa.question}, {"role": "assistant", "content": qa.answer})
    ]
