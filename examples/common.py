"""What every recipe shares: configs, the command line, the report table, metrics.json, gates.

A recipe (``step1_baseline.py`` … ``step6_local.py``) is ``main() → config → run(config)``:

* **Config** (:func:`load_config`): the preset ``configs/<preset>.yaml``, then the step's overlay
  ``configs/steps/<step>.yaml`` (its ``smoke`` list extends the preset's), a ``--config`` file,
  the variant ``configs/variants/<variant>.yaml``, the ``smoke`` overrides with ``--smoke``, and
  ``key=value`` overrides last. Every preset and variant is a YAML file; nothing is hidden in code.
* **Command line** (:func:`parse_cli`): ``--preset``, ``--variant``, ``--smoke``, ``--out``,
  ``--config``, ``--print-config`` and ``key=value`` overrides (before or after the options).
* **Outputs** (:func:`write_outputs`): ``--out DIR/metrics.json`` (``metrics``: the headline
  metrics; ``random_init``; ``gate``; ``config``: the resolved config; ``versions``; ``seconds``;
  ``plots``; plus the step's own sections), ``DIR/table.md`` and the plots. Steps that train
  several arms or stages keep each one's metrics under their own key (``arms``, ``stages``,
  ``runs``) with the same metric names as ``metrics``.
* **Gates** (:func:`check_gate`): thresholds from the config's ``gates`` section. A smoke run's
  gate is a pipeline check (did every stage run and produce finite numbers), not a result.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import math
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import torch

from jepa_blocks.metrics import (
    EvalConfig,
    FeatureSet,
    covariance_spectrum,
    plot_rank_monitor,
    plot_rotation_circle,
    plot_spectrum,
)
from jepa_blocks.runtime import environment, write_json
from jepa_blocks.train import TrainConfig
from jepa_blocks.train.config import apply_overrides, config_from_dict, config_to_dict
from parts import DataConfig, ModelConfig

__all__ = [
    "CONFIG_DIR",
    "GateResult",
    "Gates",
    "RecipeConfig",
    "check_gate",
    "format_probe_table",
    "gate_metrics",
    "load_config",
    "markdown_table",
    "parse_cli",
    "probe_plots",
    "variant_names",
    "write_outputs",
]

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
C = TypeVar("C", bound="RecipeConfig")


@dataclasses.dataclass
class RecipeConfig:
    """A recipe's config: data, model, loop, evaluation, gates (steps add their own sections).

    Attributes:
        name: Name of the preset.
        description: Free text.
        step: ``"step1"`` … ``"step6"`` (set by the script).
        variant: Name of the variant file (``configs/variants/<variant>.yaml``).
        data: :class:`parts.DataConfig`.
        model: :class:`parts.ModelConfig`.
        train: :class:`~jepa_blocks.train.TrainConfig`.
        eval: :class:`~jepa_blocks.metrics.EvalConfig`.
        gates: Thresholds on the final metrics (``{name, description, min, max}``).
        smoke: ``key=value`` overrides applied by ``--smoke`` (a complete run in seconds).
        threads: torch intra-op threads for the run (``None``: torch's default).
    """

    name: str = "custom"
    description: str = ""
    step: str = "step2"
    variant: str = "stopgrad-rate"
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
    gates: dict[str, Any] = dataclasses.field(default_factory=dict)
    smoke: list[str] = dataclasses.field(default_factory=list)
    threads: int | None = None


# --------------------------------------------------------------------------- configs


def _read_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    import yaml

    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, Mapping):
        raise ValueError(f"{path}: the YAML top level must be a mapping, got {type(data).__name__}")
    return dict(data)


def _merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """Deep merge (``gates`` is replaced whole: a gate set is one unit)."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping) and key != "gates":
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def variant_names(config_dir: Path = CONFIG_DIR) -> list[str]:
    """Names of the variant files in ``config_dir/variants``."""
    return sorted(p.stem for p in (config_dir / "variants").glob("*.yaml"))


def load_config(
    cls: type[C],
    *,
    step: str,
    preset: str | os.PathLike[str] | None = "cpu-demo",
    variant: str | None = None,
    config_file: str | os.PathLike[str] | None = None,
    smoke: bool = False,
    overrides: Sequence[str] = (),
    config_dir: Path = CONFIG_DIR,
    preset_dir: Path | None = None,
) -> C:
    """Resolve a recipe's config (see the module docstring for the order).

    Args:
        cls: The recipe's config class (:class:`RecipeConfig` or a subclass).
        step: The step; ``configs/steps/<step>.yaml`` is merged when it exists.
        preset: A preset name (``configs/<preset>.yaml``) or a YAML path; ``None``: defaults.
        variant: A variant name (``configs/variants/<variant>.yaml``).
        config_file: A YAML file merged after the step overlay.
        smoke: Apply the ``smoke`` overrides.
        overrides: ``key=value`` overrides, last (values parsed as YAML).
        config_dir: Where the ``steps/`` and ``variants/`` folders (and by default the presets)
            live.
        preset_dir: Where preset names are looked up (default ``config_dir``).

    Raises:
        ValueError: Unknown preset, variant or key. TypeError: a value of the wrong type.
    """
    data: dict[str, Any] = {}
    if preset is not None:
        path = Path(preset)
        if path.suffix not in (".yaml", ".yml"):
            where = preset_dir if preset_dir is not None else config_dir
            path = where / f"{preset}.yaml"
            if not path.is_file():
                names = sorted(p.stem for p in where.glob("*.yaml"))
                raise ValueError(f"unknown preset {str(preset)!r}; available: {names}")
        data = _read_yaml(path)
    overlay_path = config_dir / "steps" / f"{step}.yaml"
    if overlay_path.is_file():
        overlay = _read_yaml(overlay_path)
        smoke_extra = list(overlay.pop("smoke", []))
        data = _merge(data, overlay)
        data["smoke"] = [*data.get("smoke", []), *smoke_extra]
    if config_file is not None:
        data = _merge(data, _read_yaml(config_file))
    if variant is not None:
        names = variant_names(config_dir)
        if variant not in names:
            raise ValueError(f"unknown variant {variant!r}; choose one of {names}")
        data = _merge(data, _read_yaml(config_dir / "variants" / f"{variant}.yaml"))
        data["variant"] = variant
    data["step"] = step
    config = config_from_dict(cls, data)
    if smoke:
        config = apply_overrides(config, config.smoke)
    return apply_overrides(config, list(overrides))


# --------------------------------------------------------------------------- command line


def parse_cli(
    cls: type[C],
    argv: Sequence[str] | None,
    *,
    step: str,
    description: str | None,
    variants: Sequence[str] | None = None,
    default_variant: str | None = None,
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
    extra_overrides: Callable[[argparse.Namespace], list[str]] | None = None,
    name_extra: bool = False,
    default_preset: str = "cpu-demo",
    preset_dir: Path = CONFIG_DIR,
) -> tuple[C, argparse.Namespace]:
    """Parse a recipe's command line into its resolved config.

    Args:
        cls: The config class.
        argv: Arguments (default ``sys.argv[1:]``).
        step: The step name (``out`` defaults to ``runs/<step>-<variant>-<preset>[-smoke]``).
        description: The script's docstring (shown by ``--help`` as written).
        variants: Allowed ``--variant`` values (``None``: no ``--variant`` option).
        default_variant: The variant used without ``--variant`` (or the only one).
        add_arguments: Adds the step's own options.
        extra_overrides: Turns the step's own options into ``key=value`` overrides.
        name_extra: Append those overrides' values to the default ``out`` name.
        default_preset: The preset used without ``--preset`` (a name or a YAML path).
        preset_dir: Where preset names are looked up (default ``configs/``).

    Returns:
        ``(config, args)``; ``config.train.out_dir`` is set. ``--print-config`` prints the
        resolved config as YAML and exits.
    """
    import yaml

    presets = sorted(p.stem for p in preset_dir.glob("*.yaml"))
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--preset",
        default=default_preset,
        help=f"one of {list(presets)} or a YAML path (default: %(default)s)",
    )
    if variants:
        parser.add_argument(
            "--variant",
            default=default_variant,
            choices=list(variants),
            help="default: %(default)s",
        )
    parser.add_argument("--smoke", action="store_true", help="a complete run in seconds (CI)")
    parser.add_argument("--out", default=None, help="output directory (default runs/<run name>)")
    parser.add_argument("--config", default=None, help="YAML file merged on top of the preset")
    parser.add_argument(
        "--print-config", action="store_true", help="print the resolved config as YAML and exit"
    )
    if add_arguments is not None:
        add_arguments(parser)
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.epochs=3")
    args = parser.parse_intermixed_args(argv)
    variant = getattr(args, "variant", None) or default_variant
    extra = extra_overrides(args) if extra_overrides is not None else []
    try:
        config = load_config(
            cls,
            step=step,
            preset=args.preset,
            variant=variant,
            config_file=args.config,
            smoke=args.smoke,
            overrides=[*extra, *args.overrides],
            preset_dir=preset_dir,
        )
    except (ValueError, TypeError) as e:
        parser.error(str(e))
    # Options that pick another model name another run (step 2's --regularizer sigreg: ...-sigreg).
    tags = [o.split("=", 1)[1] for o in extra] if name_extra else []
    name = "-".join(p for p in (step, variant, config.name, *tags) if p)
    out = args.out or os.path.join("runs", name + ("-smoke" if args.smoke else ""))
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, out_dir=out))
    if args.print_config:
        print(yaml.safe_dump(config_to_dict(config), sort_keys=False, allow_unicode=True), end="")
        sys.exit(0)
    if config.train.resume and (Path(out) / "checkpoint.pt").is_file():
        print(f"resuming from {Path(out) / 'checkpoint.pt'} (train.resume=false to start over)")
    return config, args


# --------------------------------------------------------------------------- report


_PROBE_ROWS = (
    ("linacc", "linacc(z_agg), test", "pct"),
    ("r2", "R² of a_1 from [z_1; z_2]", "num"),
    ("leakage_linacc", "leakage: linacc(z_1)", "pct"),
    ("leakage_r2", "leakage: R² of a_1 from z_agg", "num"),
    ("linacc_gap", "linacc gap (z_agg − z_1)", "pct"),
    ("r2_gap", "R² gap ([z_1;z_2] − z_agg)", "num"),
    ("rank_z_agg", "effective rank z_agg", "rank"),
    ("rank_z", "effective rank z", "rank"),
)


def cell(metrics: Mapping[str, Any] | None, key: str, kind: str) -> str:
    """One table cell: ``pct`` (a fraction as %), ``rank`` (with its dimension) or ``num``."""
    if metrics is None or key not in metrics or metrics[key] is None:
        return "—"
    v = float(metrics[key])
    if kind == "pct":
        return f"{100 * v:.1f} %"
    if kind == "rank":
        dim = metrics.get("dim_z_agg" if key == "rank_z_agg" else "dim_z")
        return f"{v:.1f} / {dim} ({100 * v / float(dim):.0f} %)" if dim else f"{v:.1f}"
    return f"{v:.3f}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table, columns padded; the first column left-aligned, the others right."""
    body = [list(header), *[list(r) for r in rows]]
    widths = [max(len(r[i]) for r in body) for i in range(len(header))]
    sep = ["-" * widths[0], *["-" * (w - 1) + ":" for w in widths[1:]]]
    lines = []
    for r in [body[0], sep, *body[1:]]:
        cells = [r[0].ljust(widths[0]), *[c.rjust(w) for c, w in zip(r[1:], widths[1:])]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_probe_table(trained: Mapping[str, Any], random_init: Mapping[str, Any] | None) -> str:
    """The probe metrics of the trained model next to the same network at initialisation."""
    rows = [
        (label, cell(trained, key, kind), cell(random_init, key, kind))
        for key, label, kind in _PROBE_ROWS
    ]
    if "pixel_linacc" in trained:
        rows.append(("linacc(raw pixels of x_1)", cell(trained, "pixel_linacc", "pct"), "—"))
    return markdown_table(("metric", "trained", "random-init"), rows)


def probe_plots(
    out_dir: Path,
    history: Sequence[Mapping[str, Any]],
    trained: FeatureSet,
    random_init: FeatureSet | None,
    init_ranks: Mapping[str, float] | None,
    views_kind: str,
) -> list[str]:
    """The standard figures: rank monitor, z_agg spectrum, rotation circle; returns file names."""
    written = []
    evals = [r for r in history if "eval/rank_z_agg" in r]
    if evals:
        steps = [float(r["step"]) for r in evals]
        ranks = {
            "z_agg": [float(r["eval/rank_z_agg"]) for r in evals],
            "z": [float(r["eval/rank_z"]) for r in evals],
        }
        if init_ranks is not None:
            steps = [0.0, *steps]
            ranks = {k: [float(init_ranks[f"rank_{k}"]), *v] for k, v in ranks.items()}
        plot_rank_monitor(
            steps,
            ranks,
            max_rank=float(trained.z_agg.shape[1]),
            path=out_dir / "rank_monitor.png",
            title="Effective rank on test sequences",
        )
        written.append("rank_monitor.png")
    spectra = {"z_agg trained": covariance_spectrum(trained.z_agg)}
    if random_init is not None:
        spectra["z_agg random-init"] = covariance_spectrum(random_init.z_agg)
    plot_spectrum(
        spectra, path=out_dir / "spectrum_z_agg.png", title="Covariance spectrum of z_agg"
    )
    written.append("spectrum_z_agg.png")
    if views_kind in ("affine", "rotation", "rotation90"):
        angle = torch.atan2(trained.actions[:, 0, 0], trained.actions[:, 0, 1])
        plot_rotation_circle(
            trained.z[:, 1],
            angle,
            reference=trained.z[:, 0],
            path=out_dir / "rotation_circle.png",
            title="How the relative rotation acts on z (pairs z_1 → z_2)",
        )
        written.append("rotation_circle.png")
    return written


# --------------------------------------------------------------------------- gates


def gate_metrics(
    metrics: Mapping[str, Any], random_init: Mapping[str, Any] | None
) -> dict[str, float]:
    """The numeric metrics, plus ``linacc_gain``/``r2_gain`` over the random-init network."""
    flat = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
    if random_init is not None:
        for key in ("linacc", "r2"):
            if key in metrics and key in random_init:
                flat[f"{key}_gain"] = float(metrics[key]) - float(random_init[key])
    return flat


@dataclasses.dataclass(frozen=True)
class Gates:
    """Named lower (``minimum``) and upper (``maximum``) bounds on final metrics.

    The gates of the follow-up repository ``kaikun213/seq-jepa`` (``train.py``
    ``evaluate_gates``): a run passes when every gated metric is a finite number within its
    bounds (inclusive). Accuracies are fractions (that repository's 12.0 is 0.12 here). Its
    CIFAR-10-rotation tiers are the presets of ``configs/gates/tiers.yaml`` (``smoke``, ``quick``,
    ``baseline-lite``).
    """

    name: str = "custom"
    minimum: Mapping[str, float] = dataclasses.field(default_factory=dict)
    maximum: Mapping[str, float] = dataclasses.field(default_factory=dict)
    description: str = ""

    def __post_init__(self) -> None:
        for label, bounds in (("minimum", self.minimum), ("maximum", self.maximum)):
            for key, v in bounds.items():
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                    raise ValueError(f"gate {label}[{key!r}] must be a finite number, got {v!r}")
        for key in set(self.minimum) & set(self.maximum):
            if self.minimum[key] > self.maximum[key]:
                raise ValueError(f"gate {key!r}: minimum {self.minimum[key]} above its maximum")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Gates:
        """From ``{name, description, min, max}``, the flat ``<metric>_min`` / ``_max`` keys of the
        follow-up repository, or just ``{name: <preset>}`` (``configs/gates/tiers.yaml``)."""
        if not isinstance(data, Mapping):
            raise TypeError(f"gates must be a mapping, got {type(data).__name__}")
        presets = _read_yaml(CONFIG_DIR / "gates" / "tiers.yaml")
        if set(data) == {"name"} and data["name"] in presets:
            return cls.from_dict({"name": data["name"], **presets[data["name"]]})
        minimum, maximum = dict(data.get("min") or {}), dict(data.get("max") or {})
        for key, value in data.items():
            if key.endswith("_min"):
                minimum[key[:-4]] = value
            elif key.endswith("_max"):
                maximum[key[:-4]] = value
            elif key not in ("name", "description", "min", "max"):
                raise ValueError(
                    f"unknown gate key {key!r}: name, description, min, max, *_min, *_max"
                )
        return cls(
            str(data.get("name") or "custom"), minimum, maximum, str(data.get("description") or "")
        )

    def check(self, metrics: Mapping[str, Any], *, missing: str = "fail") -> GateResult:
        """Compare ``metrics``; ``missing="skip"`` ignores gated metrics that are absent."""
        reasons: list[str] = []
        for key in sorted(set(self.minimum) | set(self.maximum)):
            if metrics.get(key) is None:
                if missing == "fail":
                    reasons.append(f"{key}: missing")
                continue
            try:
                value = float(metrics[key])
            except (TypeError, ValueError):
                reasons.append(f"{key}: not a number ({metrics[key]!r})")
                continue
            lo, hi = self.minimum.get(key), self.maximum.get(key)
            if not math.isfinite(value):
                reasons.append(f"{key} = {value}: not finite")
            elif key.endswith("linacc") and not 0.0 <= value <= 1.0:
                reasons.append(f"{key} = {value:g}: accuracies are fractions in [0, 1]")
            elif lo is not None and value < lo:
                reasons.append(f"{key} = {value:.4g} < minimum {lo:g}")
            elif hi is not None and value > hi:
                reasons.append(f"{key} = {value:.4g} > maximum {hi:g}")
        return GateResult(self.name, not reasons, tuple(reasons))


@dataclasses.dataclass(frozen=True)
class GateResult:
    """A gate verdict, truthy when it passed, with one reason per failure."""

    name: str
    passed: bool
    reasons: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        head = f"gates {self.name!r}: {'PASS' if self.passed else 'FAIL'}"
        return head if self.passed else head + "\n  " + "\n  ".join(self.reasons)


def check_gate(config: RecipeConfig, flat: Mapping[str, float]) -> GateResult | None:
    """Check the config's gates on ``flat`` metrics (``None`` without gates)."""
    return Gates.from_dict(config.gates).check(flat) if config.gates else None


def gate_record(config: RecipeConfig, gate: GateResult | None) -> dict[str, Any] | None:
    """The gate verdict as stored in metrics.json."""
    if gate is None:
        return None
    gates = Gates.from_dict(config.gates)
    return {
        "name": gate.name,
        "passed": gate.passed,
        "reasons": list(gate.reasons),
        "min": dict(gates.minimum),
        "max": dict(gates.maximum),
    }


def gate_line(gate: GateResult | None) -> str:
    """The printed verdict; a smoke gate says it is a pipeline check."""
    if gate is None:
        return ""
    text = str(gate)
    if gate.name == "smoke":
        text += "  (smoke: a pipeline check that every stage ran, not a result)"
    return text


# --------------------------------------------------------------------------- outputs


def write_outputs(
    out_dir: Path | None,
    *,
    config: RecipeConfig,
    device: torch.device | str,
    metrics: Mapping[str, Any] | None,
    table: str,
    gate: GateResult | None = None,
    random_init: Mapping[str, Any] | None = None,
    seconds: Mapping[str, float] | None = None,
    plots: Sequence[str] = (),
    **sections: Any,
) -> None:
    """Write ``metrics.json`` and ``table.md`` (see the module docstring); no-op without a dir."""
    if out_dir is None:
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {
        "step": config.step,
        "variant": config.variant,
        "preset": config.name,
        "date": datetime.date.today().isoformat(),
        "device": str(device),
        "versions": environment(),
        "metrics": dict(metrics) if metrics is not None else None,
        "random_init": dict(random_init) if random_init is not None else None,
        "gate": gate_record(config, gate),
        **sections,
        "seconds": dict(seconds or {}),
        "plots": list(plots),
        "config": config_to_dict(config),
    }
    write_json(out_dir / "metrics.json", record)
    (out_dir / "table.md").write_text(table.rstrip() + "\n", encoding="utf-8")
