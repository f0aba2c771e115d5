"""Step 6: local learning. End-to-end training vs the three local stages on the same data.

* ``end-to-end``: the seq-JEPA objective backpropagated through everything (the reference);
* ``stage1``: LPL-style local losses on each of the four encoder blocks beside the end-to-end
  objective;
* ``stage2``: stage 1's encoder frozen, aggregator and predictor trained by local updates;
* ``stage3``: fully local; each encoder block trained by its own LPL loss on its detached input,
  with backward-and-free per block, so at most one block's activations are alive.

Prints, for each, the linear-probe accuracy on z_agg, the R² of the action from [z_1; z_2], the
effective ranks and the peak activation memory of one training step (tensors saved for backward;
also the CUDA peak on a GPU), and writes metrics.json into --out.

    python examples/step6_local.py                          # cpu-demo, all stages
    python examples/step6_local.py --smoke                  # a complete run in seconds
    python examples/step6_local.py local.objective=rate     # per-block coding-rate objective
    python examples/step6_local.py train.epochs=4 local.stages=[end-to-end,stage3]
"""

from __future__ import annotations

from pathlib import Path

from jepa_blocks.local.experiment import main

if __name__ == "__main__":
    raise SystemExit(main(config_dir=Path(__file__).parent / "configs"))
