r"""The parts of step 3 (``step3_crate.py``): its config, its arms, the CRATE parts, the report.

* **Config** (:class:`Step3Config`): the recipe config plus a ``crate:`` section
  (:class:`CRATEConfig`) and the list of ``arms`` to run (``configs/steps/step3.yaml``).
* **Arms** (:class:`Arm`, ``configs/step3/arms/<arm>.yaml``): which step, which variant (``null``:
  the run's ``--variant``) and which parts are CRATE. :func:`arm_config` derives an arm's config
  from the run's.
* **CRATE parts**: :func:`crate_aggregator` (integration A: an
  :class:`~jepa_blocks.seq.Aggregator` over :func:`~jepa_blocks.blocks.crate_blocks`) and
  :func:`crate_predictor` (integration B: :class:`~jepa_blocks.seq.CRATEPredictor`) map the
  ``crate:`` section to parts; :func:`build_arm_model` builds the step-2 model with
  :func:`parts.build_model` (so every arm starts from the same encoder) and swaps them in with
  :func:`with_parts`.
* **Report**: the diagnostics of :func:`jepa_blocks.blocks.crate_stack_diagnostics` and of the
  rotation Δz spectrum as flat metrics (:func:`crate_metrics`, :func:`rotation_metrics`), the
  side-by-side table (:func:`format_side_by_side`) and the figures (:func:`write_plots`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from torch import Tensor, nn

from common import CONFIG_DIR, RecipeConfig, cell, markdown_table
from jepa_blocks.blocks import (
    CRATEAlphaLayer,
    CRATELayer,
    StackDiagnostics,
    crate_blocks,
    weighted_specialization,
)
from jepa_blocks.metrics import spectrum_effective_rank, topk_variance_fraction
from jepa_blocks.seq import Aggregator, CRATEPredictor, SeqJEPA
from jepa_blocks.train.config import apply_overrides, config_from_dict
from parts import ModelConfig, build_model

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "ARMS_DIR",
    "Arm",
    "CRATEConfig",
    "Integration",
    "Step3Config",
    "arm_config",
    "arm_names",
    "build_arm_model",
    "crate_aggregator",
    "crate_metrics",
    "crate_predictor",
    "format_side_by_side",
    "load_arm",
    "plot_head_specialization",
    "plot_layer_profiles",
    "plot_monitor_history",
    "rotation_metrics",
    "table_rows",
    "with_parts",
    "write_plots",
]

Integration = Literal["none", "aggregator", "predictor", "both"]
PathLike = str | os.PathLike[str]

#: Where the arms live: one YAML file per arm.
ARMS_DIR = CONFIG_DIR / "step3" / "arms"


# --------------------------------------------------------------------------- config


@dataclasses.dataclass
class Arm:
    """One column of the comparison (``configs/step3/arms/<arm>.yaml``).

    Attributes:
        description: Free text.
        step: ``"step1"``, ``"step2"`` or ``"step3"`` (recorded in the arm's config).
        variant: A variant (``configs/variants/<variant>.yaml``) applied to this arm whatever the
            run's variant is (step 1: ``baseline``); ``None``: the run's variant.
        integration: Which parts are CRATE: ``"none"``, ``"aggregator"`` (A), ``"predictor"``
            (B) or ``"both"``.
    """

    description: str = ""
    step: str = "step3"
    variant: str | None = None
    integration: Integration = "none"


def arm_names(arms_dir: Path = ARMS_DIR) -> list[str]:
    """The arms defined in ``arms_dir``."""
    return sorted(p.stem for p in arms_dir.glob("*.yaml"))


def load_arm(name: str, arms_dir: Path = ARMS_DIR) -> Arm:
    """Read the arm ``name`` from ``arms_dir/<name>.yaml``."""
    import yaml

    path = arms_dir / f"{name}.yaml"
    if not path.is_file():
        raise ValueError(f"unknown arm {name!r}; choose from {arm_names(arms_dir)}")
    return config_from_dict(Arm, yaml.safe_load(path.read_text(encoding="utf-8")) or {})


@dataclasses.dataclass
class CRATEConfig:
    r"""CRATE parts and diagnostics of step 3 (the ``crate:`` section; official CRATE defaults).

    Attributes:
        layer: ``"crate"`` (:class:`~jepa_blocks.blocks.CRATELayer`, official CRATE) or
            ``"crate-alpha"`` (:class:`~jepa_blocks.blocks.CRATEAlphaLayer`).
        agg_depth: CRATE layers of the aggregator (``None``: ``model.depth``, the transformer's).
        agg_heads: MSSA subspaces of the aggregator (``None``: ``model.heads``).
        pred_dim: Token width of the CRATE predictor (``None``: ``model.encoder_dim``).
        pred_depth: CRATE layers of the predictor.
        pred_heads: MSSA subspaces of the predictor.
        pred_readout: ``"state"``, ``"concat"`` or ``"mean"``
            (:class:`~jepa_blocks.seq.CRATEPredictor`).
        eta: ISTA step size (official 0.1).
        lambd: ISTA sparsity weight (official 0.1).
        tie_out: MSSA paper form (output through :math:`U^\top`) instead of the official code's
            separate output projection.
        dropout: MSSA dropout (official 0).
        diag_eps: :math:`\varepsilon` of the per-layer :math:`R^c` (official ``vis_utils``:
            :math:`\varepsilon^2 = 0.01`).
        diag_samples: Test sequences used by the after-training diagnostics (at most).
        rotation_probe: Measure the rotation Δz spectrum.
        rotation_deg: Pure-rotation pairs draw both angles from ``±rotation_deg`` degrees
            (``None``: ``data.angle_deg``). Quarter turns for ``rotation90`` views.
    """

    layer: Literal["crate", "crate-alpha"] = "crate"
    agg_depth: int | None = None
    agg_heads: int | None = None
    pred_dim: int | None = None
    pred_depth: int = 2
    pred_heads: int = 4
    pred_readout: Literal["state", "concat", "mean"] = "state"
    eta: float = 0.1
    lambd: float = 0.1
    tie_out: bool = False
    dropout: float = 0.0
    diag_eps: float = 0.1
    diag_samples: int = 2048
    rotation_probe: bool = True
    rotation_deg: float | None = None


@dataclasses.dataclass
class Step3Config(RecipeConfig):
    """The config of step 3: the recipe config, the ``crate:`` section and the arms to run.

    Attributes:
        crate: :class:`CRATEConfig`.
        arms: Arms to run, in order (names of ``configs/step3/arms/<arm>.yaml``).
    """

    crate: CRATEConfig = dataclasses.field(default_factory=CRATEConfig)
    arms: list[str] = dataclasses.field(default_factory=list)

    def __post_init__(self) -> None:
        known = arm_names()
        unknown = [a for a in self.arms if a not in known]
        if unknown:
            raise ValueError(f"unknown arm(s) {unknown}; choose from {known}")
        if len(set(self.arms)) != len(self.arms):
            raise ValueError(f"arms must not repeat, got {self.arms}")


def arm_config(config: Step3Config, arm: Arm) -> Step3Config:
    """The config of one arm: the run's config with the arm's ``step`` and, if it names one, its
    variant (that variant file's settings replace the run's variant's)."""
    overrides = [f"step={arm.step}"]
    if arm.variant is not None and arm.variant != config.variant:
        import yaml

        path = CONFIG_DIR / "variants" / f"{arm.variant}.yaml"
        overlay = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for section, values in overlay.items():
            if isinstance(values, Mapping):
                overrides += [f"{section}.{k}={json.dumps(v)}" for k, v in values.items()]
            else:
                overrides.append(f"{section}={json.dumps(values)}")
        overrides.append(f"variant={arm.variant}")
    return apply_overrides(config, overrides)


# --------------------------------------------------------------------------- parts


def _layer_class(crate: CRATEConfig) -> type[nn.Module]:
    layers = {"crate": CRATELayer, "crate-alpha": CRATEAlphaLayer}
    if crate.layer not in layers:
        raise ValueError(f"crate.layer must be one of {tuple(layers)}, got {crate.layer!r}")
    return layers[crate.layer]


def _layer_kwargs(crate: CRATEConfig) -> dict[str, Any]:
    return {
        "eta": crate.eta,
        "lambd": crate.lambd,
        "tie_out": crate.tie_out,
        "dropout": crate.dropout,
    }


def crate_aggregator(dim: int, crate: CRATEConfig, *, depth: int, heads: int) -> Aggregator:
    """Integration A: an :class:`~jepa_blocks.seq.Aggregator` over a CRATE layer stack.

    ``[AGG]`` token, ``depth`` CRATE layers (:func:`~jepa_blocks.blocks.crate_blocks`), final
    LayerNorm: the paper's aggregator with its transformer layers replaced.

    Args:
        dim: Token width ``D + E``.
        crate: Layer type and ISTA/MSSA settings (``agg_depth`` / ``agg_heads`` are not read;
            pass them as ``depth`` / ``heads``).
        depth: Number of layers.
        heads: MSSA subspaces per layer.

    Returns:
        The aggregator.

    Shape:
        - tokens: ``(B, N, dim)``
        - output: ``(B, dim)``
    """
    blocks = crate_blocks(
        dim=dim, depth=depth, heads=heads, layer=_layer_class(crate), **_layer_kwargs(crate)
    )
    return Aggregator(dim=dim, blocks=blocks)


def crate_predictor(
    *, in_dim: int, out_dim: int, action_embed_dim: int, crate: CRATEConfig
) -> CRATEPredictor:
    """Integration B: the two-token :class:`~jepa_blocks.seq.CRATEPredictor` of ``crate``.

    Args:
        in_dim: Predictor input ``D + E`` (+ ``E`` when conditioned on the action).
        out_dim: ``D``.
        action_embed_dim: ``E`` of the action part of the input (0: unconditioned).
        crate: Token width, depth, heads, read-out and layer settings.

    Returns:
        The predictor.

    Shape:
        - input: ``(B, in_dim)``
        - output: ``(B, out_dim)``
    """
    return CRATEPredictor(
        in_dim=in_dim,
        out_dim=out_dim,
        action_embed_dim=action_embed_dim,
        dim=crate.pred_dim,
        depth=crate.pred_depth,
        heads=crate.pred_heads,
        layer=_layer_class(crate),
        readout=crate.pred_readout,
        **_layer_kwargs(crate),
    )


def with_parts(
    model: SeqJEPA,
    *,
    aggregator: nn.Module | None = None,
    predictor: nn.Module | None = None,
) -> SeqJEPA:
    """A new :class:`~jepa_blocks.SeqJEPA` sharing ``model``'s parts, with some parts replaced.

    Encoder, target, action encoder, loss, target transform, regularizer and every option are
    taken from ``model`` (the same module objects, not copies); the constructor re-checks the
    dimensions of the new parts.

    Args:
        model: The model to take the other parts from.
        aggregator: Replacement aggregator (``None``: keep ``model.aggregator``).
        predictor: Replacement predictor (``None``: keep ``model.predictor``).

    Returns:
        The new model.
    """
    if not isinstance(model, SeqJEPA):
        raise TypeError(f"model must be a SeqJEPA, got {type(model).__name__}")
    return SeqJEPA(
        encoder=model.encoder,
        target=model.target,
        action_encoder=model.action_encoder,
        aggregator=model.aggregator if aggregator is None else aggregator,
        predictor=model.predictor if predictor is None else predictor,
        loss=model.loss_fn,
        target_transform=model.target_transform,
        regularizer=model.regularizer,
        regularize_on=model.regularize_on,
        regularizer_weight=model.regularizer_weight,
        regularizer_kind=model.regularizer_kind,
        regularizer_warmup_steps=model.regularizer_warmup_steps,
        pool=model.pool,
        condition_tokens=model.condition_tokens,
        condition_predictor=model.condition_predictor,
        last_token_action=model.last_token_action,
        predictor_action=model.predictor_action,
        symmetric=model.symmetric,
        invert_action=model.invert_action,
    )


def build_arm_model(
    config: ModelConfig,
    crate: CRATEConfig,
    *,
    integration: Integration,
    in_channels: int,
    action_dim: int,
    total_steps: int,
    steps_per_epoch: int,
) -> SeqJEPA:
    """:func:`parts.build_model`, then the CRATE parts of ``integration`` swapped in.

    The encoder (and the rest) is initialised first, exactly as for steps 1 and 2, so arms run
    with the same seed start from the same encoder.

    Args:
        config: The model config (target, regularizer, widths).
        crate: The CRATE settings.
        integration: ``"none"``, ``"aggregator"`` (A), ``"predictor"`` (B) or ``"both"``.
        in_channels: Image channels.
        action_dim: ``A``.
        total_steps: Optimizer steps of the run.
        steps_per_epoch: Optimizer steps per epoch.

    Returns:
        The model.
    """
    if integration not in ("none", "aggregator", "predictor", "both"):
        raise ValueError(
            f"integration must be one of ('none', 'aggregator', 'predictor', 'both'), "
            f"got {integration!r}"
        )
    model = build_model(
        config,
        in_channels=in_channels,
        action_dim=action_dim,
        total_steps=total_steps,
        steps_per_epoch=steps_per_epoch,
    )
    if integration == "none":
        return model
    e = config.action_embed_dim
    width = config.encoder_dim + e
    aggregator = predictor = None
    if integration in ("aggregator", "both"):
        aggregator = crate_aggregator(
            width,
            crate,
            depth=crate.agg_depth if crate.agg_depth is not None else config.depth,
            heads=crate.agg_heads if crate.agg_heads is not None else config.heads,
        )
    if integration in ("predictor", "both"):
        predictor = crate_predictor(
            in_dim=width + e, out_dim=config.encoder_dim, action_embed_dim=e, crate=crate
        )
    return with_parts(model, aggregator=aggregator, predictor=predictor)


# --------------------------------------------------------------------------- metrics


def crate_metrics(diag: Mapping[str, StackDiagnostics]) -> dict[str, Any]:
    """The diagnostics of every CRATE stack (``agg`` / ``pred``) as flat metrics.

    Keys per stack ``s``: ``s_rates`` / ``s_rates_std`` (per layer), ``s_rate_max``,
    ``s_sparsity_layers`` and their mean ``s_sparsity``, ``s_head_r2`` (layers × heads × action
    coordinates), ``s_specialization_layers`` (:func:`~jepa_blocks.blocks.weighted_specialization`
    per layer) and the last layer's ``s_specialization``, ``s_specialization_per_dim``,
    ``s_head_r2_max`` (best head's R², averaged over the coordinates) and ``s_action``.
    """
    out: dict[str, Any] = {}
    for key, d in diag.items():
        out[f"{key}_rates"] = d.rates.tolist()
        out[f"{key}_rates_std"] = d.rates_std.tolist()
        out[f"{key}_rate_max"] = d.rate_max
        out[f"{key}_sparsity_layers"] = d.sparsity.tolist()
        out[f"{key}_sparsity"] = float(d.sparsity.mean())
        out[f"{key}_head_r2"] = d.head_r2.tolist()
        layers = [weighted_specialization(r2, sp) for r2, sp in zip(d.head_r2, d.specialization)]
        out[f"{key}_specialization_layers"] = layers
        out[f"{key}_specialization"] = layers[-1]
        out[f"{key}_specialization_per_dim"] = d.specialization[-1].tolist()
        out[f"{key}_head_r2_max"] = float(d.head_r2[-1].max(dim=0).values.mean())
        out[f"{key}_action"] = d.action
    return out


def rotation_metrics(spectrum: Tensor) -> dict[str, float]:
    """``rot_delta_top2`` (variance fraction of the top two components) and ``rot_delta_rank``
    (effective rank) of a rotation Δz spectrum (:func:`~jepa_blocks.metrics.rank.rotation_delta_spectrum`)."""
    return {
        "rot_delta_top2": topk_variance_fraction(spectrum, 2),
        "rot_delta_rank": spectrum_effective_rank(spectrum),
    }


# --------------------------------------------------------------------------- table

_ROWS: tuple[tuple[str, str, str], ...] = (
    ("linacc", "linacc(z_agg), test", "pct"),
    ("r2", "R² of a_1 from [z_1; z_2]", "num"),
    ("leakage_linacc", "leakage: linacc(z_1)", "pct"),
    ("leakage_r2", "leakage: R² of a_1 from z_agg", "num"),
    ("linacc_gap", "linacc gap (z_agg − z_1)", "pct"),
    ("r2_gap", "R² gap ([z_1;z_2] − z_agg)", "num"),
    ("rank_z_agg", "effective rank z_agg", "rank"),
    ("rank_z", "effective rank z", "rank"),
    ("rot_delta_top2", "rotation Δz: top-2 variance", "pct"),
    ("rot_delta_rank", "rotation Δz: effective rank", "num1"),
    ("agg_sparsity", "ISTA sparsity, aggregator", "pct"),
    ("pred_sparsity", "ISTA sparsity, predictor", "pct"),
    ("agg_rates", "R^c by layer / max, aggregator", "rates"),
    ("pred_rates", "R^c by layer / max, predictor", "rates"),
    ("agg_specialization", "head specialisation, agg (a_1)", "num"),
    ("pred_specialization", "head specialisation, pred (a_M)", "num"),
    ("init/linacc", "at init: linacc(z_agg)", "pct"),
    ("init/r2", "at init: R² of a_1", "num"),
    ("init/rot_delta_top2", "at init: rotation Δz top-2", "pct"),
)

#: Metrics of the random-init network shown by :func:`table_rows` (as ``init/<key>``).
_INIT_KEYS = ("linacc", "r2", "rot_delta_top2")


def table_rows(metrics: Mapping[str, Any], random_init: Mapping[str, Any] | None) -> dict[str, Any]:
    """One arm's column for :func:`format_side_by_side`: its metrics, plus ``init/linacc``,
    ``init/r2`` and ``init/rot_delta_top2`` of the random-init network when it was measured."""
    rows = dict(metrics)
    if random_init is not None:
        rows.update({f"init/{k}": random_init[k] for k in _INIT_KEYS if k in random_init})
    return rows


def _cell(metrics: Mapping[str, Any], key: str, kind: str) -> str:
    if kind == "rates" and metrics.get(key) is not None:
        text = " → ".join(f"{float(x):.1f}" for x in metrics[key])
        top = metrics.get(key.replace("_rates", "_rate_max"))
        return text if top is None else f"{text} / {float(top):.1f}"
    if kind == "num1" and metrics.get(key) is not None:
        return f"{float(metrics[key]):.1f}"
    return cell(metrics, key, kind)


def format_side_by_side(results: Mapping[str, Mapping[str, Any]]) -> str:
    """Markdown table: one row per metric, one column per arm (``—``: not measured).

    Rows: the probe metrics of :func:`jepa_blocks.metrics.evaluate` (linacc, R², leakage and
    gaps, effective ranks), the rotation Δz top-2 variance fraction and effective rank, for CRATE
    stacks the mean ISTA sparsity, :math:`R^c` by layer (first → last, then its upper bound) and
    the last layer's head specialisation, and the random-init values of :func:`table_rows`. Rows
    that no arm has are left out.

    Args:
        results: ``{arm: metrics}``.

    Returns:
        The table.
    """
    if not results:
        raise ValueError("results must hold at least one arm")
    rows = [
        (label, *(_cell(m, key, kind) for m in results.values()))
        for key, label, kind in _ROWS
        if any(key in m for m in results.values())
    ]
    return markdown_table(("metric", *results), rows)


# --------------------------------------------------------------------------- plots


def _finish(fig: Figure, path: PathLike | None) -> Figure:
    fig.tight_layout()
    if path is not None:
        fig.savefig(os.fspath(path), dpi=120, format="png")
    return fig


def plot_layer_profiles(
    profiles: Mapping[str, Sequence[float]],
    *,
    ylabel: str,
    path: PathLike | None = None,
    title: str = "",
) -> Figure:
    """Per-layer curves (e.g. :math:`R^c` or sparsity by layer); labels ending in ``init`` dashed.

    Args:
        profiles: ``{label: one value per layer}``.
        ylabel: The y-axis label.
        path: Save the figure there as PNG.
        title: Axes title.

    Returns:
        The figure.
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    if not profiles:
        raise ValueError("profiles must hold at least one curve")
    fig = Figure(figsize=(5.0, 3.5))
    ax = fig.add_subplot()
    for label, values in profiles.items():
        ys = [float(v) for v in values]
        style = "--" if label.endswith("init") else "-"
        ax.plot(range(len(ys)), ys, style, marker="o", markersize=4, label=label)
    ax.set_xlabel("layer")
    ax.set_ylabel(ylabel)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize="small")
    ax.set_title(title)
    return _finish(fig, path)


def plot_head_specialization(
    head_r2: Tensor,
    *,
    action_names: Sequence[str] | None = None,
    path: PathLike | None = None,
    title: str = "Per-head R² of the action",
) -> Figure:
    """Heatmap of per-head :math:`R^2` (heads × action coordinates) of one layer.

    Args:
        head_r2: :math:`R^2` of each head and action coordinate.
        action_names: Column labels.
        path: Save the figure there as PNG.
        title: Axes title.

    Returns:
        The figure.

    Shape:
        - head_r2: ``(K, A)``
    """
    from matplotlib.figure import Figure

    if not isinstance(head_r2, Tensor) or head_r2.ndim != 2:
        raise ValueError(
            f"head_r2 must be a (K, A) tensor, got {getattr(head_r2, 'shape', head_r2)}"
        )
    k, a = head_r2.shape
    if action_names is not None and len(action_names) != a:
        raise ValueError(f"action_names must have {a} names, got {len(action_names)}")
    fig = Figure(figsize=(1.2 + 0.8 * a, 1.0 + 0.5 * k))
    ax = fig.add_subplot()
    im = ax.imshow(
        head_r2.detach().float().clamp(0, 1).cpu().numpy(), vmin=0, vmax=1, cmap="viridis"
    )
    fig.colorbar(im, ax=ax, label="R²")
    ax.set_yticks(range(k), [f"head {i}" for i in range(k)])
    ax.set_xticks(range(a), list(action_names) if action_names else [str(j) for j in range(a)])
    for i in range(k):
        for j in range(a):
            v = float(head_r2[i, j])
            ax.text(
                j, i, f"{v:.2f}", ha="center", va="center", fontsize=7,
                color="white" if v < 0.5 else "black",
            )  # fmt: skip
    ax.set_title(title, fontsize="medium")
    return _finish(fig, path)


def plot_monitor_history(
    history: Sequence[Mapping[str, Any]],
    *,
    path: PathLike | None = None,
    title: str = "CRATE diagnostics during training",
) -> Figure | None:
    """Per-layer :math:`R^c`, sparsity and head specialisation logged by
    :func:`~jepa_blocks.blocks.crate_monitor`.

    One panel per quantity against the step: :math:`R^c` (``eval/{s}_rate_{i}``), ISTA
    sparsity (``eval/{s}_sparsity_{i}``) and, when logged, head specialisation
    (``eval/{s}_spec_{i}``, solid) with the best head's :math:`R^2` (``eval/{s}_head_r2_{i}``,
    dashed).

    Args:
        history: The loop's history (records with ``eval/{s}_rate_{i}`` keys).
        path: Save the figure there as PNG.
        title: Figure title.

    Returns:
        The figure, or ``None`` when the history holds no CRATE records.
    """
    from matplotlib.figure import Figure

    kinds = (
        ("_rate_", "$R^c$ of the MSSA input tokens"),
        ("_sparsity_", "ISTA sparsity (fraction of zeros)"),
        ("_spec_", "head specialisation (—), best head R² (- -)"),
    )
    evals = [r for r in history if any(str(k).startswith("eval/") for k in r)]
    keys = sorted({k for r in evals for k in r if any(m in k for m, _ in kinds)})
    if not any("_rate_" in k or "_sparsity_" in k for k in keys):
        return None
    r2_keys = sorted({k for r in evals for k in r if "_head_r2_" in k})
    panels = [(m, y) for m, y in kinds if any(m in k for k in keys) or (m == "_spec_" and r2_keys)]
    fig = Figure(figsize=(4.5 * len(panels), 3.5))
    axes = dict(zip((m for m, _ in panels), fig.subplots(1, len(panels), squeeze=False)[0]))
    for k in [*keys, *r2_keys]:
        pts = [(float(r["step"]), float(r[k])) for r in evals if k in r]
        marker = next((m for m, _ in panels if m in k), "_spec_")
        dashed = "_head_r2_" in k
        label = k.removeprefix("eval/")
        for m in ("_rate_", "_sparsity_", "_spec_", "_head_r2_"):
            label = label.replace(m, " layer ")
        axes[marker].plot(
            [p[0] for p in pts],
            [p[1] for p in pts],
            "--" if dashed else "-",
            marker="o",
            markersize=3,
            label=label + (" R²" if dashed else ""),
        )
    for m, ylabel in panels:
        axes[m].set_ylabel(ylabel)
        axes[m].set_xlabel("step")
        axes[m].legend(fontsize="x-small")
    fig.suptitle(title)
    return _finish(fig, path)


def _action_names(views_kind: str, a: int) -> list[str]:
    if views_kind == "affine" and a == 5:
        return ["sin Δθ", "cos Δθ", "Δtx", "Δty", "Δlog s"]
    if views_kind in ("rotation", "rotation90") and a == 2:
        return ["sin Δθ", "cos Δθ"]
    return [f"a[{j}]" for j in range(a)]


def write_plots(
    out_dir: Path,
    *,
    diags: Mapping[str, Mapping[str, StackDiagnostics]],
    init_diags: Mapping[str, Mapping[str, StackDiagnostics]],
    histories: Mapping[str, Sequence[Mapping[str, Any]]],
    spectra: Mapping[str, Tensor],
    views_kind: str,
) -> list[str]:
    """Write the figures of step 3 into ``out_dir``; returns their file names.

    ``crate_layer_rates.png`` / ``crate_layer_sparsity.png`` (per-layer :math:`R^c` and ISTA
    sparsity of every CRATE stack, trained and at initialisation), one
    ``head_specialization_<arm>_<stack>.png`` per CRATE stack (last layer), one
    ``crate_history_<arm>.png`` per arm with CRATE parts (:func:`plot_monitor_history`) and
    ``rotation_delta_spectrum.png`` (every arm's rotation Δz spectrum).

    Args:
        out_dir: Where to write.
        diags: ``{arm: {stack: diagnostics}}`` of the trained networks.
        init_diags: The same at initialisation.
        histories: ``{arm: the loop's history}``.
        spectra: ``{arm: rotation Δz spectrum}`` (arms without one left out).
        views_kind: ``data.views`` (names of the action coordinates).
    """
    from jepa_blocks.metrics import plot_spectrum

    written: list[str] = []
    titles = {"agg": "aggregator", "pred": "predictor"}
    for what, field, ylabel, title in (
        ("rates", "rates", "$R^c$ of the MSSA input tokens", "Compression $R^c$ by layer"),
        ("sparsity", "sparsity", "ISTA sparsity (fraction of zeros)", "ISTA sparsity by layer"),
    ):
        profiles: dict[str, list[float]] = {}
        for name, diag in diags.items():
            for key, d in diag.items():
                profiles[f"{name} {titles[key]}"] = getattr(d, field).tolist()
                d0 = init_diags.get(name, {}).get(key)
                if d0 is not None:
                    profiles[f"{name} {titles[key]} init"] = getattr(d0, field).tolist()
        if profiles:
            fname = f"crate_layer_{what}.png"
            plot_layer_profiles(
                profiles, ylabel=ylabel, path=out_dir / fname, title=f"{title} (test sequences)"
            )
            written.append(fname)
    for name, diag in diags.items():
        for key, d in diag.items():
            fname = f"head_specialization_{name}_{key}.png"
            plot_head_specialization(
                d.head_r2[-1],
                action_names=_action_names(views_kind, d.head_r2.shape[-1]),
                path=out_dir / fname,
                title=f"{name}: last {titles[key]} layer, held-out R² of {d.action} per head",
            )
            written.append(fname)
        if diag:
            fname = f"crate_history_{name}.png"
            if plot_monitor_history(
                histories[name],
                path=out_dir / fname,
                title=f"{name}: CRATE diagnostics during training",
            ):
                written.append(fname)
    if spectra:
        plot_spectrum(
            dict(spectra),
            top_k=2,
            path=out_dir / "rotation_delta_spectrum.png",
            title="Covariance spectrum of Δz on pure-rotation pairs",
        )
        written.append("rotation_delta_spectrum.png")
    return written
