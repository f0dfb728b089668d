"""Print what `bench/gcwatch/sitecustomize.py` recorded: `python -m bench.gcwatch DIR`."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main() -> None:
    for path in sorted(Path(sys.argv[1]).glob("*.json")):
        record = json.loads(path.read_text())
        if not record["by_generation"]:
            continue
        print(f"{path.stem}: {record['argv']}")
        for generation, figures in record["by_generation"].items():
            print(
                f"  generation {generation}: {figures['n']} collections, longest "
                f"{figures['max_ms']} ms, {figures['sum_ms']} ms in all"
            )
        for full in record["full"]:
            print(
                f"    full collection at {full['at_s']} s: {full['ms']} ms, walked "
                f"{full['walked']:,} objects ({full['frozen']:,} frozen)"
            )


if __name__ == "__main__":
    main()
