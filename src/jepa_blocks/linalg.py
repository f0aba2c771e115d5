"""Exact, fast and numerically safe ``½·logdet(I + α·ZᵀZ)`` for a batch of sample matrices.

This is the hot path under every coding-rate quantity in the library. Three ideas make it fast
and safe (see the "Coding rate" docs page for the derivation and the measurements):

1. **Sylvester's determinant identity.** ``logdet(I_d + α ZᵀZ) = logdet(I_n + α Z Zᵀ)`` for
   ``Z ∈ ℝ^{n×d}``, so we factor the smaller of the two Gram matrices (``k = min(n, d)``): the
   Gram costs ``n·d·k`` flops and the factorisation ``k³/3``.
2. **Cholesky in an fp32 (or fp64) island.** ``A = I + αG`` is symmetric positive definite
   with ``λ_min(A) ≥ 1``, so ``Σ log diag(L) = ½ logdet(A)`` from ``torch.linalg.cholesky_ex``
   (no LU, no sign flips, no host sync for error checking). The Gram is accumulated *and
   stored* in fp32 whatever the input dtype or autocast state: rounding the Gram to bf16/fp16
   is what makes published implementations return NaN (coding-rate reference, §6.1).
3. **A custom backward through ``cholesky_solve``.** ``∂R/∂Z = α·Z·A⁻¹`` (``d×d`` form) or
   ``α·A⁻¹·Z`` (``n×n`` form); both are one ``cholesky_solve`` against the saved factor, with no
   explicit inverse and no autograd trip through the factorisation.

**Failure fallback.** ``I + αG`` is never singular in exact arithmetic, but for very large
``α·‖z‖²`` (≳ 1/u, e.g. norms of 1e4 with duplicate rows) its fp32 rounding can be indefinite.
When any batch element's factorisation fails, the whole call is recomputed in float64 from the
Householder QR of the stacked matrix ``[√α·Z; I]`` (whose ``R`` factor satisfies ``RᵀR = A``
without ever forming ``A``), which cannot fail for finite input. Detecting the failure costs one
device→host read of a boolean in eager mode; under ``torch.compile`` the same choice is made by
``torch.cond`` inside the graph. Non-finite input (NaN/inf) raises a ``ValueError`` in eager mode
(it is detected only on this failure path, so it costs nothing on the happy path) and propagates
NaN under ``torch.compile``.

**Distributed.** ``all_reduce=True`` sums the ``d×d`` Gram over a process group inside the
forward; the backward returns each rank's *local* gradient ``α·z_local·A⁻¹`` (identity backward of
the all-reduce), which is exactly the single-process gradient with respect to that rank's rows.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor

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


def _shift_diagonal(a: Tensor) -> Tensor:
    """Return ``a + I`` without materialising an identity matrix."""
    a.diagonal(dim1=-2, dim2=-1).add_(1.0)
    return a


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
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Factor ``A = I + scale·G(z)`` without autograd.

    Returns ``(L, half, fallback_L)``: a lower factor with ``LLᵀ = A``, ``½ logdet A``, and, only
    under ``torch.compile``, a float64 fallback factor (zeros when unused) for the backward. In
    eager mode a failed factorisation is replaced by the float64 one directly.
    """
    g = gram(z, form)  # type: ignore[arg-type]
    if reduce:
        torch.distributed.all_reduce(g, group=group)
    a = _shift_diagonal(g.mul_(scale[..., None, None]))
    factor, info = torch.linalg.cholesky_ex(a)
    half = factor.diagonal(dim1=-2, dim2=-1).log().sum(-1)
    if not fallback or reduce:
        return factor, half, None
    failed = (info != 0).any()
    if torch.compiler.is_compiling():
        k = factor.shape[-1]

        def _recompute(z_: Tensor, s_: Tensor) -> tuple[Tensor, Tensor]:
            f64, h64 = _factor_fallback(z_, s_, form)
            return f64.contiguous(), h64.to(z_.dtype)

        def _skip(z_: Tensor, s_: Tensor) -> tuple[Tensor, Tensor]:
            zeros = z_.new_zeros((*z_.shape[:-2], k, k), dtype=torch.float64)
            return zeros, z_.new_zeros(z_.shape[:-2])

        fb_factor, fb_half = torch.cond(failed, _recompute, _skip, (z, scale))
        return factor, torch.where(failed, fb_half, half), fb_factor
    if bool(failed):
        if not bool(torch.isfinite(z).all()):
            raise ValueError(
                "z contains NaN or inf entries; the coding rate is defined for finite input "
                f"only (z.shape={tuple(z.shape)})"
            )
        return (*_factor_fallback(z, scale, form), None)
    return factor, half, None


def _solve(z: Tensor, factor: Tensor, form: str) -> Tensor:
    """``Z·A⁻¹`` (``dxd``) or ``A⁻¹·Z`` (``nxn``) from a factor of ``A``, in the factor's dtype."""
    zf = z.to(factor.dtype)
    if form == "dxd":
        return torch.cholesky_solve(zf.mT, factor).mT
    return torch.cholesky_solve(zf, factor)


class _AttachLogdetGrad(torch.autograd.Function):
    """Return the precomputed ``½ logdet`` with the gradient ``scale·Z·A⁻¹`` via ``cholesky_solve``."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        z: Tensor,
        scale: Tensor,
        factor: Tensor,
        half: Tensor,
        fb_factor: Tensor | None,
        form: str,
    ) -> Tensor:
        ctx.form = form
        ctx.has_fallback = fb_factor is not None
        if fb_factor is None:
            ctx.save_for_backward(z, scale, factor)
        else:
            ctx.save_for_backward(z, scale, factor, fb_factor)
        return half.to(z.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        none = (None, None, None, None, None)
        if not ctx.needs_input_grad[0]:
            return (None, *none)
        z, scale, factor = ctx.saved_tensors[:3]
        # d(½ logdet A)/dZ = scale·Z·A⁻¹ (dxd) or scale·A⁻¹·Z (nxn); A is symmetric.
        if ctx.has_fallback:  # torch.compile: pick the float64 factor where the fast one failed
            fb_factor = ctx.saved_tensors[3]
            use_fb = (fb_factor.diagonal(dim1=-2, dim2=-1) != 0).any()
            solved = torch.cond(
                use_fb,
                lambda z_, f_, g_: _solve(z_, g_, ctx.form).to(z_.dtype),
                lambda z_, f_, g_: _solve(z_, f_, ctx.form).to(z_.dtype),
                (z, factor, fb_factor),
            )
        else:
            solved = _solve(z, factor, ctx.form)
        coef = (grad_out.to(solved.dtype) * scale.to(solved.dtype))[..., None, None]
        return ((coef * solved).to(z.dtype), *none)


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
    equal by Sylvester's identity), with a Cholesky factorisation in an fp32 (or fp64) island,
    autocast disabled, a custom backward through ``cholesky_solve``, and a float64 Householder-QR
    fallback if the fast factorisation fails (see the module docstring).

    Args:
        z: Samples as rows, any floating dtype (fp16/bf16 inputs are upcast).
        scale: ``α ≥ 0``, a float or a tensor broadcastable to the batch shape ``(...)``.
        form: ``"auto"`` (smaller Gram), ``"dxd"`` or ``"nxn"``.
        precision: ``"float32"`` or ``"float64"``: the least precision of the computation.
        all_reduce: Sum the ``d×d`` Gram over the ranks of ``group`` before factoring
            (requires ``form="dxd"`` and an initialised process group). All ranks must call with
            the same batch shape and ``d``. Gradients are local (see the module docstring).
        group: ``torch.distributed`` process group for ``all_reduce`` (``None``: the world).
        fallback: Recompute in float64 when the factorisation fails (default). Turning it off
            removes the eager-mode host sync but lets an fp32 failure return NaN.

    Returns:
        ``½·logdet(I + α·ZᵀZ)`` in the computation dtype (float32 or float64).

    Shape:
        - z: ``(..., n, d)``
        - scale: broadcastable to ``(...)``
        - output: ``(...)``
    """
    resolved = resolve_form(z.shape[-2], z.shape[-1], form)
    if all_reduce and resolved != "dxd":
        raise ValueError(f"all_reduce needs form='dxd' (the Gram that is summed), got {form!r}")
    dtype = compute_dtype(z.dtype, precision)
    with torch.autocast(device_type=z.device.type, enabled=False):
        zc = z.to(dtype)
        s = torch.as_tensor(scale, dtype=dtype, device=z.device).expand(z.shape[:-2])
        with torch.no_grad():
            factor, half, fb_factor = _factorize(
                zc.detach(), s, resolved, all_reduce, group, fallback
            )
        return _AttachLogdetGrad.apply(zc, s, factor, half, fb_factor, resolved)
