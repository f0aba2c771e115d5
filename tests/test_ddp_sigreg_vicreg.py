"""The DDP convention for SIGReg, VICReg and the subspace compression (2 gloo ranks, float64).

As in ``test_ddp_convention.py``: one ``DistributedDataParallel`` step (which averages the ranks'
gradients) with ``loss = prediction + λ·term`` on half a batch per rank equals the
single-process step on the whole batch; a per-rank term (``distributed="none"``) does not.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from jepa_blocks.sigreg import SIGReg, sigreg
from jepa_blocks.subspace import subspace_compression
from jepa_blocks.vicreg import VICRegRegularizer, vicreg_covariance, vicreg_variance

pytestmark = pytest.mark.distributed
WORLD, N, D_IN, D = 2, 8, 6, 5  # N samples per rank
LAMBDA = 0.3


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    x = torch.randn(WORLD * N, D_IN, generator=g, dtype=torch.float64)
    return x, torch.randn(WORLD * N, D, generator=g, dtype=torch.float64)


def _bases() -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    q = torch.linalg.qr(torch.randn(D, 4, generator=g, dtype=torch.float64)).Q
    return q.reshape(D, 2, 2).permute(1, 0, 2)


#: name → term(z); every term is a function of the whole (global) batch.
TERMS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "sigreg": lambda z: sigreg(z, step=5, num_slices=16),
    "sigreg_half": lambda z: sigreg(z, step=6, num_slices=16, grid="half", t_max=3.0),
    "SIGReg": lambda z: SIGReg(num_slices=16).double()(z, step=2),
    "vicreg_variance": lambda z: vicreg_variance(z),
    "vicreg_covariance": lambda z: vicreg_covariance(z),
    "vicreg_biased": lambda z: (
        vicreg_variance(z, unbiased=False) + vicreg_covariance(z, unbiased=False)
    ),
    "VICRegRegularizer": lambda z: VICRegRegularizer()(z),
    "subspace_compression": lambda z: subspace_compression(z, _bases()),
    "subspace_compression_gather": lambda z: subspace_compression(
        z, _bases(), distributed="gather"
    ),
}
LOCAL = {"sigreg_local": lambda z: sigreg(z, step=5, num_slices=16, distributed="none")}


class Model(nn.Module):
    def __init__(self, term: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.enc = nn.Linear(D_IN, D).double()
        self.term = term

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        z = self.enc(x)
        return ((z - y) ** 2).mean() + LAMBDA * self.term(z)


def step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    opt.zero_grad()
    model(x, y).backward()
    opt.step()
    inner = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    return {k: v.detach().clone() for k, v in inner.state_dict().items()}


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        x, y = batch()
        part = slice(rank * N, (rank + 1) * N)
        states = {}
        for name, term in {**TERMS, **LOCAL}.items():
            states[name] = step(nn.parallel.DistributedDataParallel(Model(term)), x[part], y[part])
        torch.save(states, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.barrier()
        dist.destroy_process_group()


def test_one_ddp_step_equals_the_single_process_step() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        mp.start_processes(
            _worker, args=(os.path.join(tmp, "init"), tmp), nprocs=WORLD, join=True,
            start_method="spawn",
        )  # fmt: skip
        per_rank = [torch.load(os.path.join(tmp, f"rank{r}.pt")) for r in range(WORLD)]
    x, y = batch()
    initial = Model(TERMS["sigreg"]).state_dict()
    for name, term in TERMS.items():
        single = step(Model(term), x, y)
        for key in single:
            assert not torch.allclose(single[key], initial[key])
            for state in per_rank:
                torch.testing.assert_close(
                    state[name][key], single[key], rtol=1e-6, atol=1e-10, msg=f"{name}: {key}"
                )
    # the per-rank statistic is a different step (the check above is not vacuous)
    single = step(Model(LOCAL["sigreg_local"]), x, y)
    assert not torch.allclose(per_rank[0]["sigreg_local"]["enc.weight"], single["enc.weight"])
