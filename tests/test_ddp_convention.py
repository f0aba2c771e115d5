"""The DDP convention of global terms, in a plain user-written DDP loop (2 gloo ranks, float64).

For every global term, one optimizer step of ``DistributedDataParallel`` (which averages the
ranks' parameter gradients) with ``loss = prediction + λ·term`` on half a batch per rank must
equal the single-process step on the whole batch, and a per-rank term (``distributed="none"``)
must not. ``test_rate_distributed.py`` checks the collectives' values and per-rank gradients;
this file checks the training step a user gets.
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

from jepa_blocks import (
    LocalCodingRate,
    coding_rate,
    rate_reduction,
    simdino_expansion,
    subspace_rate_reduction,
    total_coding_rate,
    variational_rate,
)
from jepa_blocks.sigreg import SIGReg, sigreg
from jepa_blocks.subspace import subspace_compression
from jepa_blocks.vicreg import VICRegRegularizer, vicreg_covariance, vicreg_variance

pytestmark = pytest.mark.distributed
WORLD, N, D_IN, D = 2, 8, 6, 5  # N samples per rank
LAMBDA = 0.3


def batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    x = torch.randn(WORLD * N, D_IN, generator=g, dtype=torch.float64)
    y = torch.randn(WORLD * N, D, generator=g, dtype=torch.float64)
    labels = torch.arange(WORLD * N) % 3
    soft = torch.softmax(torch.randn(WORLD * N, 3, generator=g, dtype=torch.float64), dim=-1)
    return x, y, labels, soft


def _subspace_bases() -> tuple[torch.Tensor, torch.Tensor]:
    q = torch.linalg.qr(torch.randn(D, D, generator=torch.Generator().manual_seed(3)).double()).Q
    return q[:, :2].T.reshape(1, 2, D).mT, q[:, 2:4].T.reshape(1, 2, D).mT  # (1, D, 2) each


def _compression_bases() -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    q = torch.linalg.qr(torch.randn(D, 4, generator=g, dtype=torch.float64)).Q
    return q.reshape(D, 2, 2).permute(1, 0, 2)


def _views(z: torch.Tensor) -> torch.Tensor:
    return torch.stack([z, torch.tanh(z)], dim=0)  # (V=2, n, d)


#: name → term(z, labels, soft); every term is a function of the whole (global) batch.
TERMS: dict[str, Callable[..., torch.Tensor]] = {
    "coding_rate_gram": lambda z, lab, soft: coding_rate(z, eps=0.5, distributed="gram"),
    "coding_rate_gather": lambda z, lab, soft: coding_rate(z, eps=0.5, distributed="gather"),
    "coding_rate_centered": lambda z, lab, soft: coding_rate(z, eps=0.5, center=True),
    "rate_reduction_labels": lambda z, lab, soft: rate_reduction(z, lab, num_classes=3),
    "rate_reduction_soft": lambda z, lab, soft: rate_reduction(z, soft),
    "total_coding_rate": lambda z, lab, soft: total_coding_rate(_views(z)),
    "simdino_expansion": lambda z, lab, soft: simdino_expansion(_views(z)),
    "variational_rate": lambda z, lab, soft: variational_rate(z, soft, None),
    "local_coding_rate": lambda z, lab, soft: LocalCodingRate(D, window=64)(z),
    # Sequences of 2 rows (N per rank is even, so none straddles the ranks).
    "subspace_rate_reduction": lambda z, lab, soft: subspace_rate_reduction(
        z, *_subspace_bases(), num_observed=2
    ),
    # Penalties, added to the loss (the model subtracts the term).
    "sigreg": lambda z, lab, soft: -sigreg(z, step=5, num_slices=16),
    "sigreg_half": lambda z, lab, soft: -sigreg(z, step=6, num_slices=16, grid="half", t_max=3.0),
    "SIGReg": lambda z, lab, soft: -SIGReg(num_slices=16).double()(z, step=2),
    "vicreg_variance": lambda z, lab, soft: -vicreg_variance(z),
    "vicreg_covariance": lambda z, lab, soft: -vicreg_covariance(z),
    "vicreg_biased": lambda z, lab, soft: (
        -(vicreg_variance(z, unbiased=False) + vicreg_covariance(z, unbiased=False))
    ),
    "VICRegRegularizer": lambda z, lab, soft: -VICRegRegularizer()(z),
    "subspace_compression": lambda z, lab, soft: -subspace_compression(z, _compression_bases()),
    "subspace_compression_gather": lambda z, lab, soft: (
        -subspace_compression(z, _compression_bases(), distributed="gather")
    ),
}
#: A per-rank statistic: its DDP step must differ (the checks above are not vacuous).
LOCAL = {"sigreg_local": lambda z, lab, soft: -sigreg(z, step=5, num_slices=16, distributed="none")}


class Model(nn.Module):
    def __init__(self, term: Callable[..., torch.Tensor]) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.enc = nn.Linear(D_IN, D).double()
        self.term = term

    def forward(self, x, y, labels, soft) -> torch.Tensor:
        z = self.enc(x)
        return ((z - y) ** 2).mean() - LAMBDA * self.term(z, labels, soft)


def step(model: nn.Module, x, y, labels, soft) -> dict[str, torch.Tensor]:
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    opt.zero_grad()
    model(x, y, labels, soft).backward()
    opt.step()
    inner = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    return {k: v.detach().clone() for k, v in inner.state_dict().items()}


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        x, y, labels, soft = batch()
        part = slice(rank * N, (rank + 1) * N)
        states = {}
        for name, term in {**TERMS, **LOCAL}.items():
            ddp = nn.parallel.DistributedDataParallel(Model(term))
            states[name] = step(ddp, x[part], y[part], labels[part], soft[part])
        torch.save(states, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.barrier()  # no rank tears the group down while another still uses it
        dist.destroy_process_group()


def test_one_ddp_step_equals_the_single_process_step_for_every_global_term():
    with tempfile.TemporaryDirectory() as tmp:
        mp.start_processes(
            _worker, args=(os.path.join(tmp, "init"), tmp), nprocs=WORLD, join=True,
            start_method="spawn",
        )  # fmt: skip
        per_rank = [torch.load(os.path.join(tmp, f"rank{r}.pt")) for r in range(WORLD)]
    x, y, labels, soft = batch()
    initial = Model(TERMS["coding_rate_gram"]).state_dict()
    for name, term in TERMS.items():
        single = step(Model(term), x, y, labels, soft)
        for key in single:
            assert not torch.allclose(single[key], initial[key])  # the step moved the weights
            for state in per_rank:
                torch.testing.assert_close(
                    state[name][key], single[key], rtol=1e-6, atol=1e-10, msg=f"{name}: {key}"
                )
    single = step(Model(LOCAL["sigreg_local"]), x, y, labels, soft)
    assert not torch.allclose(per_rank[0]["sigreg_local"]["enc.weight"], single["enc.weight"])
