"""Reading the raw.tsv files the bench scripts write (imported, not run).

Each line is `rep<TAB>case<TAB>server<TAB>key=value ...`: the load's figures plus
srv_busy, the server (or relay) core's busy share over the run.
"""


def fields(text):
    """The key=value pairs of a line, numeric values as floats."""
    out = {}
    for token in text.split():
        key, _, value = token.partition("=")
        try:
            out[key] = float(value)
        except ValueError:
            continue
    return out


def lines(path):
    """(rep, case, server, fields) for every well-formed line of a raw.tsv file."""
    with open(path, encoding="utf-8") as raw:
        for line in raw:
            parts = line.rstrip("\n").split("\t")
            if len(parts) == 4:
                rep, case, server, rest = parts
                yield rep, case, server, fields(rest)


def srv_us_per_op(run):
    """Server-core busy time per operation, in microseconds (None without a rate)."""
    rate, busy = run.get("rate"), run.get("srv_busy")
    if not rate or busy is None:
        return None
    return busy * 1e6 / rate
