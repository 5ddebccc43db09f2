#!/usr/bin/env python3
"""Summarises bench/pairs.sh: per case and metric, the ratio sockit / C within each pair.

Input: raw.tsv lines of `pair<TAB>case<TAB>server<TAB>key=value ...` (the load generator's
output plus srv_busy). A pair counts only when both of its runs reported a rate.
Output: a Markdown table; for every ratio, its median over the pairs, min, max, and how
many pairs came out at or above 1.0 (for a rate: sockit as fast or faster; for latency and
CPU per operation: sockit as slow or slower, so fewer is better there).
"""

import statistics
import sys

from raw_runs import lines, srv_us_per_op


def load(path):
    """{case: {pair: {server: fields}}}."""
    runs = {}
    for pair, case, server, run in lines(path):
        runs.setdefault(case, {}).setdefault(pair, {})[server] = run
    return runs


METRICS = [
    ("msg/s or conn/s", lambda r: r.get("rate")),
    ("p50 latency", lambda r: r.get("p50_us")),
    ("p99 latency", lambda r: r.get("p99_us")),
    ("server CPU per op", srv_us_per_op),
]


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: pairs_summary.py raw.tsv")
    runs = load(sys.argv[1])
    print("| case | metric | sockit / C, median of pairs | min | max | pairs ≥ 1.0 | pairs |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for case, pairs in runs.items():
        for label, metric in METRICS:
            ratios = []
            for runs_of_pair in pairs.values():
                c, sockit = runs_of_pair.get("c"), runs_of_pair.get("sockit")
                if not c or not sockit:
                    continue
                a, b = metric(c), metric(sockit)
                if a and b:
                    ratios.append(b / a)
            if not ratios:
                continue
            at_least_one = sum(1 for r in ratios if r >= 1.0)
            print(
                f"| {case} | {label} | **{statistics.median(ratios):.3f}** | "
                f"{min(ratios):.3f} | {max(ratios):.3f} | {at_least_one} | {len(ratios)} |"
            )
    for case, pairs in runs.items():
        for pair, runs_of_pair in sorted(pairs.items()):
            for server, run in sorted(runs_of_pair.items()):
                failed = {k: run.get(k, 0) for k in ("errors", "bad", "timeouts", "stalled")}
                if any(failed.values()):
                    shown = " ".join(f"{k}={v:.0f}" for k, v in failed.items() if v)
                    print(f"WARNING: {case} pair {pair}, {server}: {shown}")


if __name__ == "__main__":
    main()
