"""benchmarks/cost_compare.py: a before/after pair of cost.sh results judged against the A/A control's spread."""
import json
import subprocess
import sys

from helpers import ROOT

SCRIPT = ROOT / "benchmarks" / "cost_compare.py"


def measurement(median, low, high):
    return {"throughput_ratio_median": median, "throughput_ratio_min": low, "throughput_ratio_max": high}


def result(commit, ratios):
    """A cost.py result file: ratios {(layers, scheme): (train (median, min, max), generate (...))}."""
    return {"code": {"commit": commit}, "started_utc": "t", "uptime_start": "",
            "results": [{"layers": layers, "scheme": scheme, "train": measurement(*train),
                         "generate": measurement(*generate)} for (layers, scheme), (train, generate) in ratios.items()]}


def run(tmp_path, before, after, *extra):
    for name, data in (("before", before), ("after", after)):
        (tmp_path / f"{name}.json").write_text(json.dumps(data))
    return subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "before.json"), str(tmp_path / "after.json"),
                           *extra], capture_output=True, text=True, timeout=60)


def verdicts(stdout):
    """{(layers, scheme, measurement): (delta, spread, verdict)} of the printed table."""
    out = {}
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 8 and cells[2] in ("train", "generate"):
            out[tuple(cells[:3])] = (cells[5], cells[6], cells[7])
    return out


def test_within_and_outside_the_control_spread(tmp_path):
    before = result("old", {("18-18", "admin"): ((0.97, 0.95, 0.99), (0.98, 0.96, 1.0))})
    after = result("new", {("18-18", "admin"): ((0.93, 0.90, 0.95), (0.99, 0.97, 1.01)),
                           ("18-18", "vanilla"): ((1.0, 0.97, 1.02), (1.0, 0.99, 1.05))})
    proc = run(tmp_path, before, after)
    assert proc.returncode == 0, proc.stderr
    got = verdicts(proc.stdout)
    # train: −0.04 against s = max(1 − 0.97, 1.02 − 1) = 0.03 → outside; generate: +0.01 against s = 0.05 → within
    assert got[("18-18", "admin", "train")] == ("-0.040", "0.030", "**no**")
    assert got[("18-18", "admin", "generate")] == ("+0.010", "0.050", "yes")
    assert "vanilla (A/A control)" in proc.stdout and "before: old" in proc.stdout


def test_no_control_at_a_depth_and_a_bad_file(tmp_path):
    before = result("old", {("6-6", "postln"): ((1.0, 0.99, 1.01), (1.0, 0.99, 1.01))})
    proc = run(tmp_path, before, before)
    assert verdicts(proc.stdout)[("6-6", "postln", "train")] == ("+0.000", "—", "—")
    (tmp_path / "bad.json").write_text("{}")
    bad = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "bad.json"), str(tmp_path / "before.json")],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "not a cost.py result file" in bad.stderr and "Traceback" not in bad.stderr
