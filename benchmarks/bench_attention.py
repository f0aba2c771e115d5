"""Benchmark of token mixers: TSSA (ToST) vs SDPA softmax attention vs MSSA (CRATE).

Every method is a full attention layer ``(B, N, D) → (B, N, D)`` with its own projections:

``sdpa``        multi-head softmax attention: ``Linear(D, 3D)``, PyTorch
                ``scaled_dot_product_attention`` (flash / memory-efficient kernels on CUDA),
                ``Linear(D, D)``; the baseline every ratio is taken against;
``mssa``        CRATE's multi-head subspace self-attention (one shared ``Linear(D, D)`` as query,
                key and value, SDPA kernel): :class:`jepa_blocks.blocks.crate.MSSA` when present,
                else an equivalent local baseline;
``tssa``        :class:`jepa_blocks.blocks.tost.TSSA`, plain autograd (the reference);
``tssa_me``     TSSA with ``memory_efficient=True`` (hand-written backward, saves only ``w``);
``tssa_causal`` :class:`jepa_blocks.blocks.tost.CausalTSSA` over the whole sequence;
``tssa_compile`` ``torch.compile(TSSA)`` (``--compile``; on by default on CUDA): inductor fuses
                the elementwise chain.

The number of tokens per step is fixed (``--tokens-per-step``), so ``B = budget // N``: a method
linear in ``N`` has a flat time, softmax attention grows like ``N``. Reported per ``N``: median
forward+backward time (ms), memory, and the ratios ``sdpa_ms / method_ms`` (speed-up) and
``method_mem / sdpa_mem``, all measured in the same run. Memory is the CUDA peak allocated during
forward+backward above the pre-call level (``cuda_peak_mb``) on CUDA, and everywhere the bytes of
activations saved for backward (``saved_mb``, from ``torch.autograd.graph.saved_tensors_hooks``,
parameters excluded), the part of the peak that grows with depth.

The step-3 arms (CRATE aggregator and predictor inside seq-JEPA) are measured by
``benchmarks/bench_crate_arms.py``; the streaming ToST aggregator of step 4 by
``benchmarks/bench_streaming_aggregator.py``.

Usage::

    python benchmarks/bench_attention.py                      # device auto, table on stdout
    python benchmarks/bench_attention.py --quick              # CPU smoke: N ≤ 4096
    python benchmarks/bench_attention.py --json out.json --markdown out.md
    python benchmarks/bench_attention.py --device cuda        # H200: D 384, 8 heads, bf16,
                                                              # N 256 … 65,536, 65,536 tokens/step
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

import jepa_blocks
from jepa_blocks.blocks.tost import TSSA, CausalTSSA

__all__ = [
    "SDPAAttention",
    "main",
    "make_methods",
    "memory",
    "run",
    "time_interleaved",
]

CUDA_NS = [256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536]
CPU_NS = [256, 1024, 4096, 8192]
QUICK_NS = [256, 1024, 4096]


class SDPAAttention(nn.Module):
    """Multi-head softmax attention through ``F.scaled_dot_product_attention`` (the baseline)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = rearrange(self.qkv(x), "b n (t h p) -> t b h n p", t=3, h=self.heads)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(rearrange(out, "b h n p -> b n (h p)"))


class _LocalMSSA(nn.Module):
    """MSSA baseline (CRATE): one shared projection as query, key and value."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim, bias=False)
        self.to_out = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        w = rearrange(self.qkv(x), "b n (h p) -> b h n p", h=self.heads)
        out = F.scaled_dot_product_attention(w, w, w)
        return self.to_out(rearrange(out, "b h n p -> b n (h p)"))


def _mssa(dim: int, heads: int) -> tuple[nn.Module, str]:
    try:
        from jepa_blocks.blocks.crate import MSSA
    except ImportError:
        return _LocalMSSA(dim, heads), "local baseline"
    return MSSA(dim, heads=heads), "jepa_blocks.blocks.crate.MSSA"


def make_methods(
    dim: int,
    heads: int,
    *,
    compile_tssa: bool,
    causal: bool,
    only: Sequence[str] | None = None,
) -> tuple[dict[str, nn.Module], dict[str, str]]:
    """The modules to compare (all float32 parameters) and notes on where they come from.

    ``only`` keeps a subset of the methods (``sdpa``, the baseline of every ratio, is always kept).
    """
    mssa, mssa_src = _mssa(dim, heads)
    methods: dict[str, nn.Module] = {
        "sdpa": SDPAAttention(dim, heads),
        "mssa": mssa,
        "tssa": TSSA(dim, heads=heads),
        "tssa_me": TSSA(dim, heads=heads, memory_efficient=True),
    }
    if causal:
        methods["tssa_causal"] = CausalTSSA(dim, heads=heads)
    notes = {"mssa": mssa_src}
    if compile_tssa:
        methods["tssa_compile"] = torch.compile(TSSA(dim, heads=heads), dynamic=True)
        notes["tssa_compile"] = "torch.compile(TSSA, dynamic=True), inductor"
    if only is not None:
        unknown = sorted(set(only) - set(methods))
        if unknown:
            raise ValueError(f"unknown methods {unknown}; available: {sorted(methods)}")
        methods = {k: v for k, v in methods.items() if k == "sdpa" or k in only}
        notes = {k: v for k, v in notes.items() if k in methods}
    return methods, notes


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _autocast(device: torch.device, dtype: torch.dtype):
    return torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)


def saved_bytes(fn: Callable[[], Tensor], exclude: set[int]) -> int:
    """Bytes of distinct tensors saved for backward by ``fn()`` (storages in ``exclude`` skipped)."""
    seen: dict[int, int] = {}
    alive: list[Tensor] = []  # keep every saved tensor alive so no address is reused

    def pack(t: Tensor) -> Tensor:
        alive.append(t)
        if t.device.type != "meta":
            ptr = t.untyped_storage().data_ptr()
            if ptr not in exclude:
                seen[ptr] = max(seen.get(ptr, 0), t.untyped_storage().nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    del out
    alive.clear()
    return sum(seen.values())


def _fwd_bwd(module: nn.Module, x: Tensor, grad: Tensor, dtype: torch.dtype) -> None:
    x.grad = None
    module.zero_grad(set_to_none=True)
    with _autocast(x.device, dtype):
        out = module(x)
    out.backward(grad.to(out.dtype))


def time_interleaved(
    methods: dict[str, nn.Module],
    x: Tensor,
    grad: Tensor,
    dtype: torch.dtype,
    repeats: int,
    warmup: int,
) -> dict[str, float | None]:
    """Median fwd+bwd ms per method, the methods interleaved in every repeat (so a noisy,
    shared machine slows them alike). A method that runs out of memory gets ``None``."""
    device = x.device
    times: dict[str, list[float]] = {name: [] for name in methods}
    failed: set[str] = set()
    for i in range(warmup + repeats):
        for name, module in methods.items():
            if name in failed:
                continue
            try:
                _sync(device)
                t0 = time.perf_counter()
                _fwd_bwd(module, x, grad, dtype)
                _sync(device)
            except torch.OutOfMemoryError:
                failed.add(name)
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                continue
            if i >= warmup:
                times[name].append((time.perf_counter() - t0) * 1e3)
    return {n: (statistics.median(t) if n not in failed else None) for n, t in times.items()}


def memory(module: nn.Module, x: Tensor, grad: Tensor, dtype: torch.dtype) -> dict:
    """CUDA peak MB above the pre-call level (CUDA only) and saved-activation MB."""
    device = x.device
    peak = None
    try:
        if device.type == "cuda":
            x.grad = None
            module.zero_grad(set_to_none=True)
            torch.cuda.synchronize(device)
            base = torch.cuda.memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)
            _fwd_bwd(module, x, grad, dtype)
            torch.cuda.synchronize(device)
            peak = (torch.cuda.max_memory_allocated(device) - base) / 2**20
        params = {p.untyped_storage().data_ptr() for p in module.parameters()}

        def fwd() -> Tensor:
            with _autocast(device, dtype):
                return module(x)

        saved: float | None = saved_bytes(fwd, params) / 2**20
    except torch.OutOfMemoryError:
        if device.type == "cuda":
            torch.cuda.empty_cache()
        peak, saved = None, None
    return {"cuda_peak_mb": peak, "saved_mb": saved}


def run(
    device: torch.device,
    *,
    dim: int,
    heads: int,
    ns: list[int],
    budget: int,
    dtype: torch.dtype,
    repeats: int,
    warmup: int,
    compile_tssa: bool,
    causal: bool,
    only: Sequence[str] | None = None,
) -> dict:
    """Time every method at every ``N``; return a JSON-ready dict."""
    torch.manual_seed(0)
    load_start = _loadavg()
    methods, notes = make_methods(dim, heads, compile_tssa=compile_tssa, causal=causal, only=only)
    for m in methods.values():
        m.to(device)
    rows = []
    for n in ns:
        b = max(1, budget // n)
        x = torch.randn(b, n, dim, device=device).requires_grad_(True)
        grad = torch.randn(b, n, dim, device=device, dtype=dtype)
        row: dict = {"n": n, "batch": b}
        for name, ms in time_interleaved(methods, x, grad, dtype, repeats, warmup).items():
            row[f"{name}_ms"] = ms
        for name, module in methods.items():
            for key, val in memory(module, x, grad, dtype).items():
                row[f"{name}_{key}"] = val
        mem_key = "cuda_peak_mb" if device.type == "cuda" else "saved_mb"
        for name in methods:
            if name == "sdpa":
                continue
            t, t_ref = row[f"{name}_ms"], row["sdpa_ms"]
            m, m_ref = row[f"{name}_{mem_key}"], row[f"sdpa_{mem_key}"]
            row[f"{name}_speedup"] = t_ref / t if t and t_ref else None
            row[f"{name}_mem_ratio"] = m / m_ref if m and m_ref else None
        rows.append(row)
        print(_format_row(row, list(methods), mem_key), flush=True)
    return {
        "benchmark": "bench_attention",
        "date": _dt.date.today().isoformat(),
        "device": _device_name(device),
        "torch": torch.__version__,
        "jepa_blocks": jepa_blocks.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "loadavg_1min_start_end": [load_start, _loadavg()],
        "dim": dim,
        "heads": heads,
        "dtype": str(dtype).replace("torch.", ""),
        "tokens_per_step": budget,
        "repeats": repeats,
        "memory_metric": mem_key,
        "methods": list(methods),
        "notes": notes,
        "targets": _targets(rows, list(methods), mem_key),
        "rows": rows,
    }


def _targets(rows: list[dict], methods: list[str], mem_key: str) -> dict:
    """Issue 6 targets for the best TSSA variant: ≤1.0× SDPA time at N=1024, ≥10× faster at
    N=65,536, memory ≤ SDPA's (meaningful on the GPU; recorded on any device)."""
    tssa = [m for m in methods if m.startswith("tssa") and m != "tssa_causal"]
    by_n = {r["n"]: r for r in rows}
    out: dict = {}
    for n, key, goal in ((1024, "speedup", 1.0), (65536, "speedup", 10.0)):
        if n in by_n:
            vals = [by_n[n][f"{m}_{key}"] for m in tssa if by_n[n][f"{m}_{key}"] is not None]
            best = max(vals) if vals else None
            out[f"speedup_at_{n}"] = best
            out[f"speedup_at_{n}_meets_{goal}x"] = best is not None and best >= goal
    worst_mem = []
    for r in rows:
        vals = [r[f"{m}_mem_ratio"] for m in tssa if r[f"{m}_mem_ratio"] is not None]
        if vals:
            worst_mem.append(min(vals))
    out[f"max_over_n_of_best_tssa_{mem_key}_ratio"] = max(worst_mem) if worst_mem else None
    return out


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


def _fmt(v: float | None, spec: str) -> str:
    return "—" if v is None else format(v, spec)


def _format_row(r: dict, methods: list[str], mem_key: str) -> str:
    parts = [f"N={r['n']:>6} B={r['batch']:>4}"]
    for m in methods:
        s = f"{m} {_fmt(r[f'{m}_ms'], '.2f')} ms {_fmt(r[f'{m}_{mem_key}'], '.1f')} MB"
        if m != "sdpa":
            s += f" ({_fmt(r[f'{m}_speedup'], '.2f')}x, mem {_fmt(r[f'{m}_mem_ratio'], '.2f')})"
        parts.append(s)
    return " | ".join(parts)


def to_markdown(result: dict) -> str:
    """Render a result dict as Markdown tables (time, memory, ratios against SDPA)."""
    methods = result["methods"]
    mem_key = result["memory_metric"]
    lines = [
        f"# bench_attention — {result['device']}",
        "",
        f"date {result['date']}, torch {result['torch']}, jepa-blocks {result['jepa_blocks']}, "
        f"python {result['python']}, threads {result['threads']} (1-min load average "
        f"{result['loadavg_1min_start_end'][0]} → {result['loadavg_1min_start_end'][1]}); "
        f"D {result['dim']}, "
        f"{result['heads']} heads, {result['dtype']}, {result['tokens_per_step']} tokens per step "
        f"(B = budget // N), median of {result['repeats']} forward+backward.",
        "",
        f"Memory: `{mem_key}` "
        + (
            "(CUDA peak above the pre-call level)."
            if mem_key == "cuda_peak_mb"
            else "(activations saved for backward, parameters excluded)."
        ),
        "",
        "| N | B | "
        + " | ".join(f"{m} ms" for m in methods)
        + " | "
        + " | ".join(f"{m} MB" for m in methods)
        + " |",
        "|" + "---|" * (2 + 2 * len(methods)),
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['n']} | {r['batch']} | "
            + " | ".join(_fmt(r[f"{m}_ms"], ".2f") for m in methods)
            + " | "
            + " | ".join(_fmt(r[f"{m}_{mem_key}"], ".1f") for m in methods)
            + " |"
        )
    others = [m for m in methods if m != "sdpa"]
    lines += [
        "",
        "Ratios against SDPA, same run (speed-up = SDPA time / method time; memory = method / "
        "SDPA):",
        "",
        "| N | "
        + " | ".join(f"{m} speed-up" for m in others)
        + " | "
        + " | ".join(f"{m} mem" for m in others)
        + " |",
        "|" + "---|" * (1 + 2 * len(others)),
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['n']} | "
            + " | ".join(_fmt(r[f"{m}_speedup"], ".2f") for m in others)
            + " | "
            + " | ".join(_fmt(r[f"{m}_mem_ratio"], ".2f") for m in others)
            + " |"
        )
    if result["notes"]:
        lines += ["", "Notes: " + "; ".join(f"{k}: {v}" for k, v in result["notes"].items())]
    lines += ["", "Targets (issue 6, meant for the GPU): " + json.dumps(result["targets"])]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:i]")
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--ns", default=None, help="comma-separated N (default by device)")
    p.add_argument("--tokens-per-step", type=int, default=None, help="default: the largest N")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"])
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="N 256, 1024, 4096; 3 repeats")
    p.add_argument("--compile", dest="compile_tssa", action="store_true", default=None)
    p.add_argument("--no-compile", dest="compile_tssa", action="store_false")
    p.add_argument("--no-causal", dest="causal", action="store_false", default=True)
    p.add_argument("--json", type=Path, default=None, help="write results as JSON here")
    p.add_argument("--markdown", type=Path, default=None, help="write a Markdown table here")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: as is)")
    p.add_argument(
        "--methods", default=None, help="comma-separated subset of the methods (sdpa always runs)"
    )
    args = p.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
    cuda = device.type == "cuda"
    if args.ns:
        ns = [int(v) for v in args.ns.split(",")]
    else:
        ns = QUICK_NS if args.quick else (CUDA_NS if cuda else CPU_NS)
    budget = args.tokens_per_step or max(ns)
    if args.dtype == "auto":
        dtype = torch.bfloat16 if cuda else torch.float32
    else:
        dtype = getattr(torch, args.dtype)
    repeats = args.repeats or (3 if args.quick else (20 if cuda else 5))
    compile_tssa = cuda if args.compile_tssa is None else args.compile_tssa
    result = run(
        device,
        dim=args.dim,
        heads=args.heads,
        ns=ns,
        budget=budget,
        dtype=dtype,
        repeats=repeats,
        warmup=1 if args.quick else args.warmup,
        compile_tssa=compile_tssa,
        causal=args.causal,
        only=None if args.methods is None else [m.strip() for m in args.methods.split(",")],
    )
    _write(args.json, json.dumps(result, indent=2) + "\n")
    _write(args.markdown, to_markdown(result))


def _write(path: Path | None, text: str) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
