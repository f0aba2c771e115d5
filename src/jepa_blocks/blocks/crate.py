r"""CRATE white-box transformer blocks: MSSA, ISTA, the CRATE layer and encoder, CRATE-α, CRATE-MAE.

Sources:

* Yu, Buchanan, Pai, Chu, Wu, Tong, Haeffele, Ma (NeurIPS 2023), "White-Box Transformers via
  Sparse Rate Reduction" (long form: arXiv:2311.13110). Official code
  ``Ma-Lab-Berkeley/CRATE``, ``model/crate.py``.
* Pai, Buchanan, Wu, Yu, Ma (ICLR 2024), "Masked Completion via Structured Diffusion with
  White-Box Transformers" (CRATE-MAE); same repository, ``model/crate_ae/``.
* Yang, Li, Pai, Xie et al. (NeurIPS 2024), "Scaling White-Box Transformers for Vision"
  (CRATE-α, arXiv:2405.20299). Official code ``UCSC-VLAA/CRATE-alpha``, ``models/crate.py`` (JAX)
  and ``torch_inference/model/crate_alpha.py``.

Conventions: tokens are **rows**, ``x`` has shape ``(B, N, D)``. A dictionary
:math:`D \in \mathbb{R}^{d \times m}` stores one atom per column, so the codes ``a`` of a token
are ``(..., m)`` and the reconstruction is ``a @ D.T``. Each layer maps ``(B, N, D)`` to
``(B, N, D)`` and accepts the ``src_key_padding_mask=`` keyword of
:class:`torch.nn.TransformerEncoderLayer`, so a list of layers can be passed as the ``blocks`` of
:class:`jepa_blocks.seq.Aggregator`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from einops.layers.torch import Rearrange
from torch import Tensor, nn

from jepa_blocks._validation import (
    check_bool,
    check_choice,
    check_floating_tensor,
    check_int,
    check_positive,
    check_probability,
)

__all__ = [
    "CRATE",
    "ISTA",
    "MSSA",
    "CRATEAlpha",
    "CRATEAlphaLayer",
    "CRATEDecoderLayer",
    "CRATELayer",
    "OvercompleteISTA",
    "crate_blocks",
    "ista_step",
    "lasso_objective",
]


# --------------------------------------------------------------------------------------------
# argument checks
# --------------------------------------------------------------------------------------------


def _head_dims(dim: int, heads: int, dim_head: int | None) -> int:
    check_int(dim, "dim")
    check_int(heads, "heads")
    if dim_head is None:
        if dim % heads:
            raise ValueError(
                f"dim must be divisible by heads when dim_head is not given, "
                f"got dim={dim}, heads={heads}"
            )
        return dim // heads
    return check_int(dim_head, "dim_head")


def _check_tokens(x: Any, dim: int, name: str = "x") -> Tensor:
    check_floating_tensor(x, name, min_ndim=2, shape_doc=f"(..., N, {dim})")
    if x.shape[-1] != dim:
        raise ValueError(f"{name} must have shape (..., N, {dim}), got {tuple(x.shape)}")
    return x


def _dictionary(dim: int, atoms: int) -> nn.Parameter:
    """A ``(dim, atoms)`` dictionary with the official code's ``kaiming_uniform_`` init."""
    weight = torch.empty(dim, atoms)
    nn.init.kaiming_uniform_(weight)
    return nn.Parameter(weight)


# --------------------------------------------------------------------------------------------
# head projections, shared with ToST's TSSA
# --------------------------------------------------------------------------------------------


def _resolve_out_bias(out_bias: bool | None, tie_out: bool) -> bool:
    """The checked ``out_bias``; ``None`` means ``not tie_out``."""
    return check_bool(not tie_out if out_bias is None else out_bias, "out_bias")


def _output_map(
    inner: int, dim: int, *, tie_out: bool, out_bias: bool
) -> tuple[nn.Linear | None, nn.Parameter | None]:
    """``(to_out, out_bias)``: a learned ``inner → dim`` map, or (tied) an optional bias only."""
    if tie_out:
        return None, nn.Parameter(torch.zeros(dim)) if out_bias else None
    return nn.Linear(inner, dim, bias=out_bias), None


def _split_heads(w: Tensor, heads: int) -> Tensor:
    """``(..., N, K·p)`` → ``(..., K, N, p)``."""
    return rearrange(w, "... n (k p) -> ... k n p", k=heads)


def _merge_heads(
    y: Tensor, qkv: nn.Linear, to_out: nn.Linear | None, out_bias: Tensor | None
) -> Tensor:
    """Heads ``(..., K, N, p)`` back to tokens: ``to_out``, or the tied map ``qkv.weight.T``."""
    merged = rearrange(y, "... k n p -> ... n (k p)")
    if to_out is not None:
        return to_out(merged)
    return F.linear(merged, qkv.weight.t(), out_bias)


def _subspaces(qkv: nn.Linear, heads: int) -> Tensor:
    """The bases :math:`U_k` as a ``(K, d, p)`` view of ``qkv.weight``."""
    return rearrange(qkv.weight, "(k p) d -> k d p", k=heads)


# --------------------------------------------------------------------------------------------
# MSSA
# --------------------------------------------------------------------------------------------


class MSSA(nn.Module):
    r"""Multi-head subspace self-attention (MSSA), the compression step of CRATE.

    With :math:`K` subspace bases :math:`U_k \in \mathbb{R}^{d \times p}` and the per-head
    projections :math:`W_k = X U_k \in \mathbb{R}^{N \times p}` of the tokens (rows of
    :math:`X`), each head applies subspace self-attention with the projection as query, key
    **and** value,

    .. math::

        \operatorname{SSA}(X \mid U_k) = \operatorname{softmax}\big(s\, W_k W_k^\top\big) W_k,
        \qquad s = p^{-1/2}\ \text{by default},

    (softmax over keys), and the heads are mapped back to :math:`\mathbb{R}^d`:

    * ``tie_out=True``, the **paper form** (Yu et al. 2023, definition of MSSA):
      :math:`\operatorname{MSSA}(X) = [\operatorname{SSA}_1, \dots, \operatorname{SSA}_K]\,
      [U_1, \dots, U_K]^\top`, the output tied to the same bases (no extra parameters). The
      paper's step scale :math:`\gamma = p/(N\varepsilon^2)` and :math:`\kappa` are absorbed,
      as in the paper's practical form :math:`X + \operatorname{MSSA}(\operatorname{LN}(X))`.
    * ``tie_out=False`` (**default**, the official code ``Ma-Lab-Berkeley/CRATE``
      ``model/crate.py``): a separate learned output projection ``to_out`` (with bias), the
      form the official training code uses. The two forms differ **only** in
      that matrix: setting ``to_out.weight = qkv.weight.T`` and a zero bias recovers the paper
      form exactly.

    One bias-free linear map ``qkv`` holds all bases: ``qkv.weight`` is
    :math:`[U_1, \dots, U_K]^\top` (shape ``(K·p, d)``); :meth:`subspaces` returns them as
    ``(K, d, p)``. Orthogonality of the bases is not enforced (neither is it in the official
    code). The attention uses :func:`torch.nn.functional.scaled_dot_product_attention` with
    ``q = k = v``. Unlike the official code, ``to_out`` is kept even when ``heads == 1`` and
    ``dim_head == dim``.

    Args:
        dim: Token dimension :math:`d`.
        heads: Number of subspaces :math:`K`.
        dim_head: Subspace dimension :math:`p`; default ``dim // heads`` (the presets' choice).
        tie_out: ``False`` (default, official code): separate output projection;
            ``True``: the paper form, output through :math:`U^\top`.
        out_bias: Bias on the output map. ``None`` (default) gives ``True`` for the code form
            and ``False`` for the paper form. CRATE-α's torch port uses ``False``.
        use_softmax: ``True`` (default). ``False`` replaces the softmax by the identity,
            :math:`s\,W_k W_k^\top W_k` (the ``use_softmax`` option of the CRATE-MAE decoder).
        scale: Attention scale :math:`s`; default :math:`p^{-1/2}` (official code).
        dropout: Dropout probability on the attention weights and on the output (official
            code: one value for both), active in training mode only.

    Shape:
        - x: ``(..., N, dim)``
        - src_key_padding_mask: ``(..., N)`` boolean, ``True`` for keys to ignore
        - attn_mask: boolean, broadcastable to ``(..., heads, N, N)``, ``True`` = may attend
        - output: ``(..., N, dim)``

    Example:
        >>> from jepa_blocks.blocks import MSSA
        >>> mssa = MSSA(64, heads=4)
        >>> mssa(torch.randn(2, 10, 64)).shape
        torch.Size([2, 10, 64])
    """

    def __init__(
        self,
        dim: int,
        *,
        heads: int,
        dim_head: int | None = None,
        tie_out: bool = False,
        out_bias: bool | None = None,
        use_softmax: bool = True,
        scale: float | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.dim_head = _head_dims(dim, heads, dim_head)
        self.dim = dim
        self.heads = heads
        self.tie_out = check_bool(tie_out, "tie_out")
        out_bias = _resolve_out_bias(out_bias, tie_out)
        self.use_softmax = check_bool(use_softmax, "use_softmax")
        self.scale = self.dim_head**-0.5 if scale is None else check_positive(scale, "scale")
        self.dropout = check_probability(dropout, "dropout")
        inner = heads * self.dim_head
        self.qkv = nn.Linear(dim, inner, bias=False)
        to_out, bias = _output_map(inner, dim, tie_out=tie_out, out_bias=out_bias)
        self.to_out: nn.Linear | None = to_out
        self.out_bias: nn.Parameter | None = bias
        #: Hook point: receives the per-head outputs ``(..., K, N, p)`` before the output map.
        self.head_tap = nn.Identity()

    def subspaces(self) -> Tensor:
        """The bases :math:`U_k` as a ``(K, dim, dim_head)`` view of ``qkv.weight``.

        Returns:
            ``U`` with ``U[k]`` the ``dim × dim_head`` basis of head ``k``.
        """
        return _subspaces(self.qkv, self.heads)

    def _mask(self, attn_mask: Tensor | None, key_padding: Tensor | None) -> Tensor | None:
        mask = None
        if key_padding is not None:
            if key_padding.dtype != torch.bool:
                raise TypeError(
                    f"src_key_padding_mask must be a bool tensor, got {key_padding.dtype}"
                )
            mask = ~key_padding[..., None, None, :]
        if attn_mask is not None:
            if attn_mask.dtype != torch.bool:
                raise TypeError(f"attn_mask must be a bool tensor, got {attn_mask.dtype}")
            mask = attn_mask if mask is None else mask & attn_mask
        return mask

    def forward(
        self,
        x: Tensor,
        *,
        src_key_padding_mask: Tensor | None = None,
        attn_mask: Tensor | None = None,
    ) -> Tensor:
        """Apply MSSA to the (already normalised) tokens ``x``."""
        _check_tokens(x, self.dim)
        w = _split_heads(self.qkv(x), self.heads)
        mask = self._mask(attn_mask, src_key_padding_mask)
        p_drop = self.dropout if self.training else 0.0
        if self.use_softmax:
            heads = F.scaled_dot_product_attention(
                w, w, w, attn_mask=mask, dropout_p=p_drop, scale=self.scale
            )
        else:
            attn = self.scale * (w @ w.transpose(-1, -2))
            if mask is not None:
                attn = attn.masked_fill(~mask, 0.0)
            heads = F.dropout(attn, p_drop, self.training) @ w
        out = _merge_heads(self.head_tap(heads), self.qkv, self.to_out, self.out_bias)
        return F.dropout(out, p_drop, self.training)

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, heads={self.heads}, dim_head={self.dim_head}, "
            f"tie_out={self.tie_out}, use_softmax={self.use_softmax}"
        )


# --------------------------------------------------------------------------------------------
# ISTA
# --------------------------------------------------------------------------------------------


def _check_dictionary_shapes(z: Tensor, dictionary: Tensor, codes: Tensor | None) -> None:
    check_floating_tensor(z, "z", min_ndim=1, shape_doc="(..., d)")
    check_floating_tensor(dictionary, "dictionary", min_ndim=2, shape_doc="(d, m)")
    if dictionary.ndim != 2 or dictionary.shape[0] != z.shape[-1]:
        raise ValueError(
            f"dictionary must have shape (d, m) with d={z.shape[-1]} = z.shape[-1], "
            f"got {tuple(dictionary.shape)}"
        )
    if codes is not None:
        check_floating_tensor(codes, "codes", min_ndim=1, shape_doc="(..., m)")
        if codes.shape[-1] != dictionary.shape[1]:
            raise ValueError(
                f"codes must have shape (..., m) with m={dictionary.shape[1]} atoms, "
                f"got {tuple(codes.shape)}"
            )


def ista_step(
    z: Tensor,
    dictionary: Tensor,
    codes: Tensor | None = None,
    *,
    eta: float = 0.1,
    lambd: float = 0.1,
    nonneg: bool = True,
) -> Tensor:
    r"""One proximal-gradient (ISTA) step on the LASSO of each token.

    For a token :math:`z \in \mathbb{R}^d` and dictionary :math:`D \in \mathbb{R}^{d \times m}`,
    the objective (:func:`lasso_objective`) is

    .. math::

        F(a) = \tfrac12 \lVert z - D a \rVert_2^2 + \lambda \lVert a \rVert_1
               \;\big[ + \iota_{a \ge 0}(a) \big],

    and the step from the codes :math:`a` is

    .. math::

        a^+ = \operatorname{prox}_{\eta\lambda}\big(a + \eta D^\top (z - D a)\big),

    where the prox is :math:`\operatorname{ReLU}(u - \eta\lambda)` with non-negativity (CRATE)
    and the soft threshold :math:`\operatorname{sign}(u)\max(|u| - \eta\lambda, 0)` without.
    CRATE's ISTA block is the step from :math:`a = z` (complete dictionary, :math:`m = d`);
    CRATE-α's first step starts from :math:`a = 0` (``codes=None``).

    **Descent condition.** If :math:`\eta \le 1/\lVert D \rVert_2^2` (spectral norm), the step
    never increases :math:`F` (standard proximal-gradient descent lemma); for non-negative
    LASSO this holds for every feasible start :math:`a \ge 0`. Minimisers of :math:`F` are
    exactly its fixed points (for any :math:`\eta > 0`). Neither CRATE nor CRATE-α enforces
    the condition during training.

    Args:
        z: Tokens to encode.
        dictionary: :math:`D`, one atom per column.
        codes: Current codes :math:`a`; ``None`` means :math:`a = 0` (one matmul fewer).
        eta: Step size :math:`\eta > 0` (official code: 0.1).
        lambd: Sparsity weight :math:`\lambda \ge 0` (official code: 0.1).
        nonneg: ``True`` (CRATE): non-negative LASSO, ReLU prox; ``False``: soft threshold.

    Returns:
        The new codes :math:`a^+`.

    Shape:
        - z: ``(..., d)``
        - dictionary: ``(d, m)``
        - codes: ``(..., m)`` (broadcasts with ``z``)
        - output: ``(..., m)``
    """
    _check_dictionary_shapes(z, dictionary, codes)
    eta = check_positive(eta, "eta")
    threshold = eta * check_positive(lambd, "lambd", allow_zero=True)
    if codes is None:
        u = eta * (z @ dictionary)
    else:
        residual = z - codes @ dictionary.t()
        u = codes + eta * (residual @ dictionary)
    if nonneg:
        return F.relu(u - threshold)
    return F.softshrink(u, threshold)


def lasso_objective(
    z: Tensor,
    dictionary: Tensor,
    codes: Tensor,
    *,
    lambd: float = 0.1,
    nonneg: bool = True,
) -> Tensor:
    r"""LASSO objective :math:`\tfrac12\lVert z - D a\rVert^2 + \lambda\lVert a\rVert_1` per token.

    With ``nonneg=True`` the indicator of :math:`a \ge 0` is included: tokens whose codes have
    a negative entry get ``+inf``. This is the objective :func:`ista_step` is a proximal step
    of.

    Args:
        z: Tokens.
        dictionary: :math:`D`, one atom per column.
        codes: Codes :math:`a`.
        lambd: Sparsity weight :math:`\lambda \ge 0`.
        nonneg: Include the non-negativity constraint.

    Returns:
        :math:`F(a)` for every token.

    Shape:
        - z: ``(..., d)``
        - dictionary: ``(d, m)``
        - codes: ``(..., m)``
        - output: ``(...)``
    """
    _check_dictionary_shapes(z, dictionary, codes)
    lam = check_positive(lambd, "lambd", allow_zero=True)
    residual = z - codes @ dictionary.t()
    value = 0.5 * residual.pow(2).sum(-1) + lam * codes.abs().sum(-1)
    if nonneg:
        infeasible = (codes < 0).any(-1)
        value = torch.where(infeasible, torch.full_like(value, math.inf), value)
    return value


class ISTA(nn.Module):
    r"""CRATE's sparse-coding block: one ISTA step on a complete dictionary, started at the input.

    .. math::

        \operatorname{ISTA}(Z) = \operatorname{ReLU}\big(Z + \eta D^\top (Z - D Z)
            - \eta\lambda \mathbf{1}\big),
        \qquad D \in \mathbb{R}^{d \times d},

    i.e. :func:`ista_step` with ``codes = z``: one proximal step on the non-negative LASSO
    :math:`\min_{A \ge 0} \tfrac12\lVert Z - DA\rVert^2 + \lambda\lVert A\rVert_1` from
    :math:`A = Z` (Yu et al. 2023). The paper's formula and the official code
    (``Ma-Lab-Berkeley/CRATE`` ``model/crate.py``, ``FeedForward``) compute the same map, so
    there is no form switch; this implementation uses two matrix products instead of three.
    Official defaults: :math:`\eta = \lambda = 0.1` (the code hard-codes :math:`\lambda`; the
    CRATE-MAE encoder uses :math:`\lambda = 0.5`), ``kaiming_uniform_`` initialisation, no bias,
    no residual (the block's output replaces the token stream).

    Args:
        dim: Token dimension :math:`d` (also the number of atoms).
        eta: Step size :math:`\eta > 0`. Descent on the LASSO is guaranteed when
            :math:`\eta \le 1/\lVert D\rVert_2^2` (see :func:`ista_step`).
        lambd: Sparsity weight :math:`\lambda \ge 0`.
        nonneg: ``True`` (CRATE): ReLU prox; ``False``: soft threshold.

    Shape:
        - x: ``(..., dim)``
        - output: ``(..., dim)``, non-negative when ``nonneg``
    """

    def __init__(
        self, dim: int, *, eta: float = 0.1, lambd: float = 0.1, nonneg: bool = True
    ) -> None:
        super().__init__()
        self.dim = check_int(dim, "dim")
        self.eta = check_positive(eta, "eta")
        self.lambd = check_positive(lambd, "lambd", allow_zero=True)
        self.nonneg = check_bool(nonneg, "nonneg")
        self.weight = _dictionary(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        """Return the sparse codes of ``x``."""
        return ista_step(x, self.weight, x, eta=self.eta, lambd=self.lambd, nonneg=self.nonneg)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, eta={self.eta}, lambd={self.lambd}, nonneg={self.nonneg}"


class OvercompleteISTA(nn.Module):
    r"""CRATE-α's sparse-coding block: overcomplete dictionary, several ISTA steps, decoupled decoder.

    With :math:`D, D_1 \in \mathbb{R}^{d \times Cd}` (ratio :math:`C`, default 4):

    .. math::

        a_1 = \operatorname{ReLU}(\eta D^\top z - \eta\lambda), \quad
        a_{t+1} = \operatorname{ReLU}\big(a_t - \eta D^\top (D a_t - z) - \eta\lambda\big),
        \quad \hat z = D_1 a_T,

    i.e. ``n_steps`` = :math:`T` calls of :func:`ista_step` from :math:`a = 0`, decoded with
    the separate dictionary :math:`D_1` (``decoupled=True``) or with :math:`D` itself. Official
    code (``UCSC-VLAA/CRATE-alpha``, ``OvercompleteISTABlock``): :math:`T = 2`,
    :math:`\eta = \lambda = 0.1` for every model size, both dictionaries ``kaiming_uniform_``.
    The residual connection is added by :class:`CRATEAlphaLayer`, not here.

    Args:
        dim: Token dimension :math:`d`.
        ratio: Overcompleteness :math:`C` (atoms ``= ratio·dim``).
        n_steps: Number of ISTA steps :math:`T \ge 1`.
        eta: Step size :math:`\eta > 0`.
        lambd: Sparsity weight :math:`\lambda \ge 0`.
        decoupled: Decode with a separate :math:`D_1` (CRATE-α) instead of :math:`D`.
        nonneg: ``True``: ReLU prox (CRATE-α); ``False``: soft threshold.

    Shape:
        - x: ``(..., dim)``
        - output: ``(..., dim)``; the codes seen by ``code_tap`` are ``(..., ratio·dim)``
    """

    def __init__(
        self,
        dim: int,
        *,
        ratio: int = 4,
        n_steps: int = 2,
        eta: float = 0.1,
        lambd: float = 0.1,
        decoupled: bool = True,
        nonneg: bool = True,
    ) -> None:
        super().__init__()
        self.dim = check_int(dim, "dim")
        self.ratio = check_int(ratio, "ratio")
        self.n_steps = check_int(n_steps, "n_steps")
        self.eta = check_positive(eta, "eta")
        self.lambd = check_positive(lambd, "lambd", allow_zero=True)
        self.decoupled = check_bool(decoupled, "decoupled")
        self.nonneg = check_bool(nonneg, "nonneg")
        self.dictionary = _dictionary(dim, ratio * dim)
        self.decoder: nn.Parameter | None = _dictionary(dim, ratio * dim) if decoupled else None
        #: Hook point: receives the final sparse codes ``(..., ratio·dim)``.
        self.code_tap = nn.Identity()

    def encode(self, x: Tensor) -> Tensor:
        """Return the sparse codes :math:`a_T` of ``x``."""
        eta, lambd, nonneg = self.eta, self.lambd, self.nonneg
        codes = ista_step(x, self.dictionary, None, eta=eta, lambd=lambd, nonneg=nonneg)
        for _ in range(self.n_steps - 1):
            codes = ista_step(x, self.dictionary, codes, eta=eta, lambd=lambd, nonneg=nonneg)
        return codes

    def forward(self, x: Tensor) -> Tensor:
        """Return the decoded codes :math:`D_1 a_T`."""
        codes = self.code_tap(self.encode(x))
        decoder = self.dictionary if self.decoder is None else self.decoder
        return codes @ decoder.t()

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, ratio={self.ratio}, n_steps={self.n_steps}, eta={self.eta}, "
            f"lambd={self.lambd}, decoupled={self.decoupled}, nonneg={self.nonneg}"
        )


# --------------------------------------------------------------------------------------------
# layers
# --------------------------------------------------------------------------------------------


class _PreNormMSSA(nn.Module):
    """The compression half shared by :class:`CRATELayer` and :class:`CRATEAlphaLayer`.

    Registers ``norm1``, ``attn`` (an :class:`MSSA`) and ``norm2``, in that order; the subclass
    adds its sparse-coding block and its forward.
    """

    def __init__(
        self,
        dim: int,
        norm_eps: float,
        heads: int,
        dim_head: int | None,
        tie_out: bool,
        out_bias: bool | None,
        dropout: float,
    ) -> None:
        super().__init__()
        norm_eps = check_positive(norm_eps, "norm_eps")
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = MSSA(
            dim, heads=heads, dim_head=dim_head, tie_out=tie_out, out_bias=out_bias, dropout=dropout
        )
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)

    def _attend(
        self, x: Tensor, src_key_padding_mask: Tensor | None, attn_mask: Tensor | None
    ) -> Tensor:
        """``MSSA(LN(x))``, the update before its residual."""
        return self.attn(
            self.norm1(x), src_key_padding_mask=src_key_padding_mask, attn_mask=attn_mask
        )


class CRATELayer(_PreNormMSSA):
    r"""One CRATE layer: compression by MSSA, then sparsification by ISTA.

    .. math::

        Z^{\ell + 1/2} = Z^\ell + \operatorname{MSSA}(\operatorname{LN}(Z^\ell)), \qquad
        Z^{\ell + 1} = \operatorname{ISTA}(\operatorname{LN}(Z^{\ell + 1/2})),

    as in the official code (``Ma-Lab-Berkeley/CRATE`` ``model/crate.py``, ``Transformer``):
    pre-norm on both sub-blocks, a residual around MSSA and **none** around ISTA, whose
    non-negative output replaces the stream.

    Args:
        dim: Token dimension.
        heads: Number of MSSA subspaces.
        dim_head: Subspace dimension; default ``dim // heads``.
        tie_out: MSSA form (see :class:`MSSA`); default ``False`` (official code).
        out_bias: MSSA output bias; ``None``: ``not tie_out``.
        eta: ISTA step size (official: 0.1).
        lambd: ISTA sparsity weight (official: 0.1; CRATE-MAE encoder: 0.5).
        nonneg: ISTA non-negativity.
        dropout: MSSA dropout.
        norm_eps: LayerNorm epsilon (official CRATE: PyTorch's 1e-5).

    Shape:
        - x: ``(B, N, dim)`` (any leading dimensions)
        - src_key_padding_mask: ``(B, N)`` boolean, ``True`` for tokens to ignore as keys
        - attn_mask: boolean, broadcastable to ``(B, heads, N, N)``, ``True`` = may attend
        - output: ``(B, N, dim)``
    """

    def __init__(
        self,
        dim: int,
        *,
        heads: int,
        dim_head: int | None = None,
        tie_out: bool = False,
        out_bias: bool | None = None,
        eta: float = 0.1,
        lambd: float = 0.1,
        nonneg: bool = True,
        dropout: float = 0.0,
        norm_eps: float = 1e-5,
    ) -> None:
        super().__init__(dim, norm_eps, heads, dim_head, tie_out, out_bias, dropout)
        self.ista = ISTA(dim, eta=eta, lambd=lambd, nonneg=nonneg)

    def forward(
        self,
        x: Tensor,
        *,
        src_key_padding_mask: Tensor | None = None,
        attn_mask: Tensor | None = None,
    ) -> Tensor:
        """Apply the layer."""
        h = x + self._attend(x, src_key_padding_mask, attn_mask)
        return self.ista(self.norm2(h))


class CRATEAlphaLayer(_PreNormMSSA):
    r"""One CRATE-α layer: MSSA and an overcomplete ISTA block, both with residuals.

    .. math::

        Z^{\ell + 1/2} = Z^\ell + \gamma_1 \odot \operatorname{MSSA}(\operatorname{LN}(Z^\ell)),
        \qquad
        Z^{\ell + 1} = Z^{\ell + 1/2}
            + \gamma_2 \odot \operatorname{ODL}(\operatorname{LN}(Z^{\ell + 1/2})),

    with ODL the :class:`OvercompleteISTA` block (Yang et al. 2024; official code
    ``UCSC-VLAA/CRATE-alpha``, ``Encoder1DBlock``). The optional LayerScale vectors
    :math:`\gamma_{1,2}` (initialised to ``layer_scale``) are absent by default; drop-path is
    not implemented. Defaults follow the torch port: MSSA output without bias, LayerNorm
    epsilon 1e-6.

    Args:
        dim: Token dimension.
        heads: Number of MSSA subspaces.
        dim_head: Subspace dimension; default ``dim // heads``.
        ratio: Dictionary overcompleteness (official: 4).
        n_steps: ISTA steps (official: 2).
        eta: ISTA step size (official: 0.1).
        lambd: ISTA sparsity weight (official: 0.1).
        decoupled: Decode with a separate dictionary (official: ``True``).
        nonneg: ISTA non-negativity.
        tie_out: MSSA form (see :class:`MSSA`); default ``False``.
        out_bias: MSSA output bias (official torch port: ``False``).
        layer_scale: Initial LayerScale value, or ``None`` (default) for no LayerScale.
        dropout: MSSA dropout.
        norm_eps: LayerNorm epsilon.

    Shape:
        - x: ``(B, N, dim)`` (any leading dimensions)
        - src_key_padding_mask: ``(B, N)`` boolean, ``True`` for tokens to ignore as keys
        - attn_mask: boolean, broadcastable to ``(B, heads, N, N)``, ``True`` = may attend
        - output: ``(B, N, dim)``
    """

    def __init__(
        self,
        dim: int,
        *,
        heads: int,
        dim_head: int | None = None,
        ratio: int = 4,
        n_steps: int = 2,
        eta: float = 0.1,
        lambd: float = 0.1,
        decoupled: bool = True,
        nonneg: bool = True,
        tie_out: bool = False,
        out_bias: bool | None = False,
        layer_scale: float | None = None,
        dropout: float = 0.0,
        norm_eps: float = 1e-6,
    ) -> None:
        super().__init__(dim, norm_eps, heads, dim_head, tie_out, out_bias, dropout)
        self.ista = OvercompleteISTA(
            dim,
            ratio=ratio,
            n_steps=n_steps,
            eta=eta,
            lambd=lambd,
            decoupled=decoupled,
            nonneg=nonneg,
        )
        self.gamma1: nn.Parameter | None = None
        self.gamma2: nn.Parameter | None = None
        if layer_scale is not None:
            ls = check_positive(layer_scale, "layer_scale")
            self.gamma1 = nn.Parameter(torch.full((dim,), ls))
            self.gamma2 = nn.Parameter(torch.full((dim,), ls))

    def forward(
        self,
        x: Tensor,
        *,
        src_key_padding_mask: Tensor | None = None,
        attn_mask: Tensor | None = None,
    ) -> Tensor:
        """Apply the layer."""
        h = self._attend(x, src_key_padding_mask, attn_mask)
        x = x + (h if self.gamma1 is None else self.gamma1 * h)
        h = self.ista(self.norm2(x))
        return x + (h if self.gamma2 is None else self.gamma2 * h)


class CRATEDecoderLayer(nn.Module):
    r"""One CRATE-MAE decoder layer: a linear dictionary map, then MSSA subtracted.

    The decoder inverts an encoder layer (Pai et al. 2024; official code
    ``Ma-Lab-Berkeley/CRATE`` ``model/crate_ae/crate_decoder.py``, ``Block_CRATE``):

    .. math::

        Y^{\ell + 1/2} = D\, \operatorname{LN}(Y^\ell), \qquad
        Y^{\ell + 1} = Y^{\ell + 1/2} - \operatorname{MSSA}(\operatorname{LN}(Y^{\ell + 1/2})),

    a plain linear map :math:`D \in \mathbb{R}^{d \times d}` (no ReLU, no bias; applied to row
    tokens as ``y @ D.T``) followed by the **negated** MSSA step, which undoes compression.

    Args:
        dim: Token dimension.
        heads: Number of MSSA subspaces (official decoders: as many as the encoder).
        dim_head: Subspace dimension; default ``dim // heads``.
        use_softmax: MSSA softmax (official default ``True``).
        tie_out: MSSA form (see :class:`MSSA`); default ``False``.
        out_bias: MSSA output bias; ``None``: ``not tie_out``.
        dropout: MSSA dropout.
        norm_eps: LayerNorm epsilon (CRATE-MAE: 1e-6).

    Shape:
        - y: ``(B, N, dim)`` (any leading dimensions)
        - src_key_padding_mask: ``(B, N)`` boolean, ``True`` for tokens to ignore as keys
        - attn_mask: boolean, broadcastable to ``(B, heads, N, N)``, ``True`` = may attend
        - output: ``(B, N, dim)``
    """

    def __init__(
        self,
        dim: int,
        *,
        heads: int,
        dim_head: int | None = None,
        use_softmax: bool = True,
        tie_out: bool = False,
        out_bias: bool | None = None,
        dropout: float = 0.0,
        norm_eps: float = 1e-6,
    ) -> None:
        super().__init__()
        norm_eps = check_positive(norm_eps, "norm_eps")
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.weight = _dictionary(dim, dim)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = MSSA(
            dim,
            heads=heads,
            dim_head=dim_head,
            tie_out=tie_out,
            out_bias=out_bias,
            use_softmax=use_softmax,
            dropout=dropout,
        )

    def forward(
        self,
        y: Tensor,
        *,
        src_key_padding_mask: Tensor | None = None,
        attn_mask: Tensor | None = None,
    ) -> Tensor:
        """Apply the decoder layer."""
        h = F.linear(self.norm1(y), self.weight)
        return h - self.attn(
            self.norm2(h), src_key_padding_mask=src_key_padding_mask, attn_mask=attn_mask
        )


_LAYERS = (CRATELayer, CRATEAlphaLayer, CRATEDecoderLayer)


def crate_blocks(
    *,
    dim: int,
    depth: int = 3,
    heads: int = 4,
    layer: type[nn.Module] = CRATELayer,
    **layer_kwargs: Any,
) -> nn.ModuleList:
    """A stack of ``depth`` independently initialised CRATE layers (e.g. an aggregator stack).

    A drop-in for :func:`jepa_blocks.seq.transformer_blocks`: the defaults keep the seq-JEPA
    aggregator's shape (3 layers, 4 heads) with CRATE layers in place of transformer layers.

    Args:
        dim: Token dimension.
        depth: Number of layers.
        heads: MSSA subspaces per layer.
        layer: The layer class: :class:`CRATELayer` (default), :class:`CRATEAlphaLayer` or
            :class:`CRATEDecoderLayer` (or a subclass).
        **layer_kwargs: Further keywords for every layer (``dim_head``, ``tie_out``, ``eta``,
            ``lambd``, ...), validated by the layer.

    Returns:
        The layers, to pass as ``blocks`` to :class:`jepa_blocks.seq.Aggregator`.

    Shape:
        - each layer: ``(B, N, dim)`` → ``(B, N, dim)``
    """
    check_int(depth, "depth")
    if not (isinstance(layer, type) and issubclass(layer, _LAYERS)):
        raise TypeError(
            f"layer must be CRATELayer, CRATEAlphaLayer or CRATEDecoderLayer (or a subclass), "
            f"got {layer!r}"
        )
    return nn.ModuleList([layer(dim, heads=heads, **layer_kwargs) for _ in range(depth)])


# --------------------------------------------------------------------------------------------
# image encoders
# --------------------------------------------------------------------------------------------


def _pair(value: Any, name: str) -> tuple[int, int]:
    pair = value if isinstance(value, tuple) else (value, value)
    if len(pair) != 2:
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    return (check_int(pair[0], name), check_int(pair[1], name))


class _PatchEncoder(nn.Module):
    """Patch embedding + cls token + learned positions + a layer stack + pooling + head.

    The stem of :class:`CRATE` and :class:`CRATEAlpha`; a subclass sets ``_PATCH_NORM`` (the
    LayerNorms around the patch projection), ``PRESETS`` and ``_PRESET_DEFAULTS``.
    """

    #: LayerNorm before and after the linear patch projection (CRATE) or not (CRATE-α).
    _PATCH_NORM: ClassVar[bool] = True
    #: Named presets: constructor keywords per preset name.
    PRESETS: ClassVar[dict[str, dict[str, int]]] = {}
    #: Constructor keywords shared by every preset (overridden by the preset's own).
    _PRESET_DEFAULTS: ClassVar[dict[str, int]] = {}

    def __init__(
        self,
        layers: Iterable[nn.Module],
        image_size: int | tuple[int, int],
        patch_size: int | tuple[int, int],
        in_channels: int,
        dim: int,
        num_classes: int,
        pool: str,
        emb_dropout: float,
    ) -> None:
        super().__init__()
        ih, iw = _pair(image_size, "image_size")
        ph, pw = _pair(patch_size, "patch_size")
        if ih % ph or iw % pw:
            raise ValueError(
                f"image_size must be divisible by patch_size, got image_size={image_size!r}, "
                f"patch_size={patch_size!r}"
            )
        check_int(in_channels, "in_channels")
        check_int(num_classes, "num_classes", minimum=0)
        self.pool = check_choice(pool, "pool", ("cls", "mean"))
        self.image_size = (ih, iw)
        self.patch_size = (ph, pw)
        self.in_channels = in_channels
        self.dim = dim
        self.num_patches = (ih // ph) * (iw // pw)
        patch_dim = in_channels * ph * pw
        stem: list[nn.Module] = [Rearrange("b c (h p1) (w p2) -> b (h w) (p1 p2 c)", p1=ph, p2=pw)]
        if self._PATCH_NORM:
            stem += [nn.LayerNorm(patch_dim), nn.Linear(patch_dim, dim), nn.LayerNorm(dim)]
        else:
            stem += [nn.Linear(patch_dim, dim)]
        self.patch_embedding = nn.Sequential(*stem)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim))
        self.pos_embedding = nn.Parameter(torch.randn(1, self.num_patches + 1, dim))
        self.emb_dropout = nn.Dropout(check_probability(emb_dropout, "emb_dropout"))
        self.layers = nn.ModuleList(layers)
        self.head: nn.Module = (
            nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, num_classes))
            if num_classes > 0
            else nn.Identity()
        )

    def forward_features(self, images: Tensor) -> Tensor:
        """Return all output tokens, cls token first.

        Args:
            images: A batch of images of the configured size.

        Returns:
            The tokens after the last layer.

        Shape:
            - images: ``(B, C, H, W)``
            - output: ``(B, 1 + num_patches, dim)``
        """
        check_floating_tensor(images, "images", min_ndim=4, shape_doc="(B, C, H, W)")
        if images.ndim != 4 or tuple(images.shape[1:]) != (self.in_channels, *self.image_size):
            raise ValueError(
                f"images must have shape (B, {self.in_channels}, {self.image_size[0]}, "
                f"{self.image_size[1]}), got {tuple(images.shape)}"
            )
        x = self.patch_embedding(images)
        cls = repeat(self.cls_token, "1 1 d -> b 1 d", b=x.shape[0]).to(x.dtype)
        x = torch.cat([cls, x], dim=1) + self.pos_embedding.to(x.dtype)
        x = self.emb_dropout(x)
        for layer in self.layers:
            x = layer(x)
        return x

    def forward(self, images: Tensor) -> Tensor:
        """Return the head output (logits, or pooled features when ``num_classes == 0``).

        Shape:
            - images: ``(B, C, H, W)``
            - output: ``(B, num_classes)``, or ``(B, dim)`` when ``num_classes == 0``
        """
        x = self.forward_features(images)
        pooled = x[:, 0] if self.pool == "cls" else x.mean(dim=1)
        return self.head(pooled)

    @classmethod
    def _preset_kwargs(cls, name: str, overrides: dict[str, Any]) -> dict[str, Any]:
        """Constructor keywords of preset ``name``: shared defaults, the preset, ``overrides``."""
        check_choice(name, "name", tuple(cls.PRESETS))
        return {**cls._PRESET_DEFAULTS, **cls.PRESETS[name], **overrides}


class CRATE(_PatchEncoder):
    r"""CRATE image encoder: patch embedding, cls token, :class:`CRATELayer` stack, head.

    Stem as in the official code (``Ma-Lab-Berkeley/CRATE`` ``model/crate.py``): non-overlapping
    patches flattened as ``(p1 p2 c)`` → LayerNorm → Linear → LayerNorm, a learned cls token and
    learned positional embedding (both ``randn`` initialised), then ``depth`` CRATE layers and a
    LayerNorm + Linear head on the cls token (or the token mean). With ``num_classes=0`` the
    head is the identity and :meth:`forward` returns the pooled ``(B, dim)`` features.

    Presets (:meth:`tiny`, :meth:`small`, :meth:`base`, :meth:`large`; image 224, patch 16,
    ``dim_head = dim / heads``, 1000 classes, dropout 0), from the official code:

    ======  ====  =====  =====
    preset  dim   heads  depth
    ======  ====  =====  =====
    tiny    384   6      12
    small   576   12     12
    base    768   12     12
    large   1024  16     24
    ======  ====  =====  =====

    Args:
        image_size: Image height and width (int or pair).
        patch_size: Patch height and width (int or pair); must divide ``image_size``.
        in_channels: Image channels.
        dim: Token dimension.
        depth: Number of layers.
        heads: MSSA subspaces per layer.
        dim_head: Subspace dimension; default ``dim // heads``.
        num_classes: Head outputs; 0 for no head.
        pool: ``"cls"`` (default) or ``"mean"``.
        tie_out: MSSA form (see :class:`MSSA`); default ``False`` (official code).
        eta: ISTA step size.
        lambd: ISTA sparsity weight.
        dropout: MSSA dropout.
        emb_dropout: Dropout after adding the positional embedding.

    Shape:
        - images: ``(B, in_channels, H, W)``
        - output: ``(B, num_classes)``, or ``(B, dim)`` when ``num_classes == 0``
    """

    PRESETS: ClassVar[dict[str, dict[str, int]]] = {
        "tiny": {"dim": 384, "heads": 6, "depth": 12},
        "small": {"dim": 576, "heads": 12, "depth": 12},
        "base": {"dim": 768, "heads": 12, "depth": 12},
        "large": {"dim": 1024, "heads": 16, "depth": 24},
    }
    _PRESET_DEFAULTS: ClassVar[dict[str, int]] = {
        "image_size": 224,
        "patch_size": 16,
        "num_classes": 1000,
    }

    def __init__(
        self,
        *,
        image_size: int | tuple[int, int] = 224,
        patch_size: int | tuple[int, int] = 16,
        in_channels: int = 3,
        dim: int = 384,
        depth: int = 12,
        heads: int = 6,
        dim_head: int | None = None,
        num_classes: int = 0,
        pool: str = "cls",
        tie_out: bool = False,
        eta: float = 0.1,
        lambd: float = 0.1,
        dropout: float = 0.0,
        emb_dropout: float = 0.0,
    ) -> None:
        layers = crate_blocks(
            dim=dim,
            depth=depth,
            heads=heads,
            dim_head=dim_head,
            tie_out=tie_out,
            eta=eta,
            lambd=lambd,
            dropout=dropout,
        )
        super().__init__(
            layers, image_size, patch_size, in_channels, dim, num_classes, pool, emb_dropout
        )

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> CRATE:
        """Build a preset (``"tiny"``, ``"small"``, ``"base"``, ``"large"``), 1000 classes.

        Args:
            name: Preset name.
            **overrides: Any constructor keyword, e.g. ``num_classes=0`` or ``image_size=32``.

        Returns:
            The model.
        """
        return cls(**cls._preset_kwargs(name, overrides))

    @classmethod
    def tiny(cls, **overrides: Any) -> CRATE:
        """CRATE-T: dim 384, 6 heads, depth 12 (see :meth:`from_preset`)."""
        return cls.from_preset("tiny", **overrides)

    @classmethod
    def small(cls, **overrides: Any) -> CRATE:
        """CRATE-S: dim 576, 12 heads, depth 12 (see :meth:`from_preset`)."""
        return cls.from_preset("small", **overrides)

    @classmethod
    def base(cls, **overrides: Any) -> CRATE:
        """CRATE-B: dim 768, 12 heads, depth 12 (see :meth:`from_preset`)."""
        return cls.from_preset("base", **overrides)

    @classmethod
    def large(cls, **overrides: Any) -> CRATE:
        """CRATE-L: dim 1024, 16 heads, depth 24 (see :meth:`from_preset`)."""
        return cls.from_preset("large", **overrides)


class CRATEAlpha(_PatchEncoder):
    r"""CRATE-α image encoder: linear patch embedding, cls token, :class:`CRATEAlphaLayer` stack.

    As the official torch port (``UCSC-VLAA/CRATE-alpha``
    ``torch_inference/model/crate_alpha.py``): the patch embedding is a single linear map of the
    flattened patches (equal to its stride-``patch`` convolution), without the LayerNorms of
    CRATE's stem; then a cls token, learned positions, the layers, and a LayerNorm + Linear
    head on the cls token.

    Presets (:meth:`base`, :meth:`large`; image 224, 1000 classes): base = dim 768, 12 heads,
    depth 12, patch 16 (B/16); large = dim 1024, 16 heads, depth 24, patch 14 (L/14). The paper
    also reports patch sizes 32 and 8; pass ``patch_size=`` to get them.

    Args:
        image_size: Image height and width (int or pair).
        patch_size: Patch height and width (int or pair); must divide ``image_size``.
        in_channels: Image channels.
        dim: Token dimension.
        depth: Number of layers.
        heads: MSSA subspaces per layer.
        dim_head: Subspace dimension; default ``dim // heads``.
        num_classes: Head outputs; 0 for no head.
        pool: ``"cls"`` (default) or ``"mean"``.
        ratio: Dictionary overcompleteness.
        n_steps: ISTA steps per layer.
        eta: ISTA step size.
        lambd: ISTA sparsity weight.
        layer_scale: Initial LayerScale, or ``None``.
        dropout: MSSA dropout.
        emb_dropout: Dropout after adding the positional embedding.

    Shape:
        - images: ``(B, in_channels, H, W)``
        - output: ``(B, num_classes)``, or ``(B, dim)`` when ``num_classes == 0``
    """

    PRESETS: ClassVar[dict[str, dict[str, int]]] = {
        "base": {"dim": 768, "heads": 12, "depth": 12, "patch_size": 16},
        "large": {"dim": 1024, "heads": 16, "depth": 24, "patch_size": 14},
    }
    _PRESET_DEFAULTS: ClassVar[dict[str, int]] = {"image_size": 224, "num_classes": 1000}
    _PATCH_NORM = False

    def __init__(
        self,
        *,
        image_size: int | tuple[int, int] = 224,
        patch_size: int | tuple[int, int] = 16,
        in_channels: int = 3,
        dim: int = 768,
        depth: int = 12,
        heads: int = 12,
        dim_head: int | None = None,
        num_classes: int = 0,
        pool: str = "cls",
        ratio: int = 4,
        n_steps: int = 2,
        eta: float = 0.1,
        lambd: float = 0.1,
        layer_scale: float | None = None,
        dropout: float = 0.0,
        emb_dropout: float = 0.0,
    ) -> None:
        layers = crate_blocks(
            dim=dim,
            depth=depth,
            heads=heads,
            layer=CRATEAlphaLayer,
            dim_head=dim_head,
            ratio=ratio,
            n_steps=n_steps,
            eta=eta,
            lambd=lambd,
            layer_scale=layer_scale,
            dropout=dropout,
        )
        super().__init__(
            layers, image_size, patch_size, in_channels, dim, num_classes, pool, emb_dropout
        )

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> CRATEAlpha:
        """Build a preset (``"base"``, ``"large"``), image 224, 1000 classes.

        Args:
            name: Preset name.
            **overrides: Any constructor keyword.

        Returns:
            The model.
        """
        return cls(**cls._preset_kwargs(name, overrides))

    @classmethod
    def base(cls, **overrides: Any) -> CRATEAlpha:
        """CRATE-α-B/16: dim 768, 12 heads, depth 12, patch 16 (see :meth:`from_preset`)."""
        return cls.from_preset("base", **overrides)

    @classmethod
    def large(cls, **overrides: Any) -> CRATEAlpha:
        """CRATE-α-L/14: dim 1024, 16 heads, depth 24, patch 14 (see :meth:`from_preset`)."""
        return cls.from_preset("large", **overrides)
