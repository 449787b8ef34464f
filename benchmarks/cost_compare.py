"""Before / after: did a change of the model code cost anything? Two result files of ``benchmarks/cost.sh`` (the code
before, the code after, each one run on the idle machine), compared scheme by scheme against the A/A control.

    python benchmarks/cost_compare.py BEFORE.json AFTER.json [--control AFTER_OR_OTHER.json]

For every (layers, scheme) in both files, training and generation: the throughput ratio scheme / vanilla before and
after (median [min, max] over the rounds). The A/A control is the ``vanilla`` row (a second vanilla model against
the first: the method's own noise) of the control file (default: AFTER, else BEFORE); its spread at the same depth
and measurement, s = max(1 − min, max − 1), is the tolerance. ``within`` is |after − before| <= s. A depth with no
control row prints ``—``. Prints markdown; exit status 0 whatever the verdicts (it reports, it does not gate).
"""
import argparse
import json
import sys

MEASUREMENTS = ("train", "generate")


def rows(result):
    """{(layers, scheme): row} of a cost.py result file."""
    return {(r["layers"], r["scheme"]): r for r in result["results"]}


def spread(row, what):
    m = row[what]
    return max(1 - m["throughput_ratio_min"], m["throughput_ratio_max"] - 1)


def fmt(row, what):
    m = row[what]
    return f"{m['throughput_ratio_median']:.3f} [{m['throughput_ratio_min']:.3f}, {m['throughput_ratio_max']:.3f}]"


def compare(before, after, control):
    b, a, c = rows(before), rows(after), rows(control)
    lines = ["| layers | scheme | measurement | before | after | after − before | A/A spread s | within s |",
             "|---|---|---|---|---|---|---|---|"]
    for key in sorted(set(b) & set(a), key=lambda k: (k[0], k[1])):
        layers, scheme = key
        if scheme == "vanilla":
            continue
        for what in MEASUREMENTS:
            delta = a[key][what]["throughput_ratio_median"] - b[key][what]["throughput_ratio_median"]
            aa = c.get((layers, "vanilla"))
            s = spread(aa, what) if aa else None
            verdict = "—" if s is None else ("yes" if abs(delta) <= s else "**no**")
            lines.append(f"| {layers} | {scheme} | {what} | {fmt(b[key], what)} | {fmt(a[key], what)} | "
                         f"{delta:+.3f} | {'—' if s is None else f'{s:.3f}'} | {verdict} |")
    for key in sorted(k for k in c if k[1] == "vanilla"):
        lines.append(f"| {key[0]} | vanilla (A/A control) | train / generate | | {fmt(c[key], 'train')} / "
                     f"{fmt(c[key], 'generate')} | | | |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("before", help="cost.py result JSON of the code before the change")
    p.add_argument("after", help="cost.py result JSON of the code after the change")
    p.add_argument("--control", help="the result JSON whose 'vanilla' rows are the A/A control (default: AFTER, "
                                     "else BEFORE if only it has them)")
    args = p.parse_args(argv)
    loaded = {}
    for name in ("before", "after", "control"):
        path = getattr(args, name)
        if path is None:
            continue
        try:
            with open(path, encoding="utf-8") as f:
                loaded[name] = json.load(f)
            rows(loaded[name])
        except (OSError, ValueError, KeyError, TypeError) as e:
            p.error(f"{name} {path}: not a cost.py result file ({e})")
    control = loaded.get("control")
    if control is None:
        has_aa = [loaded[n] for n in ("after", "before") if any(k[1] == "vanilla" for k in rows(loaded[n]))]
        control = has_aa[0] if has_aa else loaded["after"]
    for name in ("before", "after"):
        print(f"{name}: {loaded[name].get('code', {}).get('commit', '?')}, {loaded[name].get('started_utc', '?')}, "
              f"{loaded[name].get('uptime_start', '')}")
    print()
    print(compare(loaded["before"], loaded["after"], control))
    return 0


if __name__ == "__main__":
    sys.exit(main())
