"""Benchmark of the step-3 parts: CRATE aggregator / predictor against the step-2 model's.

Measures the parts of step 3 (``examples/step3_crate.py``) at the sizes of a recipe preset
(default ``cpu-demo``): the step-2 model (transformer aggregator, MLP predictor) against its CRATE
aggregator (integration A, arm ``step3-agg``) and its two-token CRATE predictor (integration B,
arm ``step3-pred``), built exactly as the example builds them (``step3_parts.build_arm_model``
with the config's ``crate:`` section, the same seed, so the same encoder). For each arm, one
training step (forward + backward, no optimizer) of the whole seq-JEPA model on random views of
the preset's shape (``batch`` sequences of ``M + 1`` views), of the aggregator alone on its
``(batch, M, D + E)`` tokens, and of the predictor alone; median time, memory (CUDA peak above
the pre-call level, or on the CPU the activations saved for backward, with the aggregator's and
the predictor's share of the whole step) and parameter counts, the arms interleaved in every
repeat, their order rotated by one per repeat.

Usage::

    python benchmarks/bench_crate_arms.py                        # cpu-demo sizes (batch 128, M 3)
    python benchmarks/bench_crate_arms.py --preset paper-cifar100 --batch 32
    python benchmarks/bench_crate_arms.py --arms step2,step3-both crate.layer=crate-alpha
    python benchmarks/bench_crate_arms.py --json out.json --markdown out.md

``key=value`` overrides apply to the recipe config (``crate.*``, ``model.*``, ``data.*``).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import functools
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

import jepa_blocks
from jepa_blocks import SeqJEPA
from jepa_blocks.metrics import measure_peak_memory
from jepa_blocks.train.config import config_to_dict

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "examples") not in sys.path:
    sys.path.insert(0, str(ROOT / "examples"))

from common import load_config  # noqa: E402
from step3_parts import Step3Config, build_arm_model, load_arm  # noqa: E402

__all__ = ["ACTION_DIMS", "ARM_NAMES", "IMAGE_SHAPES", "arm_steps", "arms_markdown", "main"]

#: Image shape ``(C, H, W)`` of each dataset of the recipe presets.
IMAGE_SHAPES: dict[str, tuple[int, int, int]] = {
    "mnist": (1, 28, 28),
    "digits": (1, 8, 8),
    "cifar10": (3, 32, 32),
    "cifar100": (3, 32, 32),
}
#: Action dimension ``A`` of each view generator of the recipe presets.
ACTION_DIMS: dict[str, int] = {"affine": 5, "rotation": 2, "rotation90": 2, "cifar-augment": 9}
#: The arms measured by default: the step-2 model and its two CRATE integrations (A and B).
ARM_NAMES: tuple[str, ...] = ("step2", "step3-agg", "step3-pred")
_MIB = 2.0**20


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _loadavg() -> float | None:
    """1-minute load average of the host (a shared CPU skews absolute times, not ratios much)."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _interleaved_seconds(
    fns: Mapping[str, Callable[[], None]], *, repeats: int, warmup: int, device: torch.device
) -> dict[str, float]:
    """Median seconds of every ``fn()``: the calls interleaved in every repeat, in an order
    rotated by one call per repeat, so that no call always follows the same one."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    keys = list(fns)
    for i in range(warmup + repeats):
        shift = i % len(keys)
        for key in keys[shift:] + keys[:shift]:
            fn = fns[key]
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            if i >= warmup:
                times[key].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def _memory(
    fn: Callable[[], Tensor], *, module: nn.Module, device: torch.device, scope: nn.Module | None
) -> tuple[int | None, str]:
    """Bytes of one forward ``fn()`` (CUDA peak, or saved activations without ``module``'s
    parameters and buffers, or ``scope``'s share of those on the CPU) and the metric's name."""
    reading = measure_peak_memory(
        fn, exclude=[*module.parameters(), *module.buffers()], device=device, scope=scope
    )
    if device.type == "cuda":
        return (None if scope is not None else reading.cuda_bytes), "cuda-peak"
    return (reading.scoped_bytes if scope is not None else reading.saved_bytes), "saved-tensors"


def arm_steps(
    config: Step3Config,
    *,
    arms: Sequence[str] = ARM_NAMES,
    batch: int | None = None,
    repeats: int = 5,
    warmup: int = 1,
    device: torch.device | str = "cpu",
    seed: int = 0,
) -> dict[str, Any]:
    r"""Time and memory of one training step of each step-3 arm at the sizes of ``config``.

    Every arm is the model ``step3_parts.build_arm_model`` builds for ``examples/step3_crate.py``
    (the same seed, so the same encoder). Measured per arm (forward + backward, gradients zeroed
    first, no optimizer step, ``train()`` mode):

    * ``step``: the whole seq-JEPA loss on random views ``(batch, M+1, C, H, W)`` and actions
      ``(batch, M, A)``;
    * ``agg``: the aggregator alone on tokens ``(batch, M, D+E)`` (loss: mean square of
      :math:`z_\text{AGG}`);
    * ``pred``: the predictor alone on inputs ``(batch, D+2E)``.

    Memory: :func:`jepa_blocks.metrics.measure_peak_memory` of the forward pass (CUDA peak above
    the pre-call level; on the CPU the activations saved for backward, parameters excluded, with
    the aggregator's and the predictor's share of the whole step as ``step_agg_mib`` /
    ``step_pred_mib``).

    Args:
        config: A step-3 recipe config (data shapes, model widths, variant, ``crate:``).
        arms: Arms whose variant is the run's (``step2``, ``step3-agg``, ``step3-pred``,
            ``step3-both``); the first is the baseline of the ratios.
        batch: Sequences per step (``None``: ``config.data.batch_size``; at least 2, the MLP
            predictor has a BatchNorm).
        repeats: Timed repetitions (median reported).
        warmup: Untimed calls first.
        device: Where to run.
        seed: Seed of the weights and inputs.

    Returns:
        A JSON-ready dict: shapes, environment and ``arms[name]`` with ``integration``,
        ``agg_params``, ``pred_params``, ``step_ms``, ``step_mib``, ``step_agg_mib``,
        ``step_pred_mib``, ``agg_ms``, ``agg_mib``, ``pred_ms``, ``pred_mib``.
    """
    arms = list(arms)
    if not arms:
        raise ValueError("arms must name at least one arm")
    integration = {}
    for name in arms:
        arm = load_arm(name)
        if arm.variant is not None:
            raise ValueError(
                f"arm {name!r} is not a step-2/step-3 arm (it has its own variant {arm.variant!r})"
            )
        integration[name] = arm.integration
    data, model_cfg = config.data, config.model
    if data.dataset not in IMAGE_SHAPES or data.views not in ACTION_DIMS:
        raise ValueError(f"unknown dataset / views {data.dataset!r} / {data.views!r}")
    c, h, w = IMAGE_SHAPES[data.dataset]
    a_dim = ACTION_DIMS[data.views]
    m = int(data.num_observed)
    b = int(data.batch_size if batch is None else batch)
    if b < 2:
        raise ValueError(f"batch must be >= 2, got {b}")
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got {repeats}, {warmup}")
    dev = torch.device(device)
    gen = torch.Generator().manual_seed(seed)
    views = torch.randn(b, m + 1, c, h, w, generator=gen).to(dev)
    actions = torch.randn(b, m, a_dim, generator=gen).to(dev)
    width = model_cfg.encoder_dim + model_cfg.action_embed_dim
    tokens = torch.randn(b, m, width, generator=gen).to(dev).requires_grad_(True)

    models: dict[str, SeqJEPA] = {}
    for name in arms:
        torch.manual_seed(seed)
        model = build_arm_model(
            model_cfg, config.crate, integration=integration[name], in_channels=c,
            action_dim=a_dim, total_steps=100, steps_per_epoch=10,
        ).to(dev)  # fmt: skip
        models[name] = model.train()
    pred_inputs = {
        name: torch.randn(b, int(mdl.predictor.in_dim), generator=gen).to(dev).requires_grad_(True)
        for name, mdl in models.items()
    }

    def step_loss(name: str) -> Tensor:
        return models[name](views, actions).loss

    def agg_loss(name: str) -> Tensor:
        return models[name].aggregator(tokens).square().mean()

    def pred_loss(name: str) -> Tensor:
        return models[name].predictor(pred_inputs[name]).square().mean()

    losses = {"step": step_loss, "agg": agg_loss, "pred": pred_loss}

    def train_call(fn: Callable[[str], Tensor], name: str) -> Callable[[], None]:
        def call() -> None:
            models[name].zero_grad(set_to_none=True)
            fn(name).backward()

        return call

    fns = {(f"{name}|{part}"): train_call(fn, name) for part, fn in losses.items() for name in arms}
    load_start = _loadavg()
    seconds = _interleaved_seconds(fns, repeats=repeats, warmup=warmup, device=dev)
    out_arms: dict[str, dict[str, Any]] = {}
    method = ""
    for name, model in models.items():
        row: dict[str, Any] = {
            "integration": integration[name],
            "agg_params": _params(model.aggregator),
            "pred_params": _params(model.predictor),
        }
        for part, fn in losses.items():
            row[f"{part}_ms"] = 1e3 * seconds[f"{name}|{part}"]
            target = {"step": model, "agg": model.aggregator, "pred": model.predictor}[part]
            nbytes, method = _memory(
                functools.partial(fn, name), module=target, device=dev, scope=None
            )
            row[f"{part}_mib"] = None if nbytes is None else nbytes / _MIB
        for key, scope in (("step_agg_mib", model.aggregator), ("step_pred_mib", model.predictor)):
            nbytes, _ = _memory(
                functools.partial(step_loss, name), module=model, device=dev, scope=scope
            )
            row[key] = None if nbytes is None else nbytes / _MIB
        out_arms[name] = row
        print(
            f"{name:>11}: step {row['step_ms']:.1f} ms {row['step_mib']:.1f} MiB | aggregator "
            f"{row['agg_ms']:.2f} ms {row['agg_mib']:.2f} MiB | predictor {row['pred_ms']:.2f} "
            f"ms {row['pred_mib']:.2f} MiB",
            flush=True,
        )
    return {
        "benchmark": "bench_crate_arms",
        "preset": config.name,
        "variant": config.variant,
        "date": _dt.date.today().isoformat(),
        "device": _device_name(dev),
        "torch": torch.__version__,
        "jepa_blocks": jepa_blocks.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "loadavg_1min_start_end": [load_start, _loadavg()],
        "batch": b,
        "num_observed": m,
        "image": [c, h, w],
        "action_dim": a_dim,
        "width": width,
        "encoder": model_cfg.encoder,
        "depth": model_cfg.depth,
        "heads": model_cfg.heads,
        "crate": config_to_dict(config.crate),
        "repeats": repeats,
        "memory_metric": method,
        "arms": out_arms,
    }


#: The table rows of :func:`arms_markdown`: ``(key, label, format)``.
ARM_ROWS: tuple[tuple[str, str, str], ...] = (
    ("step_ms", "whole step, ms", ".1f"),
    ("step_mib", "whole step, MiB", ".1f"),
    ("step_agg_mib", "whole step: aggregator's share, MiB", ".2f"),
    ("step_pred_mib", "whole step: predictor's share, MiB", ".2f"),
    ("agg_ms", "aggregator alone, ms", ".2f"),
    ("agg_mib", "aggregator alone, MiB", ".2f"),
    ("agg_params", "aggregator parameters", ",d"),
    ("pred_ms", "predictor alone, ms", ".2f"),
    ("pred_mib", "predictor alone, MiB", ".2f"),
    ("pred_params", "predictor parameters", ",d"),
)


def arms_markdown(result: Mapping[str, Any]) -> str:
    """Render :func:`arm_steps`'s result as a Markdown table (ratios to the first arm)."""
    names = list(result["arms"])
    base = result["arms"][names[0]]
    mem = (
        "CUDA peak above the pre-call level"
        if result["memory_metric"] == "cuda-peak"
        else "activations saved for backward, parameters excluded"
    )
    lines = [
        f"# bench_crate_arms — {result['device']}",
        "",
        f"date {result['date']}, torch {result['torch']}, jepa-blocks {result['jepa_blocks']}, "
        f"python {result['python']}, threads {result['threads']} (1-min load average "
        f"{result['loadavg_1min_start_end'][0]} → {result['loadavg_1min_start_end'][1]}); "
        f"preset {result['preset']} (variant {result['variant']}): batch {result['batch']}, "
        f"M = {result['num_observed']} views + 1 target of {result['image']} images, "
        f"{result['encoder']} encoder, tokens of width {result['width']}, {result['depth']} "
        f"aggregator layers × {result['heads']} heads; median of {result['repeats']} "
        "forward+backward, arms interleaved. Memory: " + mem + ".",
        "",
        "| measurement | " + " | ".join(names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    for key, label, spec in ARM_ROWS:
        cells = []
        for n in names:
            v, ref = result["arms"][n].get(key), base.get(key)
            if v is None:
                cells.append("—")
                continue
            text = format(v, spec)
            if n != names[0] and ref and not key.endswith("params"):
                text += f" ({v / ref:.2f}×)"
            cells.append(text)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    integ = ", ".join(f"{n}: {result['arms'][n]['integration']}" for n in names)
    lines += ["", f"CRATE parts by arm ({integ}); ratios against {names[0]}, same run."]
    return "\n".join(lines) + "\n"


def _write(path: Path | None, text: str) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--preset", default="cpu-demo", help="recipe preset (examples/configs)")
    p.add_argument("--variant", default="stopgrad-rate", help="the step-2 variant of the arms")
    p.add_argument("--batch", type=int, default=None, help="sequences per step (preset's)")
    p.add_argument("--arms", default=",".join(ARM_NAMES), help="comma-separated step-3 arms")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:i]")
    p.add_argument("--repeats", type=int, default=None, help="default 20 on CUDA, 5 on the CPU")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: as is)")
    p.add_argument("--json", type=Path, default=None, help="write results as JSON here")
    p.add_argument("--markdown", type=Path, default=None, help="write a Markdown table here")
    p.add_argument("overrides", nargs="*", help="key=value overrides of the recipe config")
    args = p.parse_intermixed_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
    config = load_config(
        Step3Config,
        step="step3",
        preset=args.preset,
        variant=args.variant,
        overrides=args.overrides,
    )
    result = arm_steps(
        config,
        arms=[a.strip() for a in args.arms.split(",") if a.strip()],
        batch=args.batch,
        repeats=args.repeats or (20 if device.type == "cuda" else 5),
        warmup=args.warmup,
        device=device,
    )
    text = arms_markdown(result)
    print("\n" + text)
    _write(args.json, json.dumps(result, indent=2) + "\n")
    _write(args.markdown, text)


if __name__ == "__main__":
    main()
