"""Exact, fast and numerically safe ``½·logdet(I + α·ZᵀZ)`` for a batch of sample matrices.

This is the hot path under every coding-rate quantity in the library. Three ideas make it fast
and safe (see the "Coding rate" docs page for the derivation and the measurements):

1. **Sylvester's determinant identity.** ``logdet(I_d + α ZᵀZ) = logdet(I_n + α Z Zᵀ)`` for
   ``Z ∈ ℝ^{n×d}``, so we factor the smaller of the two Gram matrices (``k = min(n, d)``): the
   Gram costs ``n·d·k`` flops and the factorisation ``k³/3``.
2. **fp32 Gram, float64 Cholesky.** ``A = I + αG`` is symmetric positive definite with
   ``λ_min(A) ≥ 1``, so ``Σ log diag(L) = ½ logdet(A)`` from ``torch.linalg.cholesky_ex``
   (no LU, no sign flips, no host sync for error checking). The Gram is accumulated *and
   stored* in fp32 whatever the input dtype or autocast state: rounding the Gram to bf16/fp16
   is what makes published implementations return NaN (coding-rate reference, §6.1). The
   ``k×k`` matrix ``I + αĜ`` is then formed, factored and log-summed in **float64** (cheap:
   ``k³/3`` flops on the small side) and only the result is rounded to fp32, so everything after
   the Gram contributes at most ``u₃₂·|R|`` plus float64 terms on every CPU (an fp32 Cholesky of
   an ill-conditioned ``A`` is off by about ``u₃₂·cond(A)``, depending on the LAPACK build).
   Forward error of the float32 path (docs: "Coding rate", Accuracy), with ``m`` the contracted
   dimension, ``X`` the factored side (``Z`` or ``Zᵀ``) and ``γ_j(u) = ju/(1 − ju)``::

       |R̂ − R| ≤ u₃₂|R| + √k‖A⁻¹‖₂(α·γ_m(u₃₂)·‖|X|ᵀ|X|‖_F + 1.01(k + 4)u₆₄·tr(A)) + (k + 2)u₆₄|R|
               ≤ u₃₂|R| + k^{3/2}·cond(A)·(γ_m(u₃₂) + 1.01(k + 4)u₆₄) + (k + 2)u₆₄|R|

   (first order; valid when the bound is below ``√k/2``). ``precision="float64"`` replaces
   ``u₃₂`` by ``u₆₄`` in the Gram term and drops the final rounding.
3. **A custom backward.** ``∂R/∂Z = α·Z·A⁻¹`` (``d×d`` form) or ``α·A⁻¹·Z`` (``n×n`` form),
   with no autograd trip through the factorisation. In the float32 path with ``2k ≤ m``,
   ``α·A⁻¹`` is formed in float64 from the saved factor (``cholesky_inverse``, ``k³`` flops),
   rounded to fp32 and applied with one matrix product: for many heads of small ``k`` this is
   far faster than two batched triangular solves against ``m`` right-hand sides. Otherwise
   (square shapes, float64) it is one ``cholesky_solve`` against the saved factor.

**Fallback.** ``I + αG`` is never singular in exact arithmetic, but for very large ``α·‖z‖²``
the rounded fp32 Gram no longer determines its small eigenvalues. The whole call is recomputed
in float64 from the Householder QR of the stacked matrix ``[√α·Z; I]`` (whose ``R`` factor
satisfies ``RᵀR = A`` without ever forming ``A``; it cannot fail for finite input, and its
error is about ``u₃₂|R|`` up to ``cond(A) ≈ 10²⁰``) when any batch element's Cholesky
factorisation fails, or, for an fp32 Gram, when ``1 + α·tr(Ĝ) ≥ λ_max(A) ≥ cond(A)`` exceeds
``2²⁰`` or a pivot falls below ``√½`` (impossible for the exact ``A``). For unit-norm rows
``α·tr(G) = d/ε²``, so only ``d/ε² > 10⁶`` or badly scaled features take this path. Detecting it
costs one device→host read of a boolean in eager mode; under ``torch.compile`` the same choice
is made by ``torch.cond`` inside the graph. Non-finite input (NaN/inf) raises a ``ValueError``
in eager mode (it is detected only on this path, so it costs nothing on the happy path) and
propagates NaN under ``torch.compile``.

**Distributed.** ``all_reduce=True`` sums the ``d×d`` Gram over a process group inside the
forward; the backward sums the incoming gradient over the ranks before returning
``α·z_local·A⁻¹`` times it, the DDP convention of :mod:`jepa_blocks.distributed`: every rank's
copy of the term sends its gradient to every rank's rows, so DDP's averaging yields the
full-batch gradient.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any, Literal

import torch
from torch import Tensor

from jepa_blocks._validation import (
    NonFiniteError,
    check_bool,
    check_positive,
    check_samples,
)

__all__ = [
    "Form",
    "Precision",
    "compute_dtype",
    "gram",
    "half_logdet_i_plus_gram",
    "resolve_form",
]

Form = Literal["auto", "dxd", "nxn"]
Precision = Literal["float32", "float64"]

_FORMS = ("auto", "dxd", "nxn")
_PRECISIONS = ("float32", "float64")


def compute_dtype(dtype: torch.dtype, precision: str) -> torch.dtype:
    """Return the dtype the log-det is computed in: the wider of ``precision`` and ``dtype``.

    Half-precision inputs (fp16, bf16) are always computed in at least float32; float64 inputs
    stay float64 even when ``precision="float32"`` so that double-precision callers (gradcheck,
    references) are never silently downgraded.

    Args:
        dtype: Floating dtype of the input.
        precision: ``"float32"`` or ``"float64"``.

    Returns:
        ``torch.float64`` if either asks for it, else ``torch.float32``.
    """
    if precision not in _PRECISIONS:
        raise ValueError(f"precision must be one of {_PRECISIONS}, got {precision!r}")
    if precision == "float64" or dtype == torch.float64:
        return torch.float64
    return torch.float32


def resolve_form(n: int, d: int, form: str) -> Literal["dxd", "nxn"]:
    """Pick which Gram matrix to factor.

    Args:
        n: Number of samples (rows of ``Z``).
        d: Feature dimension (columns of ``Z``).
        form: ``"auto"`` (the smaller of the two, ``d×d`` on ties), ``"dxd"`` or ``"nxn"``.

    Returns:
        ``"dxd"`` for ``ZᵀZ`` or ``"nxn"`` for ``ZZᵀ``.
    """
    if form not in _FORMS:
        raise ValueError(f"form must be one of {_FORMS}, got {form!r}")
    if form == "auto":
        return "dxd" if d <= n else "nxn"
    return form  # type: ignore[return-value]


def gram(z: Tensor, form: Literal["dxd", "nxn"]) -> Tensor:
    """Gram matrix of the rows (``nxn``: ``ZZᵀ``) or of the columns (``dxd``: ``ZᵀZ``).

    Shape:
        - z: ``(..., n, d)``
        - output: ``(..., d, d)`` for ``"dxd"``, ``(..., n, n)`` for ``"nxn"``
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
    """Dtype of the ``k×k`` island: float64 (fp32 output error bounded by ``u₃₂·|R|``).

    The ``k×k`` matrix is formed (scaled, shifted) and factored in float64 from the Gram computed
    in ``dtype``; only devices without float64 (Apple MPS) keep ``dtype``.
    """
    return dtype if device.type == "mps" else torch.float64


def _qr_factor(z: Tensor, scale: Tensor, form: str) -> Tensor:
    """Lower factor ``L = Rᵀ`` with ``L Lᵀ = I + scale·G`` from the QR of ``[√scale·Z; I]``.

    Householder QR is backward stable and has no failure mode for finite input, so this is the
    fallback when the Cholesky factorisation of the explicitly formed ``I + scale·G`` fails.
    The sign of ``diag(R)`` is irrelevant: ``cholesky_solve`` only uses ``L Lᵀ`` and the
    log-det uses ``|diag(R)|``.
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
    """Factor ``A = I + scale·G(z)`` without autograd.

    The Gram ``G`` is computed in ``z.dtype``; ``A`` is formed and factored in
    :func:`_factor_dtype` (float64). Returns ``(L, half, fallback_L, exact)``: a lower factor with
    ``LLᵀ = A``, ``½ logdet A`` (in the factor dtype), under ``torch.compile`` only a float64
    fallback factor (zeros when unused) for the backward, and, in eager mode, whether ``L`` is
    the float64 QR fallback factor (then the backward is computed in float64 too).

    The fallback is taken when the Cholesky factorisation fails, and, for a Gram computed in
    less than float64, when the cheap bound ``tr(A) − (k − 1) ≥ λ_max(A) ≥ cond(A)`` exceeds
    ``_FP32_COND_LIMIT`` or a pivot falls below ``_MIN_PIVOT`` (the rounded Gram is then too far
    from the exact one for the result to mean anything).
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
        # tr(A) − (k − 1) ≥ λ_max(A) ≥ cond(A) because every eigenvalue of A is ≥ 1. NaN fails
        # both comparisons.
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

    For a float32 ``z`` with a float64 factor, when the factored side is at most half the other
    one (``2k ≤ m``), ``coef·A⁻¹`` is formed explicitly in float64 (``cholesky_inverse``, ``k³``
    flops on ``k×k``), rounded to float32 and applied with one matmul: far fewer and faster
    kernels than two triangular solves against ``m`` right-hand sides, which dominated small
    batched problems. Otherwise (square problems, or float64 ``z``, whose gradient stays exactly
    as before) the factor is used by ``cholesky_solve`` in ``z.dtype`` (``k²m ≤ k³`` flops).
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
        ctx.form = form
        ctx.exact = exact
        ctx.reduce, ctx.group = reduce, group
        ctx.has_fallback = fb_factor is not None
        if fb_factor is None:
            ctx.save_for_backward(z, scale, factor)
        else:
            ctx.save_for_backward(z, scale, factor, fb_factor)
        return half.to(z.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        none = (None, None, None, None, None, None, None, None)
        if not ctx.needs_input_grad[0]:
            return (None, *none)
        z, scale, factor = ctx.saved_tensors[:3]
        if ctx.reduce:  # the summed Gram's backward: every rank's gradient reaches its rows
            grad_out = grad_out.contiguous().clone()
            torch.distributed.all_reduce(grad_out, group=ctx.group)
        # d(½ logdet A)/dZ = scale·Z·A⁻¹ (dxd) or scale·A⁻¹·Z (nxn); A is symmetric.
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
    form: str = "auto",
    precision: str = "float32",
    all_reduce: bool = False,
    group: Any = None,
    fallback: bool = True,
) -> Tensor:
    """``½·logdet(I + scale·ZᵀZ)`` for a batch of matrices, exactly and without NaN.

    Computed from whichever of ``ZᵀZ`` (``d×d``) and ``ZZᵀ`` (``n×n``) is smaller (the values are
    equal by Sylvester's identity): the Gram in float32 (or float64), then a float64 Cholesky
    factorisation of the ``k×k`` matrix, autocast disabled, a custom backward, and a float64
    Householder-QR fallback for factorisations that fail or inputs too ill-conditioned for an
    fp32 Gram (see the module docstring for the error bound and the fallback rule).

    Args:
        z: Samples as rows, any floating dtype (fp16/bf16 inputs are upcast).
        scale: ``α ≥ 0``, a float or a tensor broadcastable to the batch shape ``(...)``.
        form: ``"auto"`` (smaller Gram), ``"dxd"`` or ``"nxn"``.
        precision: ``"float32"`` or ``"float64"``: the least precision of the computation.
        all_reduce: Sum the ``d×d`` Gram over the ranks of ``group`` before factoring
            (requires ``form="dxd"`` and an initialised process group). All ranks must call with
            the same batch shape and ``d``. Gradients follow the DDP convention of
            :mod:`jepa_blocks.distributed` (see the module docstring).
        group: ``torch.distributed`` process group for ``all_reduce`` (``None``: the world).
        fallback: Recompute in float64 (QR) when the factorisation fails or the input is too
            ill-conditioned for an fp32 Gram (default). Turning it off removes the eager-mode
            host sync but lets a failure return NaN and drops the ill-conditioning guard.

    Returns:
        ``½·logdet(I + α·ZᵀZ)`` in the computation dtype (float32 or float64); the float32
        result is the float64 log-det of ``I + α·Ĝ`` (``Ĝ`` the fp32 Gram) rounded once.

    Shape:
        - z: ``(..., n, d)``
        - scale: broadcastable to ``(...)``
        - output: ``(...)``

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
