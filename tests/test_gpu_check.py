"""benchmarks/gpu_check.sh is known to work before a GPU is used: ``--smoke`` runs its whole code path on the CPU
(tiny dimensions, real Multi30k) and must leave a JSON and a Markdown table in which every step is present, measured
or listed as skipped, fp16 is skipped (never faked) on the CPU, and every measured number is finite and positive.

Multi30k is prepared once into benchmarks/work/data (git-ignored; the same data cost.sh and run_grid.sh use).
"""
import glob
import json
import math
import os
import subprocess

import pytest

from helpers import ROOT, SHARED_DATA, VENV_BIN

SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
STEPS = ["train_throughput", "generate_throughput", "admin_profiling", "low_precision_stability", "multi30k_race"]
SCHEMES = ["postln", "preln", "admin", "b2t", "deepnorm"]


def _run(*args, timeout=600):
    env = dict(os.environ, PYTHON=str(VENV_BIN / "python"), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=timeout)


def _positive(row, *keys):
    for key in keys:
        value = row[key]
        assert isinstance(value, (int, float)) and math.isfinite(value) and value > 0, (key, value, row)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    if not (SHARED_DATA / "multi30k").is_dir() and not (ROOT / "benchmarks" / "work" / "data" / "data-bin").is_dir():
        pytest.skip("no Multi30k: ../shared/data/multi30k is absent")
    out = tmp_path_factory.mktemp("gpu_check")
    # the five schemes of 0.5.0: the 4-minute smoke budget cannot fit every registered scheme on two shared cores
    # (the real GPU check runs them all); the code path is the same for each
    res = _run("--smoke", "--schemes", ",".join(SCHEMES), "--out", str(out))
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    [json_path] = glob.glob(str(out / "gpu-check-smoke-*.json"))
    [md_path] = glob.glob(str(out / "gpu-check-smoke-*.md"))
    return json.load(open(json_path)), open(md_path).read()


def test_every_step_is_measured_or_skipped_and_fp16_is_not_faked(smoke):
    report, md = smoke
    assert report["smoke"] is True and report["device"]["type"] == "cpu" and report["device"]["torch"]
    assert report["finished_utc"] and report["setup"]["schemes"] == SCHEMES
    assert list(report["steps"]) == STEPS
    for name, step in report["steps"].items():
        assert step["status"] in ("measured", "partial", "skipped"), (name, step["status"])
        assert not step["failed"], (name, step["failed"])
        assert step["rows"], f"{name}: the smoke run measured nothing"
        for skipped in step["skipped"]:  # on the CPU only fp16 may be missing, and never for lack of time
            assert skipped["unit"].startswith("fp16 ") and "CPU" in skipped["reason"], (name, skipped)
        assert all(row.get("precision") != "fp16" for row in step["rows"]), name
    for name in STEPS[:4]:
        assert any(s["unit"].startswith("fp16 ") for s in report["steps"][name]["skipped"]), name
    for name in STEPS:
        assert f"| {name} |" in md
    assert "Skipped:" in md and "fp16 on the CPU" in md and "no GPU figures" in md


def test_throughput_rows_are_finite_and_positive(smoke):
    report, _ = smoke
    train = report["steps"]["train_throughput"]["rows"]
    # every scheme x both depths x both batch sizes, under bf16 and float32
    assert {(r["precision"], r["layers"], r["batch_max_tokens"], r["scheme"]) for r in train} == {
        (p, layers, tokens, s) for p in ("bf16", "fp32") for layers in ("1-1", "2-2") for tokens in (256, 1024)
        for s in SCHEMES}
    for r in train:
        _positive(r, "throughput_ratio_median", "throughput_ratio_min", "throughput_ratio_max",
                  "vanilla_tokens_per_s_median", "scheme_tokens_per_s_median", "batch_target_tokens")
        assert r["baseline"] == ("vanilla-preln" if r["scheme"] == "preln" else "vanilla")
        assert r["scheme_peak_mib"] is None  # GPU memory: not measured on the CPU
    generate = report["steps"]["generate_throughput"]["rows"]
    assert len(generate) == 2 * 2 * len(SCHEMES)
    for r in generate:
        _positive(r, "throughput_ratio_median", "vanilla_sentences_per_s_median", "scheme_sentences_per_s_median")


def test_profiling_stability_and_race_rows(smoke):
    report, _ = smoke
    [prof] = report["steps"]["admin_profiling"]["rows"]
    assert prof["precision"] == "bf16" and prof["weight_dtype"] == "torch.bfloat16"
    assert prof["profiled_at_first_batch"] is True
    assert prof["omega_dtypes"] == ["torch.float32"] and prof["omega_finite"] is True
    _positive(prof, "profile_over_train_step_median", "profile_over_train_step_min")
    stability = report["steps"]["low_precision_stability"]["rows"]
    assert [r["scheme"] for r in stability] == SCHEMES
    for r in stability:
        assert r["finite_losses"] is True and r["stopped"] is None and r["updates"] == 4
        _positive(r, "first_loss", "last_loss", "seconds_per_update")
    race = report["steps"]["multi30k_race"]
    assert [r["scheme"] for r in race["rows"]] == SCHEMES
    assert {r["updates"] for r in race["rows"]} == {race["setting"]["updates"]}  # the same updates each
    for r in race["rows"]:
        _positive(r, "valid_loss", "valid_nll_loss", "final_train_loss", "train_seconds")
        assert math.isfinite(r["bleu"]) and r["bleu"] >= 0 and r["sentences"] == 16
        assert "nrefs:1" in r["signature"]


def test_help_and_bad_budget():
    res = _run("--help", timeout=60)
    assert res.returncode == 0 and "--budget-min" in res.stdout and "cu128" in res.stdout
    res = _run("--budget-min", "0", timeout=120)
    assert res.returncode != 0
    assert res.stderr.strip().splitlines()[-1].endswith("--budget-min must be positive, got 0.0")
    assert "Traceback" not in res.stderr
