"""Through ``fit``: one DDP step on two gloo processes equals the single-process step on the full
batch, with a global coding-rate term and no rescaling anywhere (the DDP convention of the rate)."""

from __future__ import annotations

import os
import tempfile
from typing import NamedTuple

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from jepa_blocks import CodingRate
from jepa_blocks.train.config import TrainConfig
from jepa_blocks.train.loop import fit

pytestmark = pytest.mark.distributed
WORLD = 2
N = 8  # samples per rank


class Out(NamedTuple):
    loss: torch.Tensor
    rate: torch.Tensor


class Model(nn.Module):
    """Linear encoder; loss = mean squared error to a target − λ · global coding rate."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.enc = nn.Linear(6, 5).double()
        self.rate = CodingRate(eps=0.5, distributed="auto")

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> Out:
        z = self.enc(x)
        rate = self.rate(z)
        return Out(((z - y) ** 2).mean() - 0.3 * rate, rate)


class Batch(NamedTuple):
    x: torch.Tensor
    y: torch.Tensor


def data(rank: int | None) -> Batch:
    g = torch.Generator().manual_seed(7)
    x = torch.randn(WORLD * N, 6, generator=g, dtype=torch.float64)
    y = torch.randn(WORLD * N, 5, generator=g, dtype=torch.float64)
    if rank is None:
        return Batch(x, y)
    return Batch(x[rank * N : (rank + 1) * N], y[rank * N : (rank + 1) * N])


def batch_fn(model, batch, device):
    return model(batch.x, batch.y)


def config() -> TrainConfig:
    return TrainConfig(
        epochs=1,
        lr=0.05,
        warmup_epochs=0,
        device="cpu",
        progress=False,
        log_every=1,
        weight_decay=0.0,
    )


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        res = fit(Model(), [data(rank)], config(), batch_fn=batch_fn)
        torch.save(res.model.state_dict(), os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.barrier()  # no rank tears the group down while another still uses it
        dist.destroy_process_group()


def test_ddp_step_equals_single_process_step():
    with tempfile.TemporaryDirectory() as tmp:
        mp.start_processes(
            _worker,
            args=(os.path.join(tmp, "init"), tmp),
            nprocs=WORLD,
            join=True,
            start_method="spawn",
        )
        states = [torch.load(os.path.join(tmp, f"rank{r}.pt")) for r in range(WORLD)]
    single = fit(Model(), [data(None)], config(), batch_fn=batch_fn).model.state_dict()
    initial = Model().state_dict()
    for key in single:
        assert not torch.allclose(single[key], initial[key])  # the step moved the weights
        for state in states:
            torch.testing.assert_close(state[key], single[key], rtol=1e-6, atol=1e-10)
