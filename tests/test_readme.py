"""The README's nano results are the committed report's, rendered from its report.json."""

from __future__ import annotations

import json
from pathlib import Path

from prealign.nano.report import PERCEIVER_VLM, main_table, readme_with_report

ROOT = Path(__file__).parents[1]


def test_the_readme_shows_the_committed_nano_report():
    readme = (ROOT / "README.md").read_text()
    report = json.loads((ROOT / "docs/nano-report/report.json").read_text())
    assert readme == readme_with_report(readme, report, "docs/nano-report"), (
        "README.md's nano results differ from docs/nano-report/report.json: run tools/update_readme_nano.py"
    )
    for plot in ("scores.png", "training_curves.png", "modality_gap.png", "layer_similarity.png"):
        assert (ROOT / "docs/nano-report" / plot).is_file(), plot


def test_the_main_table_lists_models_in_the_run_order_not_report_json_key_order():
    # report.json is written with sorted keys; the table must not inherit that order.
    report = json.loads((ROOT / "docs/nano-report/report.json").read_text())
    rows = [line.split("|")[1].strip() for line in main_table(report)[2:]]
    perceiver_vlm = [PERCEIVER_VLM] if PERCEIVER_VLM in report["models"] else []
    expected = perceiver_vlm + report["variants"]
    assert rows == expected
