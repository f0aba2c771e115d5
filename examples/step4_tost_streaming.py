"""Step 4: seq-JEPA with a streaming ToST aggregator on long sequences (Wu et al., ICLR 2025).

The transformer aggregator of seq-JEPA (Ghaemi et al., 2025, arXiv:2505.03176) is replaced by
causal token-statistics attention (ToST, arXiv:2412.17810): trained on whole sequences like the
paper's aggregator, it then aggregates a stream of views one view at a time with a state of
constant size. The script trains it on sequences of M_tr views, probes z_agg computed by
streaming (the usual table, trained vs random-init, and the linear accuracy per M_val), and
measures compute and memory against the transformer aggregator: the aggregator alone over N
tokens, the whole seq-JEPA training step over M views, and per-view streaming latency and state
size. Writes metrics.json, the metrics log, a checkpoint and plots into --out.

    python examples/step4_tost_streaming.py                       # cpu-demo (MNIST-5k, M_tr 16)
    python examples/step4_tost_streaming.py --smoke               # a complete run in seconds
    python examples/step4_tost_streaming.py data.num_observed=64  # train on 64-view sequences
    python examples/step4_tost_streaming.py aggregator.readout=agg aggregator.decay=0.99
    python examples/step4_tost_streaming.py aggregator.kind=transformer   # the baseline
"""

from __future__ import annotations

from pathlib import Path

from jepa_blocks.train.step4 import main

if __name__ == "__main__":
    raise SystemExit(main(config_dir=Path(__file__).parent / "configs", description=__doc__))
