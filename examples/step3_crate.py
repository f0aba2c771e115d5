"""Step 3: CRATE inside seq-JEPA, next to steps 1 and 2 on the same data.

CRATE (Yu et al., NeurIPS 2023, "White-Box Transformers via Sparse Rate Reduction") replaces
either the aggregator's transformer stack (integration A, arm ``step3-agg``) or the MLP predictor
(integration B, arm ``step3-pred``, a two-token CRATE predictor) of the step-2 model. Every arm
is trained with the shared loop on the same images, view sequences and seed, then probed; the
script prints one column per arm: linacc, R², leakage gaps, effective ranks, ISTA sparsity,
per-layer coding rate R^c, head specialisation and the rotation Δz spectrum (variance fraction
in the top 2 components). Writes step3.json, table.md, plots and one folder per arm into --out.

    python examples/step3_crate.py                          # cpu-demo (MNIST-5k, 4 arms)
    python examples/step3_crate.py --smoke                  # a complete run in seconds (CI)
    python examples/step3_crate.py --preset paper-cifar100  # the paper's configuration (GPU)
    python examples/step3_crate.py --arms step2,step3-both crate.layer=crate-alpha
"""

from __future__ import annotations

from pathlib import Path

from jepa_blocks.train.step3 import main

if __name__ == "__main__":
    raise SystemExit(main(config_dir=Path(__file__).parent / "configs", description=__doc__))
