r"""Diagnostics for CRATE stacks: per-layer subspace coding rate, code sparsity, head specialisation.

Pure functions on tensors, plus :class:`CRATERecorder`, a context manager whose forward hooks
record what the functions need from every CRATE layer of a model.

* **Per-layer compression** :math:`R^c` follows the protocol of the official CRATE
  visualisation code (``Ma-Lab-Berkeley/CRATE``, ``vis_utils/crate_hook.py`` and
  ``vis_utils/coding_rate.py``; Yu et al. 2023, "White-Box Transformers via Sparse Rate
  Reduction"): the tokens entering a layer's MSSA are projected on each head's basis, each
  per-head token vector is normalised to unit length, and the rate is taken on the ``N×N``
  token Gram with scale :math:`p / (N\varepsilon^2)`, summed over heads. The official code
  uses ``eps = 0.01``, which is :math:`\varepsilon^2`; here ``eps`` is :math:`\varepsilon`
  (library convention), so the default is ``eps = 0.1``.
* **Sparsity** is the fraction of exact zeros in the ISTA codes (as ``vis_utils`` does).
* **Head specialisation** (derived; no published metric): the :math:`R^2` of a least-squares
  regression of each action coordinate on each head's features, and an entropy-based score
  saying how concentrated that explained variance is on few heads.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from jepa_blocks._validation import check_floating_tensor, check_positive
from jepa_blocks.blocks.crate import (
    ISTA,
    MSSA,
    CRATEAlphaLayer,
    CRATEDecoderLayer,
    CRATELayer,
    OvercompleteISTA,
)
from jepa_blocks.rate import coding_rate

__all__ = [
    "CRATERecorder",
    "code_sparsity",
    "head_action_r2",
    "project_heads",
    "specialization_score",
    "subspace_coding_rate",
]

_LAYER_TYPES = (CRATELayer, CRATEAlphaLayer, CRATEDecoderLayer)


def project_heads(tokens: Tensor, bases: Tensor) -> Tensor:
    r"""Project tokens on each subspace basis: :math:`W_k = X U_k`, in an fp32 island.

    Args:
        tokens: Tokens :math:`X` (rows).
        bases: Bases :math:`U_k`, e.g. :meth:`jepa_blocks.blocks.MSSA.subspaces`.

    Returns:
        The per-head projections, float32 (float64 if either input is float64).

    Shape:
        - tokens: ``(..., N, d)``
        - bases: ``(K, d, p)``
        - output: ``(..., K, N, p)``
    """
    check_floating_tensor(tokens, "tokens", min_ndim=2, shape_doc="(..., N, d)")
    check_floating_tensor(bases, "bases", min_ndim=3, shape_doc="(K, d, p)")
    if bases.ndim != 3 or bases.shape[1] != tokens.shape[-1]:
        raise ValueError(
            f"bases must have shape (K, d, p) with d={tokens.shape[-1]} = tokens.shape[-1], "
            f"got {tuple(bases.shape)}"
        )
    dtype = torch.promote_types(torch.promote_types(tokens.dtype, bases.dtype), torch.float32)
    with torch.autocast(device_type=tokens.device.type, enabled=False):
        return torch.einsum("...nd,kdp->...knp", tokens.to(dtype), bases.to(dtype))


def subspace_coding_rate(
    tokens: Tensor,
    bases: Tensor,
    *,
    eps: float = 0.1,
    normalize: bool = True,
    per_head: bool = False,
    precision: str = "float32",
) -> Tensor:
    r"""Compression term :math:`R^c(X \mid U_{[K]})` of the tokens against their subspaces.

    .. math::

        R^c = \sum_{k=1}^{K} \tfrac12 \log\det\Big(I_N + \frac{p}{N\varepsilon^2}
            \hat W_k \hat W_k^\top\Big), \qquad W_k = X U_k,

    where :math:`\hat W_k` has each row (token) normalised to unit length when ``normalize``
    (the official ``vis_utils`` protocol; a zero row stays zero here instead of giving NaN).
    Without normalisation this is the paper's :math:`R^c(Z \mid U_{[K]})` (coding-rate
    reference §5.1). One batched :func:`jepa_blocks.coding_rate` call over all heads.

    Args:
        tokens: Tokens of one layer, e.g. the MSSA inputs recorded by :class:`CRATERecorder`.
        bases: Bases :math:`U_k` of that layer's MSSA (:meth:`MSSA.subspaces`).
        eps: :math:`\varepsilon > 0` (the official code's ``eps = 0.01`` is
            :math:`\varepsilon^2`, hence the default 0.1).
        normalize: Normalise each per-head token vector to unit norm (official protocol).
        per_head: Return the per-head rates instead of their sum.
        precision: ``"float32"`` or ``"float64"``, passed to :func:`jepa_blocks.coding_rate`.

    Returns:
        :math:`R^c \ge 0` per sample (or per sample and head).

    Shape:
        - tokens: ``(..., N, d)``
        - bases: ``(K, d, p)``
        - output: ``(...)``, or ``(..., K)`` with ``per_head=True``
    """
    check_positive(eps, "eps")
    w = project_heads(tokens, bases)
    if normalize:
        w = F.normalize(w, dim=-1)
    rates = coding_rate(w, eps=eps, precision=precision, distributed="none")
    return rates if per_head else rates.sum(-1)


def code_sparsity(codes: Tensor, *, dim: int | tuple[int, ...] | None = None) -> Tensor:
    """Fraction of exact zeros in sparse codes (e.g. ISTA outputs).

    Args:
        codes: The codes.
        dim: Dimensions to average over; ``None`` (default) averages over all.

    Returns:
        The fraction of entries equal to zero, in ``[0, 1]``, float32.

    Shape:
        - codes: any
        - output: ``()`` with ``dim=None``; otherwise ``codes`` without ``dim``
    """
    check_floating_tensor(codes, "codes")
    zeros = (codes == 0).to(torch.float32)
    return zeros.mean() if dim is None else zeros.mean(dim=dim)


def head_action_r2(head_features: Tensor, actions: Tensor, *, ridge: float = 0.0) -> Tensor:
    r"""Per-head :math:`R^2` of a linear regression of each action coordinate on the head.

    For head :math:`k` with features :math:`H_k \in \mathbb{R}^{S \times p}` and action
    coordinate :math:`a_j \in \mathbb{R}^S` (both centred), fit
    :math:`\beta = (H_k^\top H_k + \rho I)^{-1} H_k^\top a_j` (the pseudo-inverse solution
    when ``ridge`` :math:`\rho = 0`) and report
    :math:`R^2_{kj} = 1 - \lVert a_j - H_k \beta\rVert^2 / \lVert a_j\rVert^2` (in-sample;
    0 for a constant coordinate). Computed in float64. With few samples per feature
    (:math:`S \lesssim p`) in-sample :math:`R^2` is biased upwards: evaluate on held-out data or
    use ``ridge > 0``.

    Args:
        head_features: Per-head features of each sample, e.g. the per-head MSSA outputs at
            one token (:class:`CRATERecorder` ``heads``, indexed ``[:, :, token]``).
        actions: Action coordinates of each sample.
        ridge: Ridge :math:`\rho \ge 0`.

    Returns:
        :math:`R^2` for every head and action coordinate, float64.

    Shape:
        - head_features: ``(S, K, p)``
        - actions: ``(S, A)``
        - output: ``(K, A)``
    """
    check_floating_tensor(head_features, "head_features", min_ndim=3, shape_doc="(S, K, p)")
    check_floating_tensor(actions, "actions", min_ndim=2, shape_doc="(S, A)")
    if head_features.ndim != 3 or actions.ndim != 2:
        raise ValueError(
            f"head_features must be (S, K, p) and actions (S, A), got "
            f"{tuple(head_features.shape)} and {tuple(actions.shape)}"
        )
    if head_features.shape[0] != actions.shape[0]:
        raise ValueError(
            f"head_features and actions must have the same number of samples S, got "
            f"{head_features.shape[0]} and {actions.shape[0]}"
        )
    rho = check_positive(ridge, "ridge", allow_zero=True)
    with torch.autocast(device_type=head_features.device.type, enabled=False):
        h = head_features.to(torch.float64).transpose(0, 1)  # (K, S, p)
        y = actions.to(torch.float64)
        h = h - h.mean(dim=1, keepdim=True)
        y = y - y.mean(dim=0, keepdim=True)
        if rho > 0:
            eye = torch.eye(h.shape[-1], dtype=h.dtype, device=h.device)
            beta = torch.linalg.solve(h.mT @ h + rho * eye, h.mT @ y)  # (K, p, A)
        else:
            beta = torch.linalg.pinv(h) @ y
        sse = (y - h @ beta).pow(2).sum(dim=1)  # (K, A)
        sst = y.pow(2).sum(dim=0)  # (A,)
        safe = torch.where(sst > 0, sst, torch.ones_like(sst))
        return torch.where(sst > 0, 1.0 - sse / safe, torch.zeros_like(sse))


def specialization_score(r2: Tensor) -> Tensor:
    r"""How concentrated each action coordinate's explained variance is on few heads.

    With :math:`q_{kj} = \max(R^2_{kj}, 0) / \sum_k \max(R^2_{kj}, 0)`, the score is
    :math:`1 - H(q_{\cdot j}) / \log K`: 1 when one head explains the coordinate alone, 0 when
    every head explains it equally (or none does). A derived summary, not a published metric.

    Args:
        r2: :math:`R^2` per head and action coordinate, e.g. from :func:`head_action_r2`.

    Returns:
        The score per action coordinate, in ``[0, 1]`` (zeros when ``K == 1``).

    Shape:
        - r2: ``(..., K, A)``
        - output: ``(..., A)``
    """
    check_floating_tensor(r2, "r2", min_ndim=2, shape_doc="(..., K, A)")
    k = r2.shape[-2]
    if k < 2:
        return torch.zeros_like(r2[..., 0, :])
    pos = r2.clamp_min(0)
    total = pos.sum(dim=-2, keepdim=True)
    q = pos / torch.where(total > 0, total, torch.ones_like(total))
    entropy = -(q * torch.where(q > 0, q, torch.ones_like(q)).log()).sum(dim=-2)
    score = 1.0 - entropy / math.log(k)
    return torch.where(total[..., 0, :] > 0, score, torch.zeros_like(score))


class CRATERecorder:
    """Record, with forward hooks, the tensors the CRATE diagnostics need from each layer.

    Every :class:`~jepa_blocks.blocks.CRATELayer`, :class:`~jepa_blocks.blocks.CRATEAlphaLayer`
    and :class:`~jepa_blocks.blocks.CRATEDecoderLayer` inside ``model`` (in
    ``model.modules()`` order, i.e. forward order for a plain stack) is hooked. After a forward
    pass, for layer ``i``:

    * ``inputs[i]``: the tokens entering the layer, ``(B, N, D)``;
    * ``mssa_inputs[i]``: the normalised tokens entering its MSSA (what the official
      ``vis_utils`` hook projects), ``(B, N, D)``;
    * ``heads[i]``: the per-head MSSA outputs before the output map, ``(B, K, N, p)``;
    * ``codes[i]``: the ISTA codes (:class:`~jepa_blocks.blocks.ISTA` output, or the
      :class:`~jepa_blocks.blocks.OvercompleteISTA` codes), ``(B, N, m)``; absent for decoder
      layers;
    * ``outputs[i]``: the layer output, ``(B, N, D)``.

    Each forward pass overwrites the previous record. Tensors are detached unless
    ``detach=False``. Use as a context manager (hooks are removed on exit) or call
    :meth:`remove`. Meant for eager diagnostics, not inside ``torch.compile``.

    Args:
        model: A model or a layer stack containing CRATE layers.
        detach: Store detached tensors (default).

    Example:
        >>> from jepa_blocks.blocks import CRATELayer, CRATERecorder
        >>> stack = torch.nn.Sequential(*[CRATELayer(32, heads=4) for _ in range(3)])
        >>> with CRATERecorder(stack) as rec:
        ...     _ = stack(torch.randn(2, 16, 32))
        >>> rec.coding_rates().shape, rec.sparsities().shape
        (torch.Size([3, 2]), torch.Size([3]))
    """

    def __init__(self, model: nn.Module, *, detach: bool = True) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        if not isinstance(detach, bool):
            raise TypeError(f"detach must be a bool, got {type(detach).__name__}")
        self.detach = detach
        self.layers: list[nn.Module] = [m for m in model.modules() if isinstance(m, _LAYER_TYPES)]
        if not self.layers:
            raise ValueError("model contains no CRATELayer, CRATEAlphaLayer or CRATEDecoderLayer")
        self.inputs: dict[int, Tensor] = {}
        self.mssa_inputs: dict[int, Tensor] = {}
        self.heads: dict[int, Tensor] = {}
        self.codes: dict[int, Tensor] = {}
        self.outputs: dict[int, Tensor] = {}
        self._handles: list[RemovableHandle] = []
        for i, layer in enumerate(self.layers):
            attn = layer.attn
            assert isinstance(attn, MSSA)
            self._handles.append(layer.register_forward_pre_hook(self._pre(self.inputs, i)))
            self._handles.append(layer.register_forward_hook(self._post(self.outputs, i)))
            self._handles.append(attn.register_forward_pre_hook(self._pre(self.mssa_inputs, i)))
            self._handles.append(attn.head_tap.register_forward_hook(self._post(self.heads, i)))
            ista = getattr(layer, "ista", None)
            if isinstance(ista, ISTA):
                self._handles.append(ista.register_forward_hook(self._post(self.codes, i)))
            elif isinstance(ista, OvercompleteISTA):
                tap = ista.code_tap
                self._handles.append(tap.register_forward_hook(self._post(self.codes, i)))

    def _keep(self, t: Tensor) -> Tensor:
        return t.detach() if self.detach else t

    def _pre(self, store: dict[int, Tensor], i: int) -> Any:
        def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
            store[i] = self._keep(args[0])

        return hook

    def _post(self, store: dict[int, Tensor], i: int) -> Any:
        def hook(module: nn.Module, args: tuple[Any, ...], output: Tensor) -> None:
            store[i] = self._keep(output)

        return hook

    def remove(self) -> None:
        """Remove all hooks (the records are kept)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def clear(self) -> None:
        """Drop the records (the hooks stay)."""
        for store in (self.inputs, self.mssa_inputs, self.heads, self.codes, self.outputs):
            store.clear()

    def __enter__(self) -> CRATERecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def _require(self, store: dict[int, Tensor], what: str) -> list[Tensor]:
        missing = [i for i in range(len(self.layers)) if i not in store]
        if missing:
            raise RuntimeError(f"no {what} recorded for layers {missing}: run a forward pass")
        return [store[i] for i in range(len(self.layers))]

    def coding_rates(self, *, eps: float = 0.1, per_head: bool = False) -> Tensor:
        """Per-layer :func:`subspace_coding_rate` of the recorded MSSA inputs.

        Args:
            eps: :math:`\\varepsilon` (official protocol: 0.1, i.e. code ``eps = 0.01``).
            per_head: Keep the head dimension.

        Returns:
            The rates stacked over layers.

        Shape:
            - output: ``(L, B)``, or ``(L, B, K)`` with ``per_head=True``
        """
        tokens = self._require(self.mssa_inputs, "MSSA inputs")
        rates = []
        for layer, x in zip(self.layers, tokens):
            attn = layer.attn
            assert isinstance(attn, MSSA)
            bases = attn.subspaces().detach()
            rates.append(subspace_coding_rate(x, bases, eps=eps, per_head=per_head))
        return torch.stack(rates)

    def sparsities(self) -> Tensor:
        """Per-layer :func:`code_sparsity` of the recorded ISTA codes.

        Returns:
            The fraction of zeros per layer (layers without codes are skipped).

        Shape:
            - output: ``(L_codes,)``
        """
        if not self.codes:
            raise RuntimeError("no ISTA codes recorded: run a forward pass through ISTA layers")
        return torch.stack([code_sparsity(self.codes[i]) for i in sorted(self.codes)])
