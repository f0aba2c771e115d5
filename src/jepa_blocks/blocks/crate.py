r"""CRATE white-box transformer blocks: MSSA, ISTA, the CRATE layer and encoder, CRATE-α, CRATE-MAE.

Official code ``Ma-Lab-Berkeley/CRATE`` and ``UCSC-VLAA/CRATE-alpha``. Tokens are rows,
``(B, N, D)``; a dictionary ``(d, m)`` has one atom per column: codes ``a`` ``(..., m)``
reconstruct ``a @ D.T``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, ClassVar, Literal, TypeVar, get_args

import torch
import torch.nn.functional as F
from einops import repeat
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
from jepa_blocks.blocks._heads import (
    HeadProjection,
    check_padding,
    check_tokens,
    layer_scales,
    scaled,
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


def _dictionary(dim: int, atoms: int) -> nn.Parameter:
    """A ``(dim, atoms)`` dictionary with the official code's ``kaiming_uniform_`` init."""
    weight = torch.empty(dim, atoms)
    nn.init.kaiming_uniform_(weight)
    return nn.Parameter(weight)


class _TokenLayer(nn.Module):
    """Base of :class:`MSSA` and the CRATE layers: the masked ``forward`` of all of them."""

    dim: int

    def forward(
        self,
        x: Tensor,
        *,
        src_key_padding_mask: Tensor | None = None,
        attn_mask: Tensor | None = None,
    ) -> Tensor:
        """Apply the module to the tokens ``x`` (for :class:`MSSA`: already normalised).

        Raises:
            ValueError: A mask of the wrong shape, or (softmax) one that leaves a query no key.
        """
        check_tokens(x, self.dim)
        return self._forward(x, src_key_padding_mask, attn_mask)

    def _forward(self, x: Tensor, key_padding: Tensor | None, attn_mask: Tensor | None) -> Tensor:
        raise NotImplementedError


class MSSA(_TokenLayer, HeadProjection):
    r"""Multi-head subspace self-attention (MSSA), the compression step of CRATE.

    Each head uses :math:`W_k = X U_k` as query, key **and** value,
    :math:`\operatorname{softmax}(s\, W_k W_k^\top) W_k`, mapped back by a learned ``to_out``
    (official code) or the bases (``tie_out=True``, paper form). ``qkv`` (no bias) holds the
    bases, not kept orthogonal.

    Args:
        dim: Token dimension :math:`d`.
        heads: Number of subspaces :math:`K`.
        dim_head: Subspace dimension :math:`p`; default ``dim // heads``.
        tie_out: ``True``: the paper form, output through :math:`U^\top`.
        out_bias: Bias on the output map; ``None``: ``not tie_out`` (CRATE-α's port: ``False``).
        use_softmax: ``False``: the identity instead of the softmax (CRATE-MAE decoder option).
        scale: Attention scale :math:`s`; default :math:`p^{-1/2}`.
        dropout: Dropout on the attention weights and the output (training only).

    Shape:
        - x: ``(..., N, dim)``; output: ``(..., N, dim)``
        - src_key_padding_mask: ``(..., N)`` boolean, ``True`` for keys to ignore
        - attn_mask: boolean, broadcastable to ``(..., heads, N, N)``, ``True`` = may attend

    Example:
        >>> from jepa_blocks.blocks import MSSA
        >>> MSSA(64, heads=4)(torch.randn(2, 10, 64)).shape
        torch.Size([2, 10, 64])
    """

    def __init__(
        self,
        dim: int,
        *,
        heads: int = 4,
        dim_head: int | None = None,
        tie_out: bool = False,
        out_bias: bool | None = None,
        use_softmax: bool = True,
        scale: float | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(dim, heads, dim_head, qkv_bias=False, tie_out=tie_out)
        self.use_softmax = check_bool(use_softmax, "use_softmax")
        self.scale = self.dim_head**-0.5 if scale is None else check_positive(scale, "scale")
        self.dropout = check_probability(dropout, "dropout")
        self._add_output_map(out_bias)
        #: Hook point: receives the per-head outputs ``(..., K, N, p)`` before the output map.
        self.head_tap = nn.Identity()

    def _mask(self, x: Tensor, attn_mask: Any, key_padding: Any) -> Tensor | None:
        mask = None
        if check_padding(key_padding, x, "src_key_padding_mask") is not None:
            mask = ~key_padding[..., None, None, :]
        if attn_mask is not None:
            scores = (*x.shape[:-2], self.heads, x.shape[-2], x.shape[-2])
            if not isinstance(attn_mask, Tensor) or attn_mask.dtype != torch.bool:
                raise TypeError(f"attn_mask must be a bool tensor, got {attn_mask!r}")
            if _broadcast(attn_mask.shape, scores) != scores:
                raise ValueError(f"attn_mask must broadcast to {scores}, got {attn_mask.shape}")
            mask = attn_mask if mask is None else mask & attn_mask
        compiling = torch.compiler.is_compiling()
        if mask is not None and self.use_softmax and not compiling and not mask.any(-1).all():
            raise ValueError("src_key_padding_mask/attn_mask leave a query with no key (NaN)")
        return mask

    def _forward(self, x: Tensor, key_padding: Tensor | None, attn_mask: Tensor | None) -> Tensor:
        w = self._split(x)
        mask = self._mask(x, attn_mask, key_padding)
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
        return F.dropout(self._merge(self.head_tap(heads)), p_drop, self.training)

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, heads={self.heads}, dim_head={self.dim_head}, "
            f"tie_out={self.tie_out}, use_softmax={self.use_softmax}"
        )


def _broadcast(*shapes: tuple[int, ...]) -> tuple[int, ...] | None:
    """The broadcast of ``shapes``, or ``None`` if they do not broadcast."""
    try:
        return tuple(torch.broadcast_shapes(*shapes))
    except RuntimeError:
        return None


def _check_last(x: Tensor, dim: int) -> None:
    if check_floating_tensor(x, "x", min_ndim=1).shape[-1] != dim:
        raise ValueError(f"x must have shape (..., {dim}), got {tuple(x.shape)}")


def _check_dictionary_shapes(z: Tensor, dictionary: Tensor, codes: Tensor | None) -> None:
    check_floating_tensor(z, "z", min_ndim=1, shape_doc="(..., d)")
    check_floating_tensor(dictionary, "dictionary", min_ndim=2, shape_doc="(d, m)")
    d, m, got = z.shape[-1], dictionary.shape[-1], tuple(dictionary.shape)
    if dictionary.ndim != 2 or dictionary.shape[0] != d:
        raise ValueError(f"dictionary must have shape (d, m) with d={d} = z.shape[-1], got {got}")
    if codes is not None:
        check_floating_tensor(codes, "codes", min_ndim=1, shape_doc="(..., m)")
        if codes.shape[-1] != m or _broadcast(codes.shape[:-1], z.shape[:-1]) is None:
            raise ValueError(
                f"codes must have shape (..., m) with m={m}, broadcasting with z "
                f"{tuple(z.shape)}, got {tuple(codes.shape)}"
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
    r"""One proximal-gradient (ISTA) step on the LASSO of each token (:func:`lasso_objective`).

    :math:`a^+ = \operatorname{prox}_{\eta\lambda}\big(a + \eta D^\top (z - D a)\big)`, the prox
    :math:`\operatorname{ReLU}(u - \eta\lambda)` under non-negativity (CRATE), else the soft
    threshold. It never increases the objective if :math:`\eta \le 1/\lVert D \rVert_2^2`.

    Args:
        z: Tokens to encode.
        dictionary: :math:`D`, one atom per column.
        codes: Current codes :math:`a`; ``None`` means :math:`a = 0` (one matmul fewer).
        eta: Step size :math:`\eta > 0`.
        lambd: Sparsity weight :math:`\lambda \ge 0`.
        nonneg: ``True`` (CRATE): non-negative LASSO, ReLU prox; ``False``: soft threshold.

    Shape:
        - z: ``(..., d)``; dictionary: ``(d, m)``; codes: ``(..., m)`` (broadcasts with ``z``)
        - output: ``(..., m)``
    """
    _check_dictionary_shapes(z, dictionary, codes)
    check_bool(nonneg, "nonneg")
    eta = check_positive(eta, "eta")
    threshold = eta * check_positive(lambd, "lambd", allow_zero=True)
    if codes is None:
        u = eta * (z @ dictionary)
    else:
        u = codes + eta * ((z - codes @ dictionary.t()) @ dictionary)
    return F.relu(u - threshold) if nonneg else F.softshrink(u, threshold)


def lasso_objective(
    z: Tensor, dictionary: Tensor, codes: Tensor, *, lambd: float = 0.1, nonneg: bool = True
) -> Tensor:
    r"""LASSO objective of each token, the one :func:`ista_step` is a proximal step on.

    :math:`F(a) = \tfrac12 \lVert z - D a \rVert_2^2 + \lambda \lVert a \rVert_1`, ``+inf`` for
    codes with a negative entry when ``nonneg``.

    Args:
        z: Tokens.
        dictionary: :math:`D`, one atom per column.
        codes: Codes :math:`a`.
        lambd, nonneg: As :func:`ista_step`.

    Shape:
        - z: ``(..., d)``; dictionary: ``(d, m)``; codes: ``(..., m)``; output: ``(...)``
    """
    _check_dictionary_shapes(z, dictionary, check_floating_tensor(codes, "codes"))
    check_bool(nonneg, "nonneg")
    lam = check_positive(lambd, "lambd", allow_zero=True)
    residual = z - codes @ dictionary.t()
    value = 0.5 * residual.pow(2).sum(-1) + lam * codes.abs().sum(-1)
    if nonneg:
        value = torch.where((codes < 0).any(-1), torch.full_like(value, math.inf), value)
    return value


class ISTA(nn.Module):
    r"""CRATE's sparse-coding block: one ISTA step on a complete dictionary, started at the input.

    :func:`ista_step` with ``codes = z`` and a ``(d, d)`` dictionary (official ``FeedForward``,
    ``model/crate.py``): ``kaiming_uniform_`` init, no bias, no residual.

    Args:
        dim: Token dimension :math:`d` (also the number of atoms).
        eta, lambd, nonneg: As :func:`ista_step` (CRATE-MAE encoder: ``lambd=0.5``).

    Shape:
        - x: ``(..., dim)``; output: ``(..., dim)``, non-negative when ``nonneg``
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
        _check_last(x, self.dim)
        return ista_step(x, self.weight, x, eta=self.eta, lambd=self.lambd, nonneg=self.nonneg)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, eta={self.eta}, lambd={self.lambd}, nonneg={self.nonneg}"


class OvercompleteISTA(nn.Module):
    r"""CRATE-α's sparse coding: overcomplete dictionary, several ISTA steps, decoupled decoder.

    :math:`T` calls of :func:`ista_step` from :math:`a = 0` on a ``(d, C·d)`` dictionary
    :math:`D`, decoded as :math:`D_1 a_T` (official ``OvercompleteISTABlock``; no residual).

    Args:
        dim: Token dimension :math:`d`.
        ratio: Overcompleteness :math:`C` (atoms ``= ratio·dim``).
        n_steps: Number of ISTA steps :math:`T \ge 1`.
        decoupled: Decode with a separate :math:`D_1` (CRATE-α) instead of :math:`D`.
        eta, lambd, nonneg: As :class:`ISTA`.

    Shape:
        - x: ``(..., dim)``; output: ``(..., dim)``; codes (``code_tap``): ``(..., ratio·dim)``
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
        _check_last(x, self.dim)
        codes = None
        for _ in range(self.n_steps):
            codes = ista_step(
                x, self.dictionary, codes, eta=self.eta, lambd=self.lambd, nonneg=self.nonneg
            )
        assert codes is not None
        return codes

    def forward(self, x: Tensor) -> Tensor:
        """Return the decoded codes :math:`D_1 a_T`."""
        decoder = self.dictionary if self.decoder is None else self.decoder
        return self.code_tap(self.encode(x)) @ decoder.t()

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, ratio={self.ratio}, n_steps={self.n_steps}, eta={self.eta}, "
            f"lambd={self.lambd}, decoupled={self.decoupled}, nonneg={self.nonneg}"
        )


class _PreNormMSSA(_TokenLayer):
    """``norm1``, ``attn`` (:class:`MSSA`), ``norm2``: the compression half of a CRATE(-α) layer."""

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
        self.dim = check_int(dim, "dim")
        norm_eps = check_positive(norm_eps, "norm_eps")
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = MSSA(
            dim, heads=heads, dim_head=dim_head, tie_out=tie_out, out_bias=out_bias, dropout=dropout
        )
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)

    def _forward(self, x: Tensor, key_padding: Tensor | None, attn_mask: Tensor | None) -> Tensor:
        h = self.attn(self.norm1(x), src_key_padding_mask=key_padding, attn_mask=attn_mask)
        return self._sparsify(x, h)

    def _sparsify(self, x: Tensor, h: Tensor) -> Tensor:
        """The layer output from its input ``x`` and the update ``h = MSSA(LN(x))``."""
        raise NotImplementedError


class CRATELayer(_PreNormMSSA):
    r"""One CRATE layer: compression by MSSA, then sparsification by ISTA.

    :math:`Z \leftarrow \operatorname{ISTA}(\operatorname{LN}(Z + \operatorname{MSSA}(
    \operatorname{LN}(Z))))`, as the official ``Transformer``: **no** residual around ISTA.

    Args:
        dim, heads, dim_head, tie_out, out_bias, dropout: As :class:`MSSA`.
        eta, lambd, nonneg: As :class:`ISTA`.
        norm_eps: LayerNorm epsilon.

    Shape:
        as :class:`MSSA`, with ``(B, N, dim)`` tokens.
    """

    def __init__(
        self,
        dim: int,
        *,
        heads: int = 4,
        eta: float = 0.1,
        lambd: float = 0.1,
        nonneg: bool = True,
        dim_head: int | None = None,
        tie_out: bool = False,
        out_bias: bool | None = None,
        dropout: float = 0.0,
        norm_eps: float = 1e-5,
    ) -> None:
        super().__init__(dim, norm_eps, heads, dim_head, tie_out, out_bias, dropout)
        self.ista = ISTA(dim, eta=eta, lambd=lambd, nonneg=nonneg)

    def _sparsify(self, x: Tensor, h: Tensor) -> Tensor:
        return self.ista(self.norm2(x + h))


class CRATEAlphaLayer(_PreNormMSSA):
    r"""One CRATE-α layer: MSSA and an overcomplete ISTA block, both with residuals.

    Pre-norm residual MSSA then :class:`OvercompleteISTA`, optional LayerScale, no drop-path
    (official ``Encoder1DBlock``; defaults of the torch port).

    Args:
        dim, heads, dim_head, eta, lambd, nonneg, tie_out, out_bias, dropout, norm_eps: As
            :class:`CRATELayer`.
        ratio: Dictionary overcompleteness.
        n_steps: ISTA steps.
        decoupled: Decode with a separate dictionary.
        layer_scale: Initial LayerScale value, or ``None`` for no LayerScale.
    """

    def __init__(
        self,
        dim: int,
        *,
        heads: int = 4,
        ratio: int = 4,
        n_steps: int = 2,
        dim_head: int | None = None,
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
        self.gamma1, self.gamma2 = layer_scales(dim, layer_scale, "layer_scale")

    def _sparsify(self, x: Tensor, h: Tensor) -> Tensor:
        x = x + scaled(self.gamma1, h)
        return x + scaled(self.gamma2, self.ista(self.norm2(x)))


class CRATEDecoderLayer(nn.Module):
    r"""One CRATE-MAE decoder layer: a linear dictionary map, then MSSA subtracted.

    :math:`Y \leftarrow D\, \operatorname{LN}(Y)`, then :math:`Y \leftarrow Y -
    \operatorname{MSSA}(\operatorname{LN}(Y))` (official ``Block_CRATE``, ``crate_decoder.py``).

    Args:
        dim, heads, dim_head, use_softmax, tie_out, out_bias, dropout: As :class:`MSSA`.
        norm_eps: LayerNorm epsilon (the official decoder's ``nn.LayerNorm(dim)``).

    Shape:
        as :class:`MSSA`, with ``(B, N, dim)`` tokens ``y``.
    """

    def __init__(
        self,
        dim: int,
        *,
        heads: int = 4,
        tie_out: bool = False,
        out_bias: bool | None = None,
        use_softmax: bool = True,
        dim_head: int | None = None,
        dropout: float = 0.0,
        norm_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.dim = check_int(dim, "dim")
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
        attn_mask: Tensor | None = None,
        src_key_padding_mask: Tensor | None = None,
    ) -> Tensor:
        """Apply the decoder layer (masks as :class:`MSSA`)."""
        h = F.linear(self.norm1(check_tokens(y, self.dim, "y")), self.weight)
        return h - self.attn(
            self.norm2(h), src_key_padding_mask=src_key_padding_mask, attn_mask=attn_mask
        )


#: The CRATE layer classes (:func:`crate_blocks`, :class:`~jepa_blocks.blocks.CRATERecorder`).
LAYER_TYPES = (CRATELayer, CRATEAlphaLayer, CRATEDecoderLayer)


def crate_blocks(
    dim: int,
    *,
    depth: int = 3,
    heads: int = 4,
    layer: type[nn.Module] = CRATELayer,
    **layer_kwargs: Any,
) -> nn.ModuleList:
    """``depth`` independently initialised CRATE layers, a drop-in for ``transformer_blocks``.

    Args:
        dim: Token dimension.
        depth: Number of layers.
        heads: MSSA subspaces per layer.
        layer: :class:`CRATELayer`, :class:`CRATEAlphaLayer` or :class:`CRATEDecoderLayer`.
        **layer_kwargs: Further keywords for every layer (``dim_head``, ``tie_out``, ``eta``, ...).

    Returns:
        The layers, to pass as ``blocks`` to :class:`jepa_blocks.seq.Aggregator`.

    Shape:
        - each layer: ``(B, N, dim)`` → ``(B, N, dim)``
    """
    check_int(depth, "depth")
    if not (isinstance(layer, type) and issubclass(layer, LAYER_TYPES)):
        raise TypeError(
            f"layer must be CRATELayer, CRATEAlphaLayer or CRATEDecoderLayer (or a subclass), "
            f"got {layer!r}"
        )
    return nn.ModuleList([layer(dim, heads=heads, **layer_kwargs) for _ in range(depth)])


def _pair(value: Any, name: str) -> tuple[int, int]:
    pair = value if isinstance(value, tuple) else (value, value)
    if len(pair) != 2:
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    return (check_int(pair[0], name), check_int(pair[1], name))


_E = TypeVar("_E", bound="_PatchEncoder")
Pool = Literal["cls", "mean"]
Preset = Literal["tiny", "small", "base", "large"]


class _PatchEncoder(nn.Module):
    """Patch embedding, cls token, learned positions, layers, pooling, head: CRATE and CRATE-α."""

    #: LayerNorm before and after the linear patch projection (CRATE) or not (CRATE-α).
    _PATCH_NORM: ClassVar[bool] = True
    #: Named presets: constructor keywords per preset name.
    PRESETS: ClassVar[dict[str, dict[str, int]]] = {}
    #: Constructor keywords of every preset (overridden by the preset's own).
    _PRESET_DEFAULTS: ClassVar[dict[str, int]] = {"image_size": 224, "num_classes": 1000}

    def __init__(
        self,
        layers: Iterable[nn.Module],
        image_size: int | tuple[int, int],
        patch_size: int | tuple[int, int],
        in_channels: int,
        dim: int,
        num_classes: int,
        pool: Pool,
        emb_dropout: float,
    ) -> None:
        super().__init__()
        ih, iw = _pair(image_size, "image_size")
        ph, pw = _pair(patch_size, "patch_size")
        if ih % ph or iw % pw:
            raise ValueError(f"image_size {image_size!r} must be divisible by {patch_size=!r}")
        check_int(in_channels, "in_channels")
        check_int(num_classes, "num_classes", minimum=0)
        self.pool = check_choice(pool, "pool", get_args(Pool))
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
        self.head: nn.Module = nn.Identity()
        if num_classes > 0:
            self.head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, num_classes))

    def forward_features(self, images: Tensor) -> Tensor:
        """Return the tokens after the last layer, cls token first.

        Shape:
            - images: ``(B, C, H, W)`` of the configured size; output: ``(B, 1 + num_patches, dim)``
        """
        check_floating_tensor(images, "images", min_ndim=4, shape_doc="(B, C, H, W)")
        if images.ndim != 4 or tuple(images.shape[1:]) != (self.in_channels, *self.image_size):
            raise ValueError(
                f"images must have shape (B, {self.in_channels}, {self.image_size[0]}, "
                f"{self.image_size[1]}), got {tuple(images.shape)}"
            )
        x = self.patch_embedding(images)
        cls = repeat(self.cls_token, "1 1 d -> b 1 d", b=x.shape[0]).to(x.dtype)
        x = self.emb_dropout(torch.cat([cls, x], dim=1) + self.pos_embedding.to(x.dtype))
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
        return self.head(x[:, 0] if self.pool == "cls" else x.mean(dim=1))

    @classmethod
    def from_preset(cls: type[_E], name: Preset, **overrides: Any) -> _E:
        """Build a preset (see the class docstring): image 224, 1000 classes unless overridden.

        Args:
            name: Preset name, a key of ``PRESETS``.
            **overrides: Any constructor keyword, e.g. ``num_classes=0``.
        """
        check_choice(name, "name", tuple(cls.PRESETS))
        return cls(**{**cls._PRESET_DEFAULTS, **cls.PRESETS[name], **overrides})

    @classmethod
    def base(cls: type[_E], **overrides: Any) -> _E:
        """The ``"base"`` preset (see :meth:`from_preset`)."""
        return cls.from_preset("base", **overrides)

    @classmethod
    def large(cls: type[_E], **overrides: Any) -> _E:
        """The ``"large"`` preset (see :meth:`from_preset`)."""
        return cls.from_preset("large", **overrides)


class CRATE(_PatchEncoder):
    r"""CRATE image encoder: patch embedding, cls token, :class:`CRATELayer` stack, head.

    As the official ``model/crate.py``. Presets (image 224, patch 16, 1000 classes), as (dim,
    heads, depth): :meth:`tiny` (384, 6, 12), :meth:`small` (576, 12, 12), :meth:`base`
    (768, 12, 12), :meth:`large` (1024, 16, 24).

    Args:
        image_size: Image height and width (int or pair).
        patch_size: Patch height and width (int or pair); must divide ``image_size``.
        in_channels: Image channels.
        dim: Token dimension.
        depth: Number of layers.
        heads: MSSA subspaces per layer.
        num_classes: Head outputs; 0 for no head.
        pool: ``"cls"`` or ``"mean"``.
        emb_dropout: Dropout after adding the positional embedding.
        dim_head, tie_out, eta, lambd, dropout: As :class:`CRATELayer`.

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
        pool: Pool = "cls",
        tie_out: bool = False,
        eta: float = 0.1,
        lambd: float = 0.1,
        dropout: float = 0.0,
        emb_dropout: float = 0.0,
    ) -> None:
        options: dict[str, Any] = dict(
            dim_head=dim_head, tie_out=tie_out, eta=eta, lambd=lambd, dropout=dropout
        )
        layers = crate_blocks(dim=dim, depth=depth, heads=heads, **options)
        super().__init__(
            layers, image_size, patch_size, in_channels, dim, num_classes, pool, emb_dropout
        )

    @classmethod
    def tiny(cls, **overrides: Any) -> CRATE:
        """CRATE-T: dim 384, 6 heads, depth 12 (see :meth:`from_preset`)."""
        return cls.from_preset("tiny", **overrides)

    @classmethod
    def small(cls, **overrides: Any) -> CRATE:
        """CRATE-S: dim 576, 12 heads, depth 12 (see :meth:`from_preset`)."""
        return cls.from_preset("small", **overrides)


class CRATEAlpha(_PatchEncoder):
    r"""CRATE-α image encoder: linear patch embedding, cls token, :class:`CRATEAlphaLayer` stack.

    As the official torch port: :class:`CRATE`'s stem without its LayerNorms. Presets (image 224,
    1000 classes): :meth:`base` (B/16: 768, 12 heads, depth 12), :meth:`large` (L/14: 1024, 16
    heads, depth 24). Shapes as :class:`CRATE`.

    Args:
        dim, depth, heads, image_size, patch_size, in_channels, dim_head: As :class:`CRATE`.
        num_classes, pool, eta, lambd, dropout, emb_dropout: As :class:`CRATE`.
        ratio: Dictionary overcompleteness.
        n_steps: ISTA steps per layer.
        layer_scale: Initial LayerScale, or ``None``.
    """

    PRESETS: ClassVar[dict[str, dict[str, int]]] = {
        "base": {"dim": 768, "heads": 12, "depth": 12, "patch_size": 16},
        "large": {"dim": 1024, "heads": 16, "depth": 24, "patch_size": 14},
    }
    _PATCH_NORM = False

    def __init__(
        self,
        *,
        dim: int = 768,
        depth: int = 12,
        heads: int = 12,
        image_size: int | tuple[int, int] = 224,
        patch_size: int | tuple[int, int] = 16,
        in_channels: int = 3,
        dim_head: int | None = None,
        num_classes: int = 0,
        pool: Pool = "cls",
        ratio: int = 4,
        n_steps: int = 2,
        eta: float = 0.1,
        lambd: float = 0.1,
        layer_scale: float | None = None,
        dropout: float = 0.0,
        emb_dropout: float = 0.0,
    ) -> None:
        layers = crate_blocks(
            layer=CRATEAlphaLayer,
            dim=dim,
            depth=depth,
            heads=heads,
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
