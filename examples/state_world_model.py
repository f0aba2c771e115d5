"""seq-JEPA on non-image observations: a world model of a point moving on a torus.

The state is a point s ∈ [0, 1)² on a torus; an action a ∈ [-0.15, 0.15]² moves it
(s' = s + a mod 1). The model never sees s: each observation is 64 numbers, a fixed random
nonlinear embedding of it, tanh(W [sin 2πs; cos 2πs] + b) (16 numbers), next to 48 numbers of
loud noise redrawn at every step (distractors nothing can predict). seq-JEPA (an MLP
encoder, the EMA target, the action encoder, aggregator and predictor of jepa_blocks) learns to
predict the embedding of the next observation from M observations and the actions between them.
After training, a linear probe reads the state back from the encoder's output far better than
from the same network at initialisation: the model has learnt where the point is.

examples:
    python examples/state_world_model.py               # 600 steps, about 1 min on 2 CPU cores
    python examples/state_world_model.py --steps 2000  # longer training

outputs: the printed table (R² of [sin 2πs; cos 2πs] from z, trained vs random-init), and
--out DIR/metrics.json when --out is given.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor, nn

from jepa_blocks import EMATarget, SeqJEPA
from jepa_blocks.metrics import regression_r2
from jepa_blocks.runtime import write_json
from jepa_blocks.train import TrainConfig, fit

__all__ = ["Batch", "StateSequences", "main", "run"]

SIGNAL, NOISE, M = 16, 48, 3
OBS = SIGNAL + NOISE


class Batch(NamedTuple):
    views: Tensor  # (B, M+1, OBS) observations
    actions: Tensor  # (B, M, 2) displacements
    states: Tensor  # (B, M+1, 2) the hidden states (for the probes only)


class StateSequences:
    """Sequences of M+1 observations of a point moved by random actions (seeded per epoch)."""

    def __init__(self, *, batches: int, batch_size: int, seed: int, noise: float = 3.0) -> None:
        g = torch.Generator().manual_seed(1234)  # the observation map is fixed
        self.w, self.b = torch.randn(4, SIGNAL, generator=g), 0.3 * torch.randn(SIGNAL, generator=g)
        self.batches, self.batch_size, self.seed, self.noise, self.epoch = (
            batches, batch_size, seed, noise, 0,
        )  # fmt: skip

    def observe(self, s: Tensor, g: torch.Generator) -> Tensor:
        feats = torch.cat([torch.sin(2 * math.pi * s), torch.cos(2 * math.pi * s)], dim=-1)
        distractors = self.noise * torch.randn(*s.shape[:-1], NOISE, generator=g)
        return torch.cat([torch.tanh(feats @ self.w + self.b), distractors], dim=-1)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.batches

    def __iter__(self) -> Iterator[Batch]:
        g = torch.Generator().manual_seed(self.seed * 10_000 + self.epoch)
        for _ in range(self.batches):
            s0 = torch.rand(self.batch_size, 1, 2, generator=g)
            a = 0.3 * torch.rand(self.batch_size, M, 2, generator=g) - 0.15
            states = torch.cat([s0, s0 + a.cumsum(1)], dim=1) % 1.0
            yield Batch(self.observe(states, g), a, states)


def encoder() -> nn.Module:
    net = nn.Sequential(nn.Linear(OBS, 128), nn.ReLU(), nn.Linear(128, 64))
    net.out_dim = 64  # type: ignore[assignment]  (SeqJEPA.from_encoder reads it)
    return net


@torch.no_grad()
def state_r2(model: SeqJEPA, data: StateSequences) -> float:
    """Linear-probe R² of [sin 2πs; cos 2πs] from the encoder output, on held-out sequences."""
    model.eval()
    z, s = [], []
    for batch in data:
        z.append(model.encode(batch.views).flatten(0, 1))
        s.append(batch.states.flatten(0, 1))
    model.train()
    zs, ss = torch.cat(z), torch.cat(s)
    y = torch.cat([torch.sin(2 * math.pi * ss), torch.cos(2 * math.pi * ss)], dim=-1)
    half = len(zs) // 2
    return regression_r2(zs[:half], y[:half], zs[half:], y[half:], kind="linear").test


def run(*, steps: int = 600, seed: int = 0, out: Path | None = None) -> dict[str, float]:
    torch.manual_seed(seed)
    train = StateSequences(batches=50, batch_size=128, seed=seed)
    test = StateSequences(batches=8, batch_size=128, seed=seed + 1)
    enc = encoder()
    model = SeqJEPA.from_encoder(
        enc, EMATarget(enc, total_steps=steps, base_momentum=0.99), action_dim=2,
        action_embed_dim=16, predictor_hidden=128, depth=1, heads=4, dropout=0.0,
    )  # fmt: skip
    random_init = state_r2(model, test)
    epochs = math.ceil(steps / len(train))
    config = TrainConfig(
        epochs=epochs, max_steps=steps, lr=1e-3, warmup_epochs=1, progress=False, device="cpu"
    )
    result = fit(model, train, config)
    metrics = {"state_r2": state_r2(result.model, test), "state_r2_random_init": random_init}
    print("| metric | trained | random-init |\n|---|---:|---:|")
    print(f"| R² of the state from z | {metrics['state_r2']:.3f} | {random_init:.3f} |")
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "metrics.json", {"metrics": metrics, "steps": result.step})
    return metrics


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=600, help="optimizer steps (default 600)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="write metrics.json here")
    args = parser.parse_args(argv)
    run(steps=args.steps, seed=args.seed, out=args.out)
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
