"""End to end: the `prealign` command as a user runs it."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.e2e
def test_smoke_command_passes_for_every_variant():
    result = subprocess.run(
        [sys.executable, "-m", "prealign.cli", "smoke", "--new-tokens", "4"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "8/8 variants passed" in result.stdout
    for variant in ("baseline", "dpa_early_fusion", "vit_only", "large_mlp"):
        assert variant in result.stdout


def test_help_lists_the_commands(capsys):
    from prealign.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "smoke" in capsys.readouterr().out
