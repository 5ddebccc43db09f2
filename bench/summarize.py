"""Summarize bench/compare.sh runs: one Markdown table of medians, with each server's
ratio to sockit under the same load.

usage: python3 summarize.py RAW.tsv [MACHINE.txt]
RAW.tsv lines: rep, case, load, connections, json report path, cpu0 %, cpu1 %.
The headline metric is exchanges/s (Gbit/s for stream); latency columns are medians of
the per-run percentiles (from each run's HDR histogram); errors are summed over runs.
"""
import json
import statistics
import sys
from collections import OrderedDict

LOADS = {
    "hol": "hello, 10 clients + 1 idle connection",
    "hol0": "hello, the same 10 clients, no idle connection",
    "hello": "hello (connect, send, reply, close)",
    "echo": "echo 64 B",
    "udp": "udp request/reply, 32 outstanding",
    "stream": "stream 128 KiB writes",
}


def main():
    raw, machine = sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None
    cases = OrderedDict()
    with open(raw) as f:
        for line in f:
            rep, name, load, conns, path, cpu0, cpu1 = line.rstrip("\n").split("\t")
            try:
                with open(path) as j:
                    report = json.load(j)
            except (OSError, ValueError):
                continue
            cases.setdefault(name, {"load": load, "conns": conns, "runs": []})
            cases[name]["runs"].append((report, float(cpu0), float(cpu1)))

    def headline(report):
        if report["pattern"] == "stream":
            return report["gbit_per_s"]
        return report["exchanges_per_s"]

    medians = {name: statistics.median(headline(r) for r, _, _ in c["runs"])
               for name, c in cases.items() if c["runs"]}

    if machine:
        with open(machine) as f:
            for line in f:
                print(f"    {line.rstrip()}")
        print()
    print("| case | load | conns | metric | median | min | max | vs sockit "
          "| p50 µs | p99 µs | p99.9 µs | errors | loadgen CPU % | server CPU % |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, c in cases.items():
        runs = c["runs"]
        if not runs:
            continue
        values = [headline(r) for r, _, _ in runs]
        group = name.split("/")[0]
        base = medians.get(f"{group}/sockit")
        stream = runs[0][0]["pattern"] == "stream"
        fmt = (lambda v: f"{v:.2f}") if stream else (lambda v: f"{v:,.0f}")
        ratio = f"{medians[name] / base:.2f}×" if base else "-"

        def med(key):
            if stream:
                return "-"
            return f"{statistics.median(r['latency_us'][key] for r, _, _ in runs):,.0f}"

        errors = sum(r["errors"]["total"] for r, _, _ in runs)
        lost = sum((r.get("lost") or {}).get("lost", 0) for r, _, _ in runs)
        err_text = f"{errors:,}" + (f" ({lost:,} lost)" if lost else "")
        print(f"| {name} | {LOADS.get(c['load'], c['load'])} | {c['conns']} "
              f"| {'Gbit/s' if stream else 'exchanges/s'} | **{fmt(medians[name])}** "
              f"| {fmt(min(values))} | {fmt(max(values))} | {ratio} "
              f"| {med('p50')} | {med('p99')} | {med('p99_9')} | {err_text} "
              f"| {statistics.median(c0 for _, c0, _ in runs):.0f} "
              f"| {statistics.median(c1 for _, _, c1 in runs):.0f} |")


if __name__ == "__main__":
    main()
