"""`prealign` in the VLMEvalKit test environment: the torchvision shim first, then the CLI."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import torchvision_ops  # noqa: F401  (before anything imports torchvision)

from prealign.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
