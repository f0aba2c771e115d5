"""Two gloo processes, each with half the batch: the global rate, and the DDP-convention gradients.

Every rank computes the single-process value of the global batch. Each rank's rows receive the
sum over ranks of the gradients sent by the ranks' copies of the term (``W ×`` the single-process
gradient of those rows when every rank computes the same term), which DDP's averaging turns into
the full-batch parameter gradient (``tests/test_ddp_convention.py``).
"""

from __future__ import annotations

import os
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from jepa_blocks import coding_rate, simdino_expansion

pytestmark = pytest.mark.distributed

WORLD = 2


def _full_batch(n: int, d: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(1234)
    return torch.randn(3, WORLD * n, d, generator=g, dtype=torch.float64)


def _worker(rank: int, init_file: str, out_dir: str, n: int, d: int) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        full = _full_batch(n, d)
        results = {}
        for strategy in ("gram", "gather"):
            for center in (False, True):
                local = full[:, rank * n : (rank + 1) * n].clone().requires_grad_(True)
                r = coding_rate(local, eps=0.4, center=center, distributed=strategy)
                (g,) = torch.autograd.grad(r.sum(), local)
                results[(strategy, center)] = (r.detach(), g)
        local = full[:, rank * n : (rank + 1) * n].clone().requires_grad_(True)
        s = simdino_expansion(local, distributed="auto")  # V = 3 views
        (gs,) = torch.autograd.grad(s.sum(), local)
        results[("simdino", False)] = (s.detach(), gs)
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.barrier()  # no rank tears the group down while another still uses it
        dist.destroy_process_group()


@pytest.mark.parametrize("n,d", [(6, 10), (12, 4)])
def test_two_ranks_equal_single_process(n, d):
    with tempfile.TemporaryDirectory() as tmp:
        init_file = os.path.join(tmp, "init")
        mp.start_processes(
            _worker, args=(init_file, tmp, n, d), nprocs=WORLD, join=True, start_method="spawn"
        )
        per_rank = [torch.load(os.path.join(tmp, f"rank{r}.pt")) for r in range(WORLD)]

    full = _full_batch(n, d)
    for strategy in ("gram", "gather"):
        for center in (False, True):
            z = full.clone().requires_grad_(True)
            ref = coding_rate(z, eps=0.4, center=center, distributed="none")
            (gref,) = torch.autograd.grad(ref.sum(), z)
            for rank, res in enumerate(per_rank):
                value, grad = res[(strategy, center)]
                torch.testing.assert_close(value, ref.detach(), rtol=1e-6, atol=0)
                torch.testing.assert_close(
                    grad, WORLD * gref[:, rank * n : (rank + 1) * n], rtol=1e-6, atol=1e-12
                )
    # SimDINO with the global Gram: N = 2 ranks, m = n local samples, scale p / (N m ε²).
    z = full.clone().requires_grad_(True)
    gamma = (d + WORLD * n) / (d * WORLD * n)
    ref = gamma * coding_rate(z, eps=0.5**0.5, distributed="none").mean()
    (gref,) = torch.autograd.grad(ref.sum(), z)
    for rank, res in enumerate(per_rank):
        value, grad = res[("simdino", False)]
        torch.testing.assert_close(value, ref.detach(), rtol=1e-6, atol=0)
        torch.testing.assert_close(
            grad, WORLD * gref[:, rank * n : (rank + 1) * n], rtol=1e-6, atol=1e-12
        )
