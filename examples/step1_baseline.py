"""Step 1: seq-JEPA with its EMA teacher (Ghaemi et al., 2025, arXiv:2505.03176).

Trains seq-JEPA on action-conditioned view sequences with the shared loop, then probes the
trained network and the same network at initialisation: linear accuracy on z_agg, R² of the
relative action from [z_1; z_2], leakage gaps and effective ranks. Writes metrics.json, the
metrics log, a checkpoint and diagnostic plots into --out.

    python examples/step1_baseline.py                          # cpu-demo (MNIST-5k, ~5 min)
    python examples/step1_baseline.py --smoke                  # a complete run in seconds
    python examples/step1_baseline.py --preset paper-cifar100  # the paper's configuration
    python examples/step1_baseline.py train.epochs=3 model.ema_base=0.996
"""

from __future__ import annotations

from pathlib import Path

from jepa_blocks.train.experiment import main

if __name__ == "__main__":
    raise SystemExit(
        main(step="step1", config_dir=Path(__file__).parent / "configs", description=__doc__)
    )
