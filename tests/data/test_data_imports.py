"""Importing the data and metrics packages stays light: no torchvision, matplotlib, sklearn."""

from __future__ import annotations

import subprocess
import sys


def test_import_is_light() -> None:
    code = (
        "import sys, jepa_blocks.data, jepa_blocks.metrics, jepa_blocks.train\n"
        "heavy = ('torchvision', 'matplotlib', 'sklearn', 'mlxtend', 'scipy', 'PIL', 'yaml')\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & set(heavy)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
