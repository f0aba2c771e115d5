"""Step 5: streaming continual self-supervised learning — protocols, replay, forgetting.

Trains seq-JEPA in a single pass over MNIST-5k view sequences under two protocols — A, a
stationary i.i.d. stream, and B, class-incremental splits (Split-MNIST) — with no buffer and with
FIFO, reservoir and MinRed replay buffers at two memory budgets (Purushwalkam, Morgado & Gupta,
2022). Probes the network at 25/50/75/100 % of the stream and at every split end, and prints the
replay ablation table: final linear-probe accuracy, equivariance R², and for B the average
accuracy, forgetting, backward and forward transfer (Lopez-Paz & Ranzato, 2017) from the
accuracy matrix over splits. Writes metrics.json and the forgetting plots into --out.

    python examples/step5_streaming_continual.py                  # cpu-demo (~10 min, 2 cores)
    python examples/step5_streaming_continual.py --smoke          # a complete run in seconds
    python examples/step5_streaming_continual.py protocols=[B] stream.repeats=2
    python examples/step5_streaming_continual.py "mitigations=[ewc, si]" buffers=[none]
"""

from __future__ import annotations

from jepa_blocks.streaming.experiment import main

if __name__ == "__main__":
    raise SystemExit(main(description=__doc__))
