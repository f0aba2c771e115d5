"""Step 2: drop the teacher. Stop-gradient target plus a coding-rate regularizer on z_agg.

Variants (the follow-up repository kaikun213/seq-jepa's experiments A-D, plus a control):

* ``ema-rate`` (A): EMA teacher + coding rate;
* ``stopgrad-rate`` (B, default): the online encoder as its own detached target + coding rate;
* ``symmetric`` (C): B + the time-reversed prediction task;
* ``sharpening`` (D): B + DINO-style centering and sharpening of the targets;
* ``stopgrad``: stop-gradient without the rate (the control: on cpu-demo it does not collapse,
  but z_agg uses about a third as many dimensions).

Trains with the shared loop, then probes the trained network next to the same network at
initialisation and writes metrics.json (metrics, config, gate verdict) and plots into --out.

    python examples/step2_teacherless.py                        # cpu-demo, stopgrad-rate
    python examples/step2_teacherless.py --variant stopgrad     # the control without the rate
    python examples/step2_teacherless.py --smoke                # a complete run in seconds
    python examples/step2_teacherless.py model.rate_weight=0.1 train.epochs=4
"""

from __future__ import annotations

from pathlib import Path

from jepa_blocks.train.experiment import main

if __name__ == "__main__":
    raise SystemExit(
        main(step="step2", config_dir=Path(__file__).parent / "configs", description=__doc__)
    )
