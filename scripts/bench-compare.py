#!/usr/bin/env python3
"""Medians per variant of an alternated benchmark (`## VARIANT-ROUND` sections of
`scripts/bench.sh` output, as scripts/bench-observability.sh writes them): orders final/s at the
maximum, CPU per order at the maximum and at 25% (all processes, and the two services alone), and
each variant's CPU against the first one's.

    scripts/bench-compare.py docs/bench/observability-ab.txt
"""
import re
import statistics
import sys
from collections import OrderedDict

SECTION = re.compile(r"^## (\S+?)-\d+")
MAX = re.compile(r"^max closed loop: (\d+) orders final/s")
CPU = re.compile(r"^\s+CPU per order: (.*) = (\d+) µs per order")
QUARTER = re.compile(r"^open loop at 25%")


def parse(lines):
    runs = OrderedDict()
    current, where = None, None
    for line in lines:
        if m := SECTION.match(line):
            current = {}
            runs.setdefault(m.group(1), []).append(current)
            where = None
        elif current is None:
            continue
        elif m := MAX.match(line):
            current["max"] = int(m.group(1))
            where = "at max"
        elif QUARTER.match(line):
            where = "at 25%"
        elif (m := CPU.match(line)) and where:
            parts = dict(
                (name, int(value))
                for value, name in (p.split()[::-1] for p in m.group(1).split(", "))
            )
            services = parts.get("order_service", 0) + parts.get("processor_service", 0)
            current[where] = (int(m.group(2)), services)
            where = None
    return runs


def median(values):
    return statistics.median(values) if values else float("nan")


def main():
    with open(sys.argv[1], encoding="utf-8") as source:
        runs = parse(source)
    rows = []
    for variant, items in runs.items():
        row = {"variant": variant, "runs": len(items)}
        row["max"] = median([r["max"] for r in items if "max" in r])
        for key in ("at max", "at 25%"):
            row[key] = median([r[key][0] for r in items if key in r])
            row[key + " services"] = median([r[key][1] for r in items if key in r])
        rows.append(row)
    first = rows[0]
    print(f"{'variant':<10} {'runs':>4} {'final/s':>8} {'CPU µs/order at max':>26} {'at 25%':>22}")
    for row in rows:
        cells = []
        for key in ("at max", "at 25%"):
            change = 100 * (row[key] / first[key] - 1)
            cells.append(f"{row[key]:>6.0f} ({change:+5.1f}%) svc {row[key + ' services']:>4.0f}")
        print(f"{row['variant']:<10} {row['runs']:>4} {row['max']:>8.0f} {cells[0]:>26} {cells[1]:>22}")


if __name__ == "__main__":
    main()
