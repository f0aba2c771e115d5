"""Cost of the anti-collapse regularisers: forward + backward time and peak memory vs ``(n, d)``.

Compares, in one run and on one device, on features ``z`` of shape ``(n, d)``:

* ``rate``     — :func:`jepa_blocks.coding_rate` (``eps=0.5``; the reference of the ratios);
* ``sigreg``   — :func:`jepa_blocks.sigreg.sigreg` (paper defaults: 256 slices, 17 knots);
* ``vicreg``   — :class:`jepa_blocks.vicreg.VICRegRegularizer` (variance + covariance);
* ``subspace`` — :func:`jepa_blocks.subspace.subspace_compression` (``K = d/16`` orthonormal
  subspaces of ``p = 16``).

Times are medians (``--stat min``: minima) of ``fn(z).backward()``, the methods **interleaved** (every repeat runs each
method once, in rotating order) so load from other processes hits all of them alike. Memory is
the peak of the tensors saved for backward (:func:`jepa_blocks.metrics.measure_peak_memory`),
plus the CUDA allocator's peak on CUDA. Usage::

    python benchmarks/bench_regularizers.py                      # default grid, stdout
    python benchmarks/bench_regularizers.py --quick              # fewer repeats
    python benchmarks/bench_regularizers.py --json out.json --markdown out.md
    python benchmarks/bench_regularizers.py --batch 256,1024 --dims 64,256
    python benchmarks/bench_regularizers.py --threads 1 --stat min   # a shared, loaded machine
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import platform
from collections.abc import Callable
from pathlib import Path

import torch

from bench_logdet import time_interleaved  # the same interleaved fwd+bwd timer
from jepa_blocks import coding_rate
from jepa_blocks.metrics import measure_peak_memory
from jepa_blocks.sigreg import sigreg
from jepa_blocks.subspace import subspace_compression
from jepa_blocks.vicreg import VICRegRegularizer

BATCHES = (256, 1024, 4096)
DIMS = (64, 256, 1024)
METHODS = ("rate", "sigreg", "vicreg", "subspace")
Fn = Callable[[torch.Tensor], torch.Tensor]


def methods(d: int, device: torch.device) -> dict[str, Fn]:
    """The measured regularisers for dimension ``d``."""
    g = torch.Generator().manual_seed(0)
    q = torch.linalg.qr(torch.randn(d, d, generator=g)).Q.to(device)
    bases = q.reshape(d, d // 16, 16).permute(1, 0, 2).contiguous()
    vicreg = VICRegRegularizer()
    return {
        "rate": lambda z: coding_rate(z, eps=0.5),
        "sigreg": lambda z: sigreg(z, step=0),
        "vicreg": vicreg,
        "subspace": lambda z: subspace_compression(z, bases),
    }


def run(device, batches, dims, repeats: int, warmup: int, stat: str, note: str = "") -> dict:
    rows = []
    small = torch.randn(64, 32, device=device, requires_grad=True)
    for fn in methods(32, device).values():  # first-call costs (kernels, allocator) out of the way
        fn(small).backward()
    for n in batches:
        for d in dims:
            g = torch.Generator().manual_seed(n + d)
            z = (torch.randn(n, d, generator=g) / d**0.5).to(device).requires_grad_(True)
            fns = methods(d, device)
            ms = time_interleaved(fns, z, repeats, warmup, stat)
            row: dict = {"n": n, "d": d}
            for name, fn in fns.items():
                mem = measure_peak_memory(lambda fn=fn, z=z: fn(z), exclude=[z], device=device)
                row[f"{name}_ms"] = ms[name]
                row[f"{name}_saved_mib"] = mem.saved_bytes / 2**20
                row[f"{name}_cuda_mib"] = None if mem.cuda_bytes is None else mem.cuda_bytes / 2**20
            for name in METHODS[1:]:
                row[f"{name}_over_rate"] = row[f"{name}_ms"] / row["rate_ms"]
                row[f"{name}_mem_over_rate"] = row[f"{name}_saved_mib"] / row["rate_saved_mib"]
            print(_format_row(row), flush=True)
            rows.append(row)
    return {
        "benchmark": "bench_regularizers",
        "date": _dt.date.today().isoformat(),
        "device": _device_name(device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "repeats": repeats,
        "stat": stat,
        "settings": "coding_rate eps 0.5; sigreg 256 slices, 17 knots on [-5, 5]; "
        "VICRegRegularizer(25, 1); subspace_compression K = d/16, p = 16",
        "note": note,
        "rows": rows,
    }


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            model = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"CPU {model}, {torch.get_num_threads()} threads"


def _format_row(r: dict) -> str:
    times = " ".join(f"{r[f'{m}_ms']:>9.2f}" for m in METHODS)
    mem = " ".join(f"{r[f'{m}_saved_mib']:>8.2f}" for m in METHODS)
    return f"{r['n']:>5} {r['d']:>5} | {times} | {mem}"


def to_markdown(result: dict) -> str:
    """Render a result dict as Markdown tables (times in ms, saved memory in MiB)."""
    lines = [
        f"# bench_regularizers — {result['device']}",
        "",
        f"date {result['date']}, torch {result['torch']}, python {result['python']}, "
        f"threads {result['threads']}, {result['stat']} of {result['repeats']} fwd+bwd (interleaved)",
        "",
        f"Settings: {result['settings']}.",
        "",
        *([result["note"], ""] if result.get("note") else []),
        "| n | d | rate ms | SIGReg ms | VICReg ms | subspace ms | SIGReg/rate | VICReg/rate | "
        "subspace/rate | rate MiB | SIGReg MiB | VICReg MiB | subspace MiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        ms = " | ".join(f"{r[f'{m}_ms']:.2f}" for m in METHODS)
        ratios = " | ".join(f"{r[f'{m}_over_rate']:.2f}" for m in METHODS[1:])
        mib = " | ".join(f"{r[f'{m}_saved_mib']:.2f}" for m in METHODS)
        lines.append(f"| {r['n']} | {r['d']} | {ms} | {ratios} | {mib} |")
    if any(r["rate_cuda_mib"] is not None for r in result["rows"]):
        lines += ["", "CUDA peak (MiB):", "", "| n | d | rate | SIGReg | VICReg | subspace |"]
        lines.append("|---|---|---|---|---|---|")
        for r in result["rows"]:
            lines.append(
                f"| {r['n']} | {r['d']} | "
                + " | ".join(f"{r[f'{m}_cuda_mib']:.1f}" for m in METHODS)
                + " |"
            )
    return "\n".join(lines) + "\n"


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:i]")
    p.add_argument("--batch", type=_ints, default=BATCHES, help="comma-separated n")
    p.add_argument("--dims", type=_ints, default=DIMS, help="comma-separated d (multiples of 16)")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="3 repeats, 1 warm-up")
    p.add_argument(
        "--stat", choices=("median", "min"), default="median", help="min: robust to load"
    )
    p.add_argument("--json", type=Path, default=None, help="write results as JSON here")
    p.add_argument("--markdown", "--md", type=Path, default=None, help="write Markdown here")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--note", default="", help="free-text note recorded with the results")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # true fp32 Grams, as bench_logdet
    print(f"{'n':>5} {'d':>5} | ms: " + " ".join(METHODS) + " | saved MiB: same order")
    repeats, warmup = (3, 1) if args.quick else (args.repeats, args.warmup)
    result = run(device, args.batch, args.dims, repeats, warmup, args.stat, note=args.note)
    for path, text in ((args.json, json.dumps(result, indent=2) + "\n"),
                       (args.markdown, to_markdown(result) if args.markdown else "")):  # fmt: skip
        if path:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)


if __name__ == "__main__":
    main()
