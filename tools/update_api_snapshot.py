"""Regenerate ``tests/api_snapshot.json``, the public API checked by ``tests/test_api_audit.py``.

Run from the repository root with the package installed (``pip install -e .``)::

    python tools/update_api_snapshot.py           # rewrite the snapshot
    python tools/update_api_snapshot.py --check   # exit 1 if the snapshot is out of date

Commit the new snapshot together with the API change, and describe removed or changed stable
names in the "Unreleased" section of ``docs/changelog.rst``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from api_surface import snapshot

__all__ = ["SNAPSHOT_PATH", "main", "render"]

SNAPSHOT_PATH = Path(__file__).resolve().parents[1] / "tests" / "api_snapshot.json"


def render() -> str:
    """The snapshot of the installed package as JSON text (sorted keys, trailing newline)."""
    return json.dumps(snapshot(), indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write (or with ``--check`` compare) the snapshot; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report whether it is current")
    parser.add_argument("--out", type=Path, default=SNAPSHOT_PATH, help="snapshot file")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.out.read_text(encoding="utf-8") if args.out.exists() else ""
        if current != text:
            print(f"{args.out} is out of date: run python tools/update_api_snapshot.py")
            return 1
        print(f"{args.out} is up to date")
        return 0
    args.out.write_text(text, encoding="utf-8")
    data = json.loads(text)["modules"]
    count = sum(len(m["names"]) for m in data.values())
    experimental = sorted(k for k, m in data.items() if m["experimental"])
    print(f"wrote {args.out}: {len(data)} modules, {count} names; experimental: {experimental}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
