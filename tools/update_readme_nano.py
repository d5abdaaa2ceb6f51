"""Render the README's nano results from a committed report: `python tools/update_readme_nano.py`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from prealign.nano.report import readme_with_report

ROOT = Path(__file__).resolve().parents[1]

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--report", default="docs/nano-report", help="folder holding report.json and its plots")
args = parser.parse_args()
readme = ROOT / "README.md"
report = json.loads((ROOT / args.report / "report.json").read_text())
readme.write_text(readme_with_report(readme.read_text(), report, args.report))
print(f"{readme}: nano results rendered from {args.report}/report.json")
