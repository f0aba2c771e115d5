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

Head to head: --regularizer and --target replace the variant's choice (they become the
overrides model.regularizer=... and model.target=..., applied after the variant; key=value
overrides still come last; the default --out gains their values). Each regularizer has its
own weight λ (model.rate_weight, sigreg_weight, vicreg_weight, subspace_weight):

    --regularizer none          the paper's objective
    --regularizer coding-rate   − rate_weight · R(z_agg / |z_agg|)         (a rate, λ = 0.001)
    --regularizer sigreg        + sigreg_weight · SIGReg(z_agg)     (a penalty, λ = 0.05, LeJEPA)
    --regularizer vicreg        + vicreg_weight · (25 v(z_agg) + c(z_agg))  (a penalty, λ = 0.04)
    --regularizer subspace      − subspace_weight · ΔR(z): z split into an invariant and an
                                equivariant part (parts.SubspaceRateReduction); the parts are
                                probed too (inv_* / eq_* in metrics.json)
    --target stopgrad | ema | online   detached online encoder | EMA teacher | the online
                                encoder with gradient (no stop-gradient, as LeJEPA)

The coding rate, SIGReg and VICReg act on z_agg (model.rate_on); the subspace term on z.

examples:
    python examples/step2_teacherless.py                        # cpu-demo, stopgrad-rate (~3 min)
    python examples/step2_teacherless.py --variant stopgrad     # the control without the rate
    python examples/step2_teacherless.py --smoke                # a complete run in seconds
    python examples/step2_teacherless.py model.rate_weight=0.01 --out runs/lambda-0.01
    python examples/step2_teacherless.py --regularizer sigreg --target online --out runs/lejepa
    python examples/step2_teacherless.py --regularizer subspace --out runs/subspace
    # the collapse-prone preset (no BatchNorm after the encoder or in the predictor):
    python examples/step2_teacherless.py --regularizer vicreg model.encoder_norm=none \\
        model.predictor_norm=none --out runs/vicreg-no-bn

outputs (in --out, default runs/step2-<variant>-<preset>): metrics.json, table.md, plots and
checkpoint.pt, as in step 1.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import get_args

from common import RecipeConfig, parse_cli
from parts import RegularizerName, TargetName
from step1_baseline import run

__all__ = ["REGULARIZERS", "TARGETS", "VARIANTS", "main"]

VARIANTS = ("ema-rate", "stopgrad-rate", "symmetric", "sharpening", "stopgrad")
REGULARIZERS: tuple[str, ...] = get_args(RegularizerName)
TARGETS: tuple[str, ...] = get_args(TargetName)


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--regularizer",
        choices=REGULARIZERS,
        default=None,
        help="the anti-collapse term (model.regularizer; default: the variant's)",
    )
    parser.add_argument(
        "--target",
        choices=TARGETS,
        default=None,
        help="the prediction target (model.target; default: the variant's)",
    )


def _overrides(args: argparse.Namespace) -> list[str]:
    extra = []
    if args.regularizer is not None:
        extra.append(f"model.regularizer={args.regularizer}")
    if args.target is not None:
        extra.append(f"model.target={args.target}")
    return extra


def main(argv: Sequence[str] | None = None) -> int:
    config, _ = parse_cli(
        RecipeConfig,
        argv,
        step="step2",
        description=__doc__,
        variants=VARIANTS,
        default_variant="stopgrad-rate",
        add_arguments=_add_arguments,
        extra_overrides=_overrides,
        name_extra=True,
    )
    run(config)
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
