"""Step 2: drop the teacher. Stop-gradient target plus a coding-rate regularizer on z_agg.

The recipe of step 1 (data, seq-JEPA, fit, probes against the random-init network) with another
target and an anti-collapse term, chosen by --variant (configs/variants/<name>.yaml; the
follow-up repository kaikun213/seq-jepa's experiments A-D, plus a control):

    ema-rate        A: EMA teacher + coding rate
    stopgrad-rate   B (default): the online encoder as its own detached target + coding rate
    symmetric       C: B + the time-reversed prediction task
    sharpening      D: B + DINO-style centering and sharpening of the targets
    stopgrad        stop-gradient without the rate (the control: on cpu-demo it does not
                    collapse, but z_agg uses about a third as many dimensions)

The regularizer is loss = prediction − λ · R(normalize(z_agg)), with R the coding rate
jepa_blocks.CodingRate (model.rate_weight = λ, model.rate_eps = ε).

examples:
    python examples/step2_teacherless.py                        # cpu-demo, stopgrad-rate (~3 min)
    python examples/step2_teacherless.py --variant stopgrad     # the control without the rate
    python examples/step2_teacherless.py --smoke                # a complete run in seconds
    python examples/step2_teacherless.py model.rate_weight=0.01 --out runs/lambda-0.01

outputs (in --out, default runs/step2-<variant>-<preset>): metrics.json, table.md, plots and
checkpoint.pt, as in step 1.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from common import RecipeConfig, parse_cli
from step1_baseline import run

__all__ = ["VARIANTS", "main"]

VARIANTS = ("ema-rate", "stopgrad-rate", "symmetric", "sharpening", "stopgrad")


def main(argv: Sequence[str] | None = None) -> int:
    config, _ = parse_cli(
        RecipeConfig,
        argv,
        step="step2",
        description=__doc__,
        variants=VARIANTS,
        default_variant="stopgrad-rate",
    )
    run(config)
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
