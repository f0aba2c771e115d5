"""The coding rates equal float64 re-implementations of the official code's formulas.

Each reference below is written from the behaviour of the official repository (read, not copied;
``../shared/reference/coding-rate.md`` §2–§4): its ``eps`` is ε², it factors the ``d×d`` matrix,
and it returns losses (negated rates). These tests pin the mapping documented in
``docs/coding_rate.rst`` ("Faithfulness").
"""

from __future__ import annotations

import math

import pytest
import torch

from jepa_blocks import eps_from_code, rate_reduction, simdino_expansion, total_coding_rate


def _unit(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(
        torch.randn(*shape, generator=g, dtype=torch.float64), dim=-1
    )


def mcr2_official_loss(x: torch.Tensor, labels: torch.Tensor, k: int, gam1, gam2, eps):
    """``ryanchankh/mcr2`` ``loss.py``: dense diagonal memberships, ``trPi + 1e-8``, d×d logdets."""
    m, p = x.shape
    w = x.T  # (p, m)
    eye = torch.eye(p, dtype=x.dtype)
    discrimn = torch.logdet(eye + gam1 * p / (m * eps) * w @ w.T) / 2
    pi = torch.zeros(k, m, m, dtype=x.dtype)
    pi[labels, torch.arange(m), torch.arange(m)] = 1.0
    compress = 0.0
    for j in range(k):
        tr_pi = torch.trace(pi[j]) + 1e-8
        scalar = p / (tr_pi * eps)
        compress = compress + torch.logdet(eye + scalar * w @ pi[j] @ w.T) * tr_pi / m
    compress = compress / 2
    return gam2 * -discrimn + compress


def trpi_shift_bound(x: torch.Tensor, k: int, eps_code: float, gam1: float = 1.0) -> float:
    """How far mcr2's ``tr(Π_j) + 1e-8`` can move the loss from the exact class masses.

    d/dt [t/(2m) · logdet(I + p/(t·eps) G)] = (logdet − tr(A⁻¹ (A − I)))/(2m), bounded in size by
    (logdet + p)/(2m); times the shift 1e-8 for each of the k classes (plus float64 rounding).
    """
    m, p = x.shape
    whole = torch.logdet(torch.eye(p, dtype=x.dtype) + gam1 * p / (m * eps_code) * x.T @ x)
    return k * 1e-8 * (float(whole) + p) / (2 * m) + 1e-12


def emp_ssl_official_tcr(z_chunks: torch.Tensor, eps: float) -> torch.Tensor:
    """``tsb0601/EMP-SSL`` ``loss.py::TotalCodingRate`` per chunk, averaged (``main.py::cal_TCR``)."""
    losses = []
    for w in z_chunks:  # (m, p)
        m, p = w.shape
        eye = torch.eye(p, dtype=w.dtype)
        losses.append(-torch.logdet(eye + p / (m * eps) * w.T @ w) / 2)
    return torch.stack(losses).mean()


def simdino_official_expansion(views: torch.Tensor, eps: float, n_ranks: int = 1) -> torch.Tensor:
    """``RobinWu218/SimDINO`` ``MCRLoss.calc_expansion`` on one rank (``reduce_cov`` moot)."""
    out = []
    for w in views:  # (m, p)
        m, p = w.shape
        cov = w.T @ w
        scalar = p / (m * n_ranks * eps)
        factor = torch.linalg.cholesky_ex(torch.eye(p, dtype=w.dtype) + scalar * cov)[0]
        out.append(torch.log(torch.diagonal(factor)).sum())
    gamma = (p + n_ranks * m) / (p * n_ranks * m)
    return torch.stack(out).mean() * gamma


@pytest.mark.parametrize(("m", "p", "k"), [(60, 16, 4), (20, 32, 3)])
def test_mcr2_official_loss_is_minus_rate_reduction(m, p, k):
    x = _unit((m, p), 0)
    labels = torch.arange(m) % k
    eps_code, gam2 = 0.5, 1.7
    official = mcr2_official_loss(x, labels, k, 1.0, gam2, eps_code)
    ours = rate_reduction(x, labels, eps=eps_from_code(eps_code), gamma=gam2, num_classes=k)
    # the class-wise logdets are no larger than the whole batch's, whose bound is used
    bound = trpi_shift_bound(x, k, eps_code) * max(
        1.0, m / min((labels == j).sum() for j in range(k))
    )
    torch.testing.assert_close(-ours, official, rtol=0, atol=bound)


def test_mcr2_gam1_is_eps_over_sqrt_gam1_in_the_expansion():
    x = _unit((40, 12), 1)
    labels = torch.arange(40) % 3
    gam1, eps_code = 2.0, 0.5
    official = mcr2_official_loss(x, labels, 3, gam1, 1.0, eps_code)
    parts = rate_reduction(x, labels, eps=eps_from_code(eps_code), num_classes=3, return_parts=True)
    wide = rate_reduction(
        x, labels, eps=eps_from_code(eps_code) / math.sqrt(gam1), num_classes=3, return_parts=True
    )
    bound = trpi_shift_bound(x, 3, eps_code) * 3  # class sizes ≥ 40/3
    torch.testing.assert_close(-(wide.expansion - parts.compression), official, rtol=0, atol=bound)


def test_emp_ssl_official_tcr_is_minus_total_coding_rate():
    chunks = _unit((5, 20, 64), 2)  # 5 patch chunks of 20 samples, d = 64 > n
    official = emp_ssl_official_tcr(chunks, 0.2)
    ours = total_coding_rate(chunks, eps=eps_from_code(0.2))
    torch.testing.assert_close(-ours, official, rtol=0, atol=1e-9)


def test_simdino_official_expansion():
    views = _unit((3, 32, 24), 3)
    official = simdino_official_expansion(views, 0.5)
    torch.testing.assert_close(simdino_expansion(views, eps=eps_from_code(0.5)), official)
