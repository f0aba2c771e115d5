"""Benchmark of the coding-rate hot path: ``½·logdet(I + α·ZᵀZ)`` forward + backward.

Compares, in one run and on one device:

(a) ``naive``  — the published form (MCR², EMP-SSL, lightly): ``torch.logdet`` (LU) of the
    ``d×d`` matrix ``I_d + α·ZᵀZ`` in fp32, autograd through everything;
(b) ``chol_dxd`` — Cholesky on the ``d×d`` matrix (SimDINO's ``half_logdet``), autograd;
(c) ``ours``   — :func:`jepa_blocks.coding_rate` (smaller Gram, custom backward);
(d) ``floor``  — the Gram matmul of the smaller side, forward + backward alone: no method that
    forms a Gram can beat it.

Reports median fwd+bwd times, the ratios naive/ours and ours/floor, and each method's relative
error against a float64 reference. The methods are timed **interleaved** (every repeat runs each
method once, in rotating order), so load from other processes on a shared machine hits all of
them alike; ``--rounds R`` repeats the whole measurement per shape and reports the median of the
per-round medians, with the spread of ``naive/ours`` over the rounds in the JSON. Usage::

    python benchmarks/bench_logdet.py                  # device auto, table on stdout
    python benchmarks/bench_logdet.py --json out.json  # also write the results
    python benchmarks/bench_logdet.py --quick          # fewer repeats (CI smoke)
    python benchmarks/bench_logdet.py --shapes 64x256x32,32x128x16 --rounds 5
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from jepa_blocks import coding_rate

SHAPES: list[tuple[int, int, int]] = [
    (1, 256, 128),
    (1, 512, 512),
    (1, 512, 2048),
    (1, 1024, 2048),
    (1, 4096, 512),
    (8, 512, 64),
    (16, 1024, 64),
    (64, 256, 32),
    (32, 128, 16),
    (1, 256, 4096),
    (1, 2048, 8192),
]
CPU_SKIP = {(1, 2048, 8192)}
EPS = 0.5


def _alpha(n: int, d: int) -> float:
    return d / (n * EPS**2)


def naive(z: torch.Tensor) -> torch.Tensor:
    """(a) torch.logdet of I_d + α ZᵀZ (LU), as in the official MCR²/EMP-SSL code."""
    n, d = z.shape[-2:]
    eye = torch.eye(d, device=z.device, dtype=z.dtype)
    return (0.5 * torch.logdet(eye + _alpha(n, d) * (z.mT @ z))).sum()


def chol_dxd(z: torch.Tensor) -> torch.Tensor:
    """(b) Cholesky on the d×d matrix, Σ log diag(L) (SimDINO's half_logdet)."""
    n, d = z.shape[-2:]
    eye = torch.eye(d, device=z.device, dtype=z.dtype)
    chol = torch.linalg.cholesky_ex(eye + _alpha(n, d) * (z.mT @ z))[0]
    return chol.diagonal(dim1=-2, dim2=-1).log().sum()


def ours(z: torch.Tensor) -> torch.Tensor:
    """(c) jepa_blocks.coding_rate."""
    return coding_rate(z, eps=EPS, distributed="none").sum()


def floor(z: torch.Tensor) -> torch.Tensor:
    """(d) The smaller Gram matmul alone (fwd + its bwd)."""
    n, d = z.shape[-2:]
    g = z.mT @ z if d <= n else z @ z.mT
    return g.sum()


METHODS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "naive": naive,
    "chol_dxd": chol_dxd,
    "ours": ours,
    "floor": floor,
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_fwd_bwd(
    fn: Callable[[torch.Tensor], torch.Tensor], z: torch.Tensor, repeats: int, warmup: int
) -> float:
    """Median wall time in ms of ``fn(z).backward()``."""
    times = []
    for i in range(warmup + repeats):
        z.grad = None
        _sync(z.device)
        t0 = time.perf_counter()
        fn(z).backward()
        _sync(z.device)
        if i >= warmup:
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def time_interleaved(
    methods: dict[str, Callable[[torch.Tensor], torch.Tensor]],
    z: torch.Tensor,
    repeats: int,
    warmup: int,
    stat: str = "median",
) -> dict[str, float]:
    """Median (or minimum) wall time in ms of ``fn(z).backward()`` per method, interleaved.

    Repeat ``i`` runs every method once, starting at method ``i mod len(methods)``, so slow
    phases of a shared machine are spread evenly over the methods.
    """
    names = list(methods)
    times: dict[str, list[float]] = {name: [] for name in names}
    for i in range(warmup + repeats):
        for j in range(len(names)):
            name = names[(i + j) % len(names)]
            z.grad = None
            _sync(z.device)
            t0 = time.perf_counter()
            methods[name](z).backward()
            _sync(z.device)
            if i >= warmup:
                times[name].append((time.perf_counter() - t0) * 1e3)
    reduce = min if stat == "min" else statistics.median
    return {name: reduce(t) for name, t in times.items()}


def rel_error(fn: Callable[[torch.Tensor], torch.Tensor], z: torch.Tensor, ref: float) -> float:
    with torch.no_grad():
        v = float(fn(z))
    return abs(v - ref) / abs(ref)


def run(
    device: torch.device,
    repeats: int,
    warmup: int,
    shapes: list[tuple[int, int, int]],
    rounds: int = 1,
    device_label: str | None = None,
    stat: str = "median",
    note: str = "",
) -> dict:
    rows = []
    for h, n, d in shapes:
        if device.type == "cpu" and (h, n, d) in CPU_SKIP:
            continue
        g = torch.Generator().manual_seed(0)
        z64 = torch.nn.functional.normalize(
            torch.randn(h, n, d, generator=g, dtype=torch.float64), dim=-1
        )
        eye = torch.eye(d, dtype=torch.float64)
        ref = float((0.5 * torch.logdet(eye + _alpha(n, d) * (z64.mT @ z64))).sum())
        z = z64.float().to(device).requires_grad_(True)
        row: dict = {"h": h, "n": n, "d": d}
        # Scale repeats down for the biggest problems on CPU.
        reps = (
            max(3, repeats // 4)
            if n * d * min(n, d) * h > 2e9 and device.type == "cpu"
            else repeats
        )
        per_round = [time_interleaved(METHODS, z, reps, warmup, stat) for _ in range(rounds)]
        for name, fn in METHODS.items():
            row[f"{name}_ms"] = statistics.median(r[name] for r in per_round)
            if name != "floor":
                row[f"{name}_relerr"] = rel_error(fn, z, ref)
        if rounds > 1:
            ratios = [r["naive"] / r["ours"] for r in per_round]
            row["naive_over_ours_rounds"] = ratios
            row["naive_over_ours_min"] = min(ratios)
            row["naive_over_ours_max"] = max(ratios)
        row["naive_over_ours"] = row["naive_ms"] / row["ours_ms"]
        row["best_ab_over_ours"] = min(row["naive_ms"], row["chol_dxd_ms"]) / row["ours_ms"]
        row["ours_over_floor"] = row["ours_ms"] / row["floor_ms"]
        rows.append(row)
        print(_format_row(row), flush=True)
    return {
        "benchmark": "bench_logdet",
        "date": _dt.date.today().isoformat(),
        "device": device_label or _device_name(device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "eps": EPS,
        "repeats": repeats,
        "rounds": rounds,
        "stat": stat,
        "note": note,
        "rows": rows,
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {_cpu_model()}, {torch.get_num_threads()} threads"


HEADER = (
    f"{'h':>3} {'n':>5} {'d':>5} | {'naive':>9} {'chol_dxd':>9} {'ours':>9} {'floor':>9} | "
    f"{'naive/ours':>10} {'best(a,b)/ours':>14} {'ours/floor':>10} | {'err naive':>9} {'err ours':>9}"
)


def _format_row(r: dict) -> str:
    return (
        f"{r['h']:>3} {r['n']:>5} {r['d']:>5} | {r['naive_ms']:>9.3f} {r['chol_dxd_ms']:>9.3f} "
        f"{r['ours_ms']:>9.3f} {r['floor_ms']:>9.3f} | {r['naive_over_ours']:>10.2f} "
        f"{r['best_ab_over_ours']:>14.2f} {r['ours_over_floor']:>10.2f} | "
        f"{r['naive_relerr']:>9.1e} {r['ours_relerr']:>9.1e}"
    )


def _rounds_note(result: dict) -> str:
    rounds = result.get("rounds", 1)
    note = f"{result['stat']} per round, " if result.get("stat", "median") != "median" else ""
    return f" (interleaved; {note}median of {rounds} rounds)" if rounds > 1 else ""


def to_markdown(result: dict) -> str:
    """Render a result dict as a Markdown table (times in ms)."""
    lines = [
        f"# bench_logdet — {result['device']}",
        "",
        f"date {result['date']}, torch {result['torch']}, python {result['python']}, "
        f"threads {result['threads']}, eps {result['eps']}, median of {result['repeats']} fwd+bwd"
        + _rounds_note(result),
        "",
        *([result["note"], ""] if result.get("note") else []),
        "| h | n | d | naive (a) ms | chol d×d (b) ms | ours (c) ms | floor (d) ms | a/c | "
        "min(a,b)/c | c/d | rel.err a | rel.err c |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['h']} | {r['n']} | {r['d']} | {r['naive_ms']:.3f} | {r['chol_dxd_ms']:.3f} | "
            f"{r['ours_ms']:.3f} | {r['floor_ms']:.3f} | {r['naive_over_ours']:.2f} | "
            f"{r['best_ab_over_ours']:.2f} | {r['ours_over_floor']:.2f} | "
            f"{r['naive_relerr']:.1e} | {r['ours_relerr']:.1e} |"
        )
    return "\n".join(lines) + "\n"


def to_rst(result: dict) -> str:
    """Render a result dict as a reST list-table (included by the docs' benchmarks page)."""
    cols = ["h", "n", "d", "naive (a) ms", "chol d×d (b) ms", "ours (c) ms", "floor (d) ms"]
    cols += ["a/c", "min(a,b)/c", "c/d", "rel.err a", "rel.err c"]
    lines = [
        f".. list-table:: {result['device']} — {result['date']}, torch {result['torch']}, "
        f"median of {result['repeats']} fwd+bwd{_rounds_note(result)}",
        "   :header-rows: 1",
        "",
        "   * - " + "\n     - ".join(cols),
    ]
    for r in result["rows"]:
        vals = [str(r["h"]), str(r["n"]), str(r["d"])]
        vals += [f"{r[k]:.3f}" for k in ("naive_ms", "chol_dxd_ms", "ours_ms", "floor_ms")]
        vals += [f"{r[k]:.2f}" for k in ("naive_over_ours", "best_ab_over_ours", "ours_over_floor")]
        vals += [f"{r['naive_relerr']:.1e}", f"{r['ours_relerr']:.1e}"]
        lines.append("   * - " + "\n     - ".join(vals))
    return "\n".join(lines) + "\n"


def _parse_shapes(text: str) -> list[tuple[int, int, int]]:
    shapes = []
    for item in text.split(","):
        parts = item.lower().split("x")
        if len(parts) != 3 or not all(p.strip().isdigit() for p in parts):
            raise argparse.ArgumentTypeError(f"shape {item!r} is not HxNxD, e.g. 64x256x32")
        h, n, d = (int(p) for p in parts)
        shapes.append((h, n, d))
    return shapes


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:i]")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="3 repeats, first three shapes only")
    p.add_argument("--json", type=Path, default=None, help="write results as JSON here")
    p.add_argument("--markdown", type=Path, default=None, help="write a Markdown table here")
    p.add_argument("--rst", type=Path, default=None, help="write a reST table here (docs)")
    p.add_argument(
        "--rounds", type=int, default=1, help="repeat each shape's measurement (median of rounds)"
    )
    p.add_argument(
        "--shapes",
        type=_parse_shapes,
        default=None,
        help="comma-separated HxNxD shapes instead of the built-in list, e.g. 64x256x32,8x512x64",
    )
    p.add_argument(
        "--device-label", default=None, help="device name to record (default: auto-detected)"
    )
    p.add_argument("--note", default="", help="free-text note recorded with the results")
    p.add_argument(
        "--stat",
        choices=("median", "min"),
        default="median",
        help="per-round statistic of the repeats (min: robust to load from other processes)",
    )
    args = p.parse_args(argv)
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
    if device.type == "cuda":
        # TF32 would degrade every Gram equally; keep the comparison in true fp32.
        torch.backends.cuda.matmul.allow_tf32 = False
    shapes = args.shapes or (SHAPES[:3] if args.quick else SHAPES)
    repeats = 3 if args.quick else args.repeats
    print(HEADER)
    result = run(
        device,
        repeats,
        1 if args.quick else args.warmup,
        shapes,
        rounds=max(1, args.rounds),
        device_label=args.device_label,
        stat=args.stat,
        note=args.note,
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(to_markdown(result))
    if args.rst:
        args.rst.parent.mkdir(parents=True, exist_ok=True)
        args.rst.write_text(to_rst(result))


if __name__ == "__main__":
    main()
