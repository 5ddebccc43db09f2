#!/usr/bin/env python3
"""Summarises bench/anchors.sh: per case and relay, the median rate and relay CPU per op.

Input: raw.tsv lines of `rep<TAB>case<TAB>relay<TAB>key=value ...` (the load's figures plus
srv_busy, the relay core's busy share over the run). Output: a Markdown table with, per case
and relay, the median operations per second, the median relay µs per operation, their
ranges, and the ratio of the relay's CPU per operation to the anchor's (the first of the
ANCHOR arguments with a row in that case; default HAProxy, then nginx): below 1.0 the relay
spends less CPU per operation than the anchor. For the TLS cases, the median share of
handshakes that resumed a session (from `sockit bench`'s report) is given too.
"""

import statistics
import sys

from raw_runs import lines, srv_us_per_op



def load(path):
    """{case: {relay: [fields, ...]}} in file order."""
    runs = {}
    for _rep, case, relay, run in lines(path):
        runs.setdefault(case, {}).setdefault(relay, []).append(run)
    return runs


def median_and_range(values):
    values = [v for v in values if v is not None]
    if not values:
        return None, None, None
    return statistics.median(values), min(values), max(values)


def anchor_of(relays, preference):
    for name in preference:
        if name in relays:
            return name
    return None


def main():
    if len(sys.argv) < 2:
        sys.exit("usage: anchors_summary.py raw.tsv [ANCHOR ...]")
    runs = load(sys.argv[1])
    preference = sys.argv[2:] or ["haproxy", "nginx"]
    print("| case | relay | ops/s (median) | relay µs/op (median) | µs/op range | µs/op ÷ anchor's | resumed | runs |")
    print("|---|---|---|---|---|---|---|---|")
    for case, relays in runs.items():
        anchor = anchor_of(relays, preference)
        anchor_cost = None
        if anchor:
            anchor_cost = median_and_range([srv_us_per_op(r) for r in relays[anchor]])[0]
        for relay, results in relays.items():
            rate = median_and_range([r.get("rate") for r in results])[0]
            cost, low, high = median_and_range([srv_us_per_op(r) for r in results])
            ratio = f"{cost / anchor_cost:.2f}" if cost and anchor_cost else "–"
            rate_text = f"{rate:,.0f}" if rate else "failed"
            cost_text = f"{cost:.1f}" if cost else "–"
            range_text = f"{low:.1f}–{high:.1f}" if cost else "–"
            resumed = median_and_range([r.get("resumed") for r in results])[0]
            resumed_text = f"{resumed:.0f} %" if resumed is not None else "–"
            print(f"| {case} | {relay} | {rate_text} | {cost_text} | {range_text} | {ratio} | {resumed_text} | {len(results)} |")


if __name__ == "__main__":
    main()
