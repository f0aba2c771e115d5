"""The derived forward-error bound of ``half_logdet_i_plus_gram`` (docs: "Coding rate", Accuracy).

Notation: ``Z`` is ``n×d``, the factored Gram is ``G = XᵀX`` with ``X = Z`` (``dxd``) or
``X = Zᵀ`` (``nxn``), so ``G`` is ``k×k`` and ``m`` is the contracted dimension;
``A = I + αG``, ``R = ½ logdet A``; ``u₃₂ = 2⁻²⁴``, ``u₆₄ = 2⁻⁵³``, ``γ_j(u) = ju/(1 − ju)``.
With ``E`` the total backward error of the computed factor (``L̂L̂ᵀ = A + E``) and ``μ_i`` the
eigenvalues of ``A^{-½}EA^{-½}``, ``|½ logdet(A + E) − ½ logdet A| = ½|Σ log(1 + μ_i)|
≤ ‖A⁻¹‖₂‖E‖_* ≤ √k‖A⁻¹‖₂‖E‖_F`` whenever ``max|μ_i| ≤ ‖A⁻¹‖₂‖E‖_F ≤ ½`` (then
``|log(1 + μ)| ≤ 2 ln 2·|μ|``). The terms of ``‖E‖_F`` on the float32 path:

* fp32 Gram: ``|Ĝ − G| ≤ γ_m(u₃₂)|X|ᵀ|X|`` for any summation order, so
  ``‖αΔG‖_F ≤ α γ_m(u₃₂) ‖|X|ᵀ|X|‖_F``;
* fp64 scaling, shift and Cholesky (Higham, *Accuracy and Stability*, Thm 10.3):
  ``≤ (2u₆₄ + γ_{k+1}(u₆₄))·tr(A)·(1 + small) ≤ 1.01(k + 4)u₆₄·tr(A)``;
* fp64 log-sum: ``≤ (k + 2)u₆₄|R|`` (every pivot is ``≥ 1``, so ``Σ|log L_ii| = R``);
* the float64 Householder-QR fallback (Higham Thm 19.4, ``γ̃_{Nk} = c·N·k·u``, ``N = m + k``;
  we take ``c = 4``) factors ``X̃ = [√α·X; I]`` (``X̃ᵀX̃ = A``) with columnwise backward error
  ``‖ΔX‖_F ≤ η‖X̃‖_F``, ``η = γ̃ + 2u₆₄(1 + γ̃)``; since ``‖X̃A^{-½}‖₂ = 1`` this gives
  ``‖A^{-½}EA^{-½}‖_F ≤ 2s + s²`` with ``s = η·√(tr(A)·‖A⁻¹‖₂)``: valid up to ``κ ≈ 1/u₆₄²``;
* the final rounding of the float64 result to float32: ``u₃₂·|R̂₆₄|``.

Using ``‖A⁻¹‖₂ = 1/λ_min(A) ≤ 1``, ``α‖X‖²_F·‖A⁻¹‖₂ < k·κ(A)`` and ``tr(A)·‖A⁻¹‖₂ ≤ k·κ(A)`` gives
the condition-number form ``|R̂ − R| ≤ u₃₂|R| + k^{3/2}κ(A)(γ_m(u₃₂) + 1.01(k + 4)u₆₄) + (k + 2)u₆₄|R|``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from jepa_blocks.linalg import gram, resolve_form

U32 = 2.0**-24
U64 = 2.0**-53
QR_C = 4  # the "small integer constant" of Higham's γ̃ for Householder QR
# The documented fallback threshold on 1 + α·tr(Ĝ) ≥ cond(A) (docs: "Coding rate", Accuracy).
FP32_COND_LIMIT = 2.0**20


def gamma(j: int, u: float) -> float:
    """Higham's ``γ_j = ju/(1 − ju)``."""
    return j * u / (1.0 - j * u)


class Bound(NamedTuple):
    """Per-batch-element quantities of the derived bound (all float64, shape ``(...)``)."""

    reference: Tensor  # R from a float64 Householder QR of [√α·X; I] written here
    reference_error: Tensor  # bound on |reference − R| (the QR-path bound)
    fp32: Tensor  # bound on |R̂ − R| for the float32 path (Cholesky path or QR fallback)
    float64: Tensor  # bound on |R̂ − R| for precision="float64" (all-float64 Cholesky path)
    valid: Tensor  # the first-order conditions (‖A^{-½}EA^{-½}‖_F ≤ ½) of the paths hold
    forced_fallback: Tensor  # 1 + α·tr(G) exceeds the limit: the library must take the QR path
    cond: Tensor  # κ(A) (from float64 eigenvalues)
    cholesky_path: Tensor  # the Cholesky-path bound with ‖A⁻¹‖₂ = 1/λ_min (no eigensolver margin)
    kappa_form: Tensor  # the simplified bound u₃₂|R| + k^{3/2}κ(γ_m + 1.01(k+4)u₆₄) + (k+2)u₆₄|R|


def _sides(z: Tensor, form: str) -> tuple[Tensor, int, int]:
    n, d = z.shape[-2:]
    resolved = resolve_form(n, d, form)
    x = z.double() if resolved == "dxd" else z.double().mT  # (..., m, k)
    return x, x.shape[-2], x.shape[-1]


def derived_bound(z: Tensor, alpha: float | Tensor, form: str = "auto") -> Bound:
    """Evaluate the bound of the module docstring for one input (float32 values of ``z``)."""
    x, m, k = _sides(z, form)
    batch = x.shape[:-2]
    a = torch.as_tensor(alpha, dtype=torch.float64).expand(batch)
    g = x.mT @ x
    eye = torch.eye(k, dtype=torch.float64)
    amat = eye + a[..., None, None] * g
    lam = torch.linalg.eigvalsh(amat)
    # ‖A⁻¹‖₂ = 1/λ_min ≤ 1; the factor 2 covers the eigensolver's own error (λ_min ≥ 1).
    ainv = (2.0 / lam[..., 0]).clamp(max=1.0)
    cond = lam[..., -1] / lam[..., 0]
    absg = (x.abs().mT @ x.abs()).flatten(-2).norm(dim=-1)  # ‖|X|ᵀ|X|‖_F
    tr_a = k + a * x.square().sum((-2, -1))
    sk = math.sqrt(k)
    # Reference: Householder QR of X̃ = [√α·X; I] in float64 (X̃ᵀX̃ = A; A is never formed).
    stacked = torch.cat([x * a.sqrt()[..., None, None], eye.expand(*batch, k, k)], dim=-2)
    ref = torch.linalg.qr(stacked, mode="r").R.diagonal(dim1=-2, dim2=-1).abs().log().sum(-1)
    log64 = (k + 2) * U64 * ref.abs()
    # QR path: R̂ᵀR̂ = (X̃ + ΔX)ᵀ(X̃ + ΔX) with ‖ΔX‖_F ≤ η‖X̃‖_F = η·√tr(A); as ‖X̃A^{-½}‖₂ = 1,
    # ‖A^{-½}EA^{-½}‖_F ≤ 2s + s² with s = η·√(tr(A)·‖A⁻¹‖₂).
    gt = gamma(QR_C * (m + k) * k, U64)
    s_qr = (gt + 2 * U64 * (1 + gt)) * (tr_a * ainv).sqrt()
    pert_qr = 2 * s_qr + s_qr**2
    qr_path = sk * pert_qr + log64
    # Cholesky path: fp32 Gram, then float64 scaling, shift, Cholesky and log-sum.
    fact64 = 1.01 * (k + 4) * U64 * tr_a
    pert32 = ainv * (a * gamma(m, U32) * absg + fact64)
    chol_path = sk * pert32 + log64
    # The library's check reads 1 + α·tr(Ĝ) with tr(Ĝ) ≥ (1 − γ_m)·tr(G).
    forced = 1.0 + a * g.diagonal(dim1=-2, dim2=-1).sum(-1) * (1 - gamma(m, U32)) > (
        FP32_COND_LIMIT * (1 + 1e-6)
    )
    fwd = torch.where(forced, qr_path, torch.maximum(chol_path, qr_path))
    fp32 = fwd + U32 * (ref.abs() + qr_path + fwd)  # |R̂₆₄| ≤ |ref| + |ref − R| + |R̂₆₄ − R|
    valid = (pert_qr <= 0.5) & (forced | (pert32 <= 0.5))
    float64 = sk * ainv * (a * gamma(m, U64) * absg + fact64) + log64
    # The Cholesky-path bound with ‖A⁻¹‖₂ = 1/λ_min exactly, and its condition-number form
    # (α‖X‖²_F/λ_min < k·κ and tr(A)/λ_min ≤ k·κ), both including the final rounding.
    exact = sk / lam[..., 0] * (a * gamma(m, U32) * absg + fact64) + log64
    cholesky_path = U32 * ref.abs() + (1 + U32) * exact
    kappa = k**1.5 * cond * (gamma(m, U32) + 1.01 * (k + 4) * U64) + log64
    kappa_form = U32 * ref.abs() + (1 + U32) * kappa
    return Bound(ref, qr_path, fp32, float64, valid, forced, cond, cholesky_path, kappa_form)


def stage_bound(z: Tensor, alpha: float | Tensor, form: str = "auto") -> tuple[Tensor, Tensor]:
    """Exact ``½ logdet(I + αĜ)`` of the *rounded* float32 Gram ``Ĝ`` and the bound on the rest.

    The float32 path computes ``Ĝ = fl₃₂(G)`` and then works in float64, so its result may differ
    from ``½ logdet(I + αĜ)`` only by the float64 terms (for the library and for this reference)
    and the final rounding: ``u₃₂|R_Ĝ| + 2·(√k‖Â⁻¹‖·1.01(k + 4)u₆₄·tr(Â) + (k + 2)u₆₄|R_Ĝ|)``.
    Returns ``(R_Ĝ, bound)``; the bound is ``inf`` where ``Â`` is not safely positive definite.
    """
    n, d = z.shape[-2:]
    resolved = resolve_form(n, d, form)
    ghat = gram(z.float(), resolved).double()
    k = ghat.shape[-1]
    a = torch.as_tensor(alpha, dtype=torch.float64).expand(ghat.shape[:-2])
    amat = torch.eye(k, dtype=torch.float64) + a[..., None, None] * ghat
    lam_min = torch.linalg.eigvalsh(amat)[..., 0]
    chol, info = torch.linalg.cholesky_ex(amat)
    r_g = chol.diagonal(dim1=-2, dim2=-1).log().sum(-1)
    ainv = 2.0 / lam_min
    one_side = (
        math.sqrt(k) * ainv * 1.01 * (k + 4) * U64 * amat.diagonal(dim1=-2, dim2=-1).sum(-1)
        + (k + 2) * U64 * r_g.abs()
    )
    bound = U32 * r_g.abs() + 2 * one_side + U32 * 2 * one_side
    ok = (info == 0) & (lam_min > 0) & (one_side < 0.25)
    return torch.where(ok, r_g, 0.0), torch.where(ok, bound, math.inf)


def gradient_bound(z: Tensor, alpha: float | Tensor, form: str = "auto") -> tuple[Tensor, Tensor]:
    """Exact-arithmetic gradient ``∂R/∂Z`` (float64) and a bound on the float32 path's error.

    With ``X`` as above, ``∂R/∂X = α·X·A⁻¹``. The float32 path (``2k ≤ m``) forms ``W = A⁻¹``
    from the float64 factor of ``Â = I + αĜ``, rounds it to float32 and multiplies in float32:

    ``‖ĝ − g‖_F ≤ α·[(γ_k(u₃₂) + 2u₃₂)·‖|X|·|W|‖_F + ‖X‖_F·(2·‖αΔG‖_F + δ_inv)]`` where
    ``‖Â⁻¹ − A⁻¹‖₂ ≤ ‖A⁻¹‖₂‖Â⁻¹‖₂‖αΔG‖₂ ≤ 2‖αΔG‖_F`` (for ``‖αΔG‖ ≤ ½``),
    ``‖αΔG‖_F ≤ αγ_m(u₃₂)‖|X|ᵀ|X|‖_F``, and ``δ_inv = 4k^{3/2}u₆₄·κ(A)`` covers the float64
    factorization and inversion (a generous constant; the term is negligible here).
    Square problems (``2k > m``) use ``cholesky_solve`` with the factor rounded to float32; that
    branch's bound is derived in the code below. Returns ``(g, bound)`` with ``g`` shaped like
    ``z``; the bound (Frobenius norm per batch element) is ``inf`` outside its validity.
    """
    x, m, k = _sides(z, form)
    a = torch.as_tensor(alpha, dtype=torch.float64).expand(x.shape[:-2])[..., None, None]
    amat = torch.eye(k, dtype=torch.float64) + a * (x.mT @ x)
    w = torch.cholesky_inverse(torch.linalg.cholesky(amat))
    lam = torch.linalg.eigvalsh(amat)
    cond = (lam[..., -1] / lam[..., 0])[..., None, None]
    g = a * (x @ w)
    dgram = a * gamma(m, U32) * (x.abs().mT @ x.abs()).flatten(-2).norm(dim=-1)[..., None, None]
    xf = x.flatten(-2).norm(dim=-1)[..., None, None]
    gemm = (gamma(k, U32) + 2 * U32) * (x.abs() @ w.abs()).flatten(-2).norm(dim=-1)
    if 2 * k <= m:
        # (δ_inv counted twice: the library's float64 inverse and this reference's.)
        bound = a[..., 0, 0] * (gemm + (xf * (2 * dgram + 8 * k**1.5 * U64 * cond))[..., 0, 0])
        bound = torch.where(dgram[..., 0, 0] <= 0.5, bound, math.inf)
    else:
        # cholesky_solve with the factor rounded to float32 (Higham Thm 10.4): the solve is exact
        # for A + ΔA with ‖ΔA‖_F ≤ ‖αΔG‖_F + (γ_{3k+1}(u₃₂) + 2.01u₃₂ + 1.01(k + 4)u₆₄)·tr(A),
        # so ‖ĝ − g‖_F ≤ (2‖A⁻¹‖₂‖ΔA‖_F + u₃₂)·‖g‖_F when ‖A⁻¹‖₂‖ΔA‖_F ≤ ½ (‖A⁻¹‖₂ ≤ 1).
        tr_a = amat.diagonal(dim1=-2, dim2=-1).sum(-1)
        u_solve = gamma(3 * k + 1, U32) + 2.01 * U32 + 1.01 * (k + 4) * U64
        dmat = dgram[..., 0, 0] + u_solve * tr_a
        ref_err = (a * xf * 4 * k**1.5 * U64 * cond)[..., 0, 0]  # this reference's inverse
        bound = (2 * dmat + U32) * g.flatten(-2).norm(dim=-1) + ref_err
        bound = torch.where(dmat <= 0.5, bound, math.inf)
    n, d = z.shape[-2:]
    if resolve_form(n, d, form) == "nxn":
        g = g.mT
    return g, bound
