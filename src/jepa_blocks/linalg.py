"""Exact, fast and numerically safe ``½·logdet(I + α·ZᵀZ)`` for a batch of sample matrices.

The hot path of every coding rate ("Coding rate" page: derivation and measurements). The smaller
Gram (Sylvester's identity, ``k = min(n, d)``) is accumulated and stored in fp32 whatever the
input dtype or autocast state; ``A = I + αĜ`` (``k×k``) is formed, factored (``cholesky_ex``)
and log-summed in float64, and only the result is rounded to fp32; the backward
``∂R/∂Z = α·Z·A⁻¹`` (or ``α·A⁻¹·Z``) uses the saved factor. Forward error of the float32 path
(docs: "Coding rate", Accuracy), with ``m`` the contracted dimension, ``X`` the factored side
(``Z`` or ``Zᵀ``) and ``γ_j(u) = ju/(1 − ju)``::

    |R̂ − R| ≤ u₃₂|R| + √k‖A⁻¹‖₂(α·γ_m(u₃₂)·‖|X|ᵀ|X|‖_F + 1.01(k + 4)u₆₄·tr(A)) + (k + 2)u₆₄|R|
            ≤ u₃₂|R| + k^{3/2}·cond(A)·(γ_m(u₃₂) + 1.01(k + 4)u₆₄) + (k + 2)u₆₄|R|

(first order; valid when the bound is below ``√k/2``). ``precision="float64"`` replaces ``u₃₂``
by ``u₆₄`` in the Gram term and drops the final rounding.

**Fallback.** The whole call is recomputed in float64 from the Householder QR of ``[√α·Z; I]``
(``RᵀR = A`` without forming ``A``; no failure mode for finite input, error about ``u₃₂|R|`` up
to ``cond(A) ≈ 10²⁰``) when any batch element's Cholesky factorisation fails, or, for an fp32
Gram, when ``1 + α·tr(Ĝ) ≥ λ_max(A) ≥ cond(A)`` exceeds ``2²⁰`` or a pivot falls below ``√½``
(impossible for the exact ``A``). For unit-norm rows ``α·tr(G) = d/ε²``, so only ``d/ε² > 10⁶``
or badly scaled features take this path. The check costs one device→host read in eager mode
(``torch.cond`` under ``torch.compile``). Non-finite input raises
:class:`~jepa_blocks.NonFiniteError` in eager mode (detected on this path only) and propagates
NaN under ``torch.compile``.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any, Literal, get_args

import torch
from torch import Tensor

from jepa_blocks._validation import (
    NonFiniteError,
    check_bool,
    check_choice,
    check_positive,
    check_samples,
)

#: Which Gram matrix the log-det factors (:func:`resolve_form`).
Form = Literal["auto", "dxd", "nxn"]
Precision = Literal["float32", "float64"]
#: Multi-rank strategy of the coding rates (:func:`jepa_blocks.coding_rate`).
Distributed = Literal["auto", "none", "gram", "gather"]
#: Multi-rank option of the other global terms: ``"auto"`` (global batch) or ``"none"`` (local).
GlobalBatch = Literal["auto", "none"]

__all__ = [
    "Distributed",
    "Form",
    "GlobalBatch",
    "Precision",
    "compute_dtype",
    "gram",
    "half_logdet_i_plus_gram",
    "resolve_form",
]

FORMS: tuple[Form, ...] = get_args(Form)
PRECISIONS: tuple[Precision, ...] = get_args(Precision)
DISTRIBUTED_MODES: tuple[Distributed, ...] = get_args(Distributed)
GLOBAL_BATCH_MODES: tuple[GlobalBatch, ...] = get_args(GlobalBatch)


def compute_dtype(dtype: torch.dtype, precision: Precision) -> torch.dtype:
    """The dtype the log-det is computed in: the wider of ``precision`` and ``dtype`` (fp16/bf16
    inputs compute in at least float32; float64 inputs are never downgraded).

    Args:
        dtype: Floating dtype of the input.
        precision: ``"float32"`` or ``"float64"``.
    """
    if check_choice(precision, "precision", PRECISIONS) == "float64" or dtype == torch.float64:
        return torch.float64
    return torch.float32


def resolve_form(n: int, d: int, form: Form) -> Literal["dxd", "nxn"]:
    """Pick which Gram matrix to factor.

    Args:
        n, d: Rows (samples) and columns (features) of ``Z``.
        form: ``"auto"`` (the smaller of the two, ``d×d`` on ties), ``"dxd"`` or ``"nxn"``.

    Returns:
        ``"dxd"`` for ``ZᵀZ`` or ``"nxn"`` for ``ZZᵀ``.
    """
    if check_choice(form, "form", FORMS) == "auto":
        return "dxd" if d <= n else "nxn"
    return form  # type: ignore[return-value]


def gram(z: Tensor, form: Literal["dxd", "nxn"]) -> Tensor:
    """Gram matrix of the rows (``nxn``: ``ZZᵀ``) or of the columns (``dxd``: ``ZᵀZ``).

    Shape:
        - z: ``(..., n, d)``; output: ``(..., d, d)`` for ``"dxd"``, ``(..., n, n)`` for ``"nxn"``
    """
    return z.mT @ z if form == "dxd" else z @ z.mT


def _no_autocast(device_type: str) -> AbstractContextManager[Any]:
    """``torch.autocast(enabled=False)`` when autocast is on, else a no-op (entering costs µs)."""
    if torch.is_autocast_enabled(device_type):
        return torch.autocast(device_type=device_type, enabled=False)
    return nullcontext()


def _shift_diagonal(a: Tensor) -> Tensor:
    """Return ``a + I`` without materialising an identity matrix."""
    a.diagonal(dim1=-2, dim2=-1).add_(1.0)
    return a


# Above this upper bound on cond(I + αĜ) the fp32 Gram no longer pins down the small eigenvalues
# of A (its rounding error can reach γ_m·α·tr(G) ≈ m·u₃₂·2²⁰ = m/16): recompute in float64.
_FP32_COND_LIMIT = 2.0**20
# Every pivot L_ii² of the exact A is ≥ λ_min(A) ≥ 1; a computed pivot² below this proves that
# the factored matrix is off by at least 1/2 in the 2-norm (a corrupted Gram): recompute.
_MIN_PIVOT = 0.5**0.5


def _factor_dtype(dtype: torch.dtype, device: torch.device) -> torch.dtype:
    """Dtype of the ``k×k`` island: float64, except on devices without it (Apple MPS)."""
    return dtype if device.type == "mps" else torch.float64


def _qr_factor(z: Tensor, scale: Tensor, form: str) -> Tensor:
    """Lower factor ``L = Rᵀ`` with ``L Lᵀ = I + scale·G`` from the QR of ``[√scale·Z; I]`` (the
    sign of ``diag(R)`` is irrelevant: ``cholesky_solve`` uses ``L Lᵀ``, the log-det ``|diag R|``).
    """
    x = z if form == "dxd" else z.mT  # (..., rows, k): columns of x span the factored side
    k = x.shape[-1]
    eye = torch.eye(k, dtype=x.dtype, device=x.device).expand(*x.shape[:-2], k, k)
    stacked = torch.cat([x * scale.sqrt()[..., None, None], eye], dim=-2)
    r = torch.linalg.qr(stacked, mode="r").R
    return r.mT


def _factor_fallback(z: Tensor, scale: Tensor, form: str) -> tuple[Tensor, Tensor]:
    """Float64 QR factor and ½ logdet, used when the fast factorisation failed."""
    l64 = _qr_factor(z.double(), scale.double(), form)
    half = l64.diagonal(dim1=-2, dim2=-1).abs().log().sum(-1)
    return l64, half


def _factorize(
    z: Tensor, scale: Tensor, form: str, reduce: bool, group: Any, fallback: bool
) -> tuple[Tensor, Tensor, Tensor | None, bool]:
    """Factor ``A = I + scale·G(z)`` (Gram in ``z.dtype``, ``A`` in float64) without autograd.

    Returns ``(L, half, fallback_L, exact)``: ``LLᵀ = A``, ``½ logdet A``, under ``torch.compile``
    a float64 fallback factor (zeros when unused), and whether ``L`` is the QR fallback (eager).
    """
    g = gram(z, form)  # type: ignore[arg-type]
    if reduce:
        torch.distributed.all_reduce(g, group=group)
    fdt = _factor_dtype(z.dtype, z.device)
    a = _shift_diagonal(g.to(fdt).mul_(scale.reshape(*scale.shape, 1, 1)))  # scale is in fdt
    factor, info = torch.linalg.cholesky_ex(a)
    pivots = factor.diagonal(dim1=-2, dim2=-1)
    half = pivots.log().sum(-1)
    if not fallback or reduce:
        return factor, half, None, False
    ok = info == 0
    if z.dtype != torch.float64:
        # tr(A) − (k − 1) ≥ λ_max(A) ≥ cond(A) as every eigenvalue of A is ≥ 1; NaN fails both.
        limit = _FP32_COND_LIMIT + (a.shape[-1] - 1)
        ok = ok & (a.diagonal(dim1=-2, dim2=-1).sum(-1) <= limit) & (pivots.amin(-1) >= _MIN_PIVOT)
    failed = ~ok.all()
    if torch.compiler.is_compiling():
        k = factor.shape[-1]

        def _recompute(z_: Tensor, s_: Tensor) -> tuple[Tensor, Tensor]:
            f64, h64 = _factor_fallback(z_, s_, form)
            return f64.contiguous(), h64.to(half.dtype)

        def _skip(z_: Tensor, s_: Tensor) -> tuple[Tensor, Tensor]:
            zeros = z_.new_zeros((*z_.shape[:-2], k, k), dtype=torch.float64)
            return zeros, z_.new_zeros(z_.shape[:-2], dtype=half.dtype)

        fb_factor, fb_half = torch.cond(failed, _recompute, _skip, (z, scale))
        return factor, torch.where(failed, fb_half, half), fb_factor, False
    if bool(failed):
        if not bool(torch.isfinite(z).all()):
            raise NonFiniteError(
                "z contains NaN or inf entries; the coding rate is defined for finite input "
                f"only (z.shape={tuple(z.shape)})"
            )
        return (*_factor_fallback(z, scale, form), None, True)
    return factor, half, None, False


def _solve(z: Tensor, factor: Tensor, form: str) -> Tensor:
    """``Z·A⁻¹`` (``dxd``) or ``A⁻¹·Z`` (``nxn``) from a factor of ``A``, in the factor's dtype."""
    zf = z.to(factor.dtype)
    if form == "dxd":
        return torch.cholesky_solve(zf.mT, factor).mT
    return torch.cholesky_solve(zf, factor)


def _exact_grad(z: Tensor, factor: Tensor, coef: Tensor, form: str) -> Tensor:
    """``coef·Z·A⁻¹`` (or ``coef·A⁻¹·Z``) entirely in the factor's dtype (the fallback path)."""
    solved = _solve(z, factor, form)
    return (coef.to(solved.dtype)[..., None, None] * solved).to(z.dtype)


def _fast_grad(z: Tensor, factor: Tensor, coef: Tensor, form: str) -> Tensor:
    """``coef·Z·A⁻¹`` (or ``coef·A⁻¹·Z``) in ``z.dtype``.

    With a float64 factor for a float32 ``z`` and ``2k ≤ m``, ``coef·A⁻¹`` is formed in float64
    (``cholesky_inverse``), rounded and applied with one matmul (far faster than two batched
    triangular solves against ``m`` right-hand sides); otherwise one ``cholesky_solve``.
    """
    k = factor.shape[-1]
    m = z.shape[-2] if form == "dxd" else z.shape[-1]
    if 2 * k <= m and factor.dtype != z.dtype:
        inv = torch.cholesky_inverse(factor).mul_(coef.reshape(*coef.shape, 1, 1)).to(z.dtype)
        return z @ inv if form == "dxd" else inv @ z
    solved = _solve(z, factor.to(z.dtype), form)
    return coef.to(z.dtype)[..., None, None] * solved


class _AttachLogdetGrad(torch.autograd.Function):
    """Return the precomputed ``½ logdet`` with the gradient ``scale·Z·A⁻¹``."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        z: Tensor,
        scale: Tensor,
        factor: Tensor,
        half: Tensor,
        fb_factor: Tensor | None,
        exact: bool,
        form: str,
        reduce: bool = False,
        group: Any = None,
    ) -> Tensor:
        ctx.form, ctx.exact, ctx.reduce, ctx.group = form, exact, reduce, group
        ctx.has_fallback = fb_factor is not None
        ctx.save_for_backward(z, scale, factor, *([] if fb_factor is None else [fb_factor]))
        return half.to(z.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        none = (None,) * 8
        if not ctx.needs_input_grad[0]:
            return (None, *none)
        z, scale, factor = ctx.saved_tensors[:3]
        if ctx.reduce:  # the summed Gram's backward: every rank's gradient reaches its rows
            grad_out = grad_out.contiguous().clone()
            torch.distributed.all_reduce(grad_out, group=ctx.group)
        coef = grad_out * scale  # in scale's (the factor's) dtype, which is the wider one
        # The backward may run under the caller's autocast: keep the GEMM in z's dtype.
        with _no_autocast(z.device.type):
            if ctx.has_fallback:  # torch.compile: the float64 factor where the fast one failed
                fb_factor = ctx.saved_tensors[3]
                use_fb = (fb_factor.diagonal(dim1=-2, dim2=-1) != 0).any()
                grad = torch.cond(
                    use_fb,
                    lambda z_, f_, g_, c_: _exact_grad(z_, g_, c_, ctx.form).contiguous(),
                    lambda z_, f_, g_, c_: _fast_grad(z_, f_, c_, ctx.form).contiguous(),
                    (z, factor, fb_factor, coef),
                )
            elif ctx.exact:
                grad = _exact_grad(z, factor, coef, ctx.form)
            else:
                grad = _fast_grad(z, factor, coef, ctx.form)
        return (grad, *none)


def half_logdet_i_plus_gram(
    z: Tensor,
    scale: Tensor | float,
    *,
    form: Form = "auto",
    precision: Precision = "float32",
    all_reduce: bool = False,
    group: Any = None,
    fallback: bool = True,
) -> Tensor:
    """``½·logdet(I + scale·ZᵀZ)`` for a batch of matrices, exactly and without NaN.

    The module docstring gives the algorithm, the error bound and the fallback rule.

    Args:
        z: Samples as rows (fp16/bf16 are upcast).
        scale: ``α ≥ 0``, a float or a tensor broadcastable to the batch shape ``(...)``.
        form: ``"auto"`` (smaller Gram), ``"dxd"`` or ``"nxn"``.
        precision: The least precision of the computation.
        all_reduce: Sum the ``d×d`` Gram over the ranks of ``group`` before factoring (needs
            ``form="dxd"``, the same batch shape and ``d`` on all ranks). The backward sums the
            incoming gradient over ranks: the DDP convention of :mod:`jepa_blocks.distributed`.
        group: Process group for ``all_reduce`` (``None``: the world).
        fallback: Recompute in float64 (QR) when the fast path fails or is too ill-conditioned
            (off: no eager-mode host sync, but a failure returns NaN).

    Returns:
        ``½·logdet(I + α·ZᵀZ)`` in the computation dtype; the float32 result is the float64
        log-det of ``I + α·Ĝ`` (``Ĝ`` the fp32 Gram) rounded once.

    Shape:
        - z: ``(..., n, d)``; scale: broadcastable to ``(...)``; output: ``(...)``

    Raises:
        ValueError: Negative or non-finite ``scale``, an empty ``z``, an unknown ``form`` or
            ``precision``; :class:`~jepa_blocks.NonFiniteError` for NaN/inf in ``z`` (eager).
        TypeError: A non-floating ``z`` or ``scale``, non-bool flags.
    """
    check_samples(z)
    check_bool(all_reduce, "all_reduce")
    check_bool(fallback, "fallback")
    if not torch.compiler.is_compiling():  # value checks (a host sync for tensors): eager only
        if isinstance(scale, Tensor):
            if not scale.is_floating_point():
                raise TypeError(f"scale must be a float or a floating tensor, got {scale.dtype}")
            if not bool((torch.isfinite(scale) & (scale >= 0)).all()):
                raise ValueError(f"scale must be finite and >= 0, got {scale}")
        elif isinstance(scale, (int, float)) and not isinstance(scale, bool):
            check_positive(scale, "scale", allow_zero=True)
        else:
            raise TypeError(f"scale must be a float or a tensor, got {type(scale).__name__}")
    resolved = resolve_form(z.shape[-2], z.shape[-1], form)
    if all_reduce and resolved != "dxd":
        raise ValueError(f"all_reduce needs form='dxd' (the Gram that is summed), got {form!r}")
    dtype = compute_dtype(z.dtype, precision)
    fdt = _factor_dtype(dtype, z.device)
    with _no_autocast(z.device.type):
        zc = z.to(dtype)
        if isinstance(scale, (int, float)):  # one kernel instead of as_tensor + expand
            s = torch.full(z.shape[:-2], float(scale), dtype=fdt, device=z.device)
        else:
            s = torch.as_tensor(scale, dtype=fdt, device=z.device).expand(z.shape[:-2])
        with torch.no_grad():
            factor, half, fb_factor, exact = _factorize(
                zc.detach(), s, resolved, all_reduce, group, fallback
            )
        return _AttachLogdetGrad.apply(
            zc, s, factor, half, fb_factor, exact, resolved, all_reduce, group
        )
