"""In the VLMEvalKit test environment: what VLMEvalKit showed the model and what it answered.

`python vlmeval_items.py DATASET WORK_DIR OUT.json` (with $LMUData set) writes the dataset's items
as a prealign benchmark - each question the text VLMEvalKit's own prompt builder gives, its image
the file VLMEvalKit decoded (relative to $LMUData) - and VLMEvalKit's predictions and overall
accuracy for model `prealign`.
"""

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import pandas as pd
import torchvision_ops  # noqa: F401  (before anything imports torchvision)
from vlmeval.dataset import build_dataset
from vlmeval.smp import LMUDataRoot


def main(dataset_name: str, work_dir: str, out: str) -> None:
    dataset = build_dataset(dataset_name)
    items = []
    for row in range(len(dataset.data)):
        message = dataset.build_prompt(row)
        (image,) = [os.path.relpath(m["value"], LMUDataRoot()) for m in message if m["type"] == "image"]
        (text,) = [m["value"] for m in message if m["type"] == "text"]
        line = dataset.data.iloc[row]
        items.append(
            {
                "id": str(line["index"]),
                "question": text,
                "answer": str(line["answer"]),
                "scoring": "choice",
                "image": image,
            }
        )
    results = Path(work_dir) / "prealign"
    predictions = pd.read_excel(results / f"prealign_{dataset_name}.xlsx")
    accuracy = pd.read_csv(results / f"prealign_{dataset_name}_acc.csv")
    found = {
        "items": items,
        "predictions": {
            str(i): str(p) for i, p in zip(predictions["index"], predictions["prediction"], strict=True)
        },
        "accuracy": float(accuracy["Overall"].iloc[0]),
    }
    Path(out).write_text(json.dumps(found))


if __name__ == "__main__":
    main(*sys.argv[1:])
