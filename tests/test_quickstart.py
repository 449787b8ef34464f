"""The quick start as a user sees it: progress lines with the time left, then examples, BLEU and a PNG of the curves
(fairseq_admin/cli/quickstart.py, scripts/quickstart.sh), and the search that chose its configuration."""
import json
import os
import subprocess
import sys

import pytest

from helpers import ROOT, SHARED_DATA

from fairseq_admin.cli import quickstart as qs

sys.path.insert(0, str(ROOT / "benchmarks"))
import quickstart_search  # noqa: E402

INNER = ("2026-12-01 11:11:00 | INFO | train_inner | epoch 001:     25 / 153 loss=12.51, nll_loss={nll}, ppl=5337.03, "
         "wps=1208.5, ups=0.4, wpb=3022.5, bsz=209.9, num_updates={u}, lr=0.000125087, gnorm=2.253, train_wall=64, "
         "wall={w}")
VALID = ("2026-12-01 11:14:21 | INFO | valid | epoch 001 | valid on 'valid' subset | loss 9.046 | nll_loss {nll} | "
         "ppl 348.72 | wps 3913.7 | wpb 2035.2 | bsz 126 | num_updates {u}")


def test_progress_line_has_the_rate_and_the_time_left():
    p = qs.Progress(max_update=1000)
    first = p.line(INNER.format(nll=9, u=100, w=200))  # the run's average: 0.5 updates/s, 900 left -> 30 min
    assert first == "[quickstart] update 100/1000 (10%) | 0.50 updates/s | 3 min elapsed | about 30 min left"
    later = p.line(INNER.format(nll=9, u=200, w=300))  # since this process's first line: 1 update/s
    assert later == "[quickstart] update 200/1000 (20%) | 1.00 updates/s | 5 min elapsed | about 13 min left"
    assert p.line("2026-12-01 | INFO | fairseq_cli.train | done training") is None


def test_progress_time_left_respects_the_time_budget():
    p = qs.Progress(max_update=100000, stop_minutes=30)
    p.line(INNER.format(nll=9, u=100, w=600))
    assert p.line(INNER.format(nll=9, u=200, w=1200)).endswith("about 10 min left")  # 1800 - 1200 s
    only_time = qs.Progress(max_update=0, stop_minutes=30)
    assert only_time.line(INNER.format(nll=9, u=100, w=600)) == \
        "[quickstart] update 100 | 0.17 updates/s | 10 min elapsed | about 20 min left"


def test_progress_filter_passes_every_line_through():
    text = "\n".join(["a line", INNER.format(nll=9, u=10, w=20), "last"]) + "\n"
    proc = subprocess.run([sys.executable, "-m", "fairseq_admin.cli.quickstart", "progress", "--max-update", "20"],
                          input=text, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.split("\n")
    assert out[:2] == ["a line", INNER.format(nll=9, u=10, w=20)]
    assert out[2].startswith("[quickstart] update 10/20 (50%)") and out[3] == "last"


def test_curves_keep_the_last_value_of_a_repeated_update(tmp_path):
    log = tmp_path / "train.log"
    log.write_text("\n".join([INNER.format(nll=9.5, u=25, w=60), VALID.format(nll=8.25, u=100),
                              INNER.format(nll=9.0, u=25, w=61), VALID.format(nll=7.5, u=200)]) + "\n")
    assert qs.read_curves(log) == ([(25, 9.0)], [(100, 8.25), (200, 7.5)])


def test_examples_spread_over_the_test_set():
    assert qs.example_indices(1000) == [0, 250, 500, 749, 999]
    assert qs.example_indices(3) == [0, 1, 2]


def _report(tmp_path, hyp_lines, src_lines=3, **result):
    (tmp_path / "src").write_text("".join(f"s{i}\n" for i in range(src_lines)))
    (tmp_path / "ref").write_text("r0\nr1\nr2\n")
    (tmp_path / "hyp").write_text("".join(f"h{i}\n" for i in range(hyp_lines)))
    (tmp_path / "log").write_text(INNER.format(nll=9, u=25, w=60) + "\n" + VALID.format(nll=8, u=100) + "\n")
    (tmp_path / "r.json").write_text(json.dumps({
        "hypotheses_file": str(tmp_path / "hyp"), "sacrebleu": 12.345, "tokenized_bleu": 13.0,
        "sacrebleu_signature": "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0",
        "sacrebleu_text": "BLEU = 12.35 ...", **result}))
    return subprocess.run([sys.executable, "-m", "fairseq_admin.cli.quickstart", "report", "--run",
                           f"admin 2-2={tmp_path / 'log'}={tmp_path / 'r.json'}", "--source", tmp_path / "src",
                           "--reference", tmp_path / "ref", "--png", tmp_path / "c.png"],
                          capture_output=True, text=True, timeout=120)


def test_report_prints_examples_and_bleu_with_its_signature(tmp_path):
    pytest.importorskip("matplotlib", reason="the [plots] extra is not installed")
    proc = _report(tmp_path, hyp_lines=3)
    assert proc.returncode == 0, proc.stderr
    assert "source:     s1" in proc.stdout and "reference:  r1" in proc.stdout and "admin 2-2:  h1" in proc.stdout
    assert "sacreBLEU 12.35 (nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0)" in proc.stdout
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_prints_the_validation_grid_and_its_choice(tmp_path):
    pytest.importorskip("matplotlib", reason="the [plots] extra is not installed")
    cells = [{"checkpoints": c, "lenpen": a, "sacrebleu": b, "length_ratio": r, "sacrebleu_text": ""}
             for c, a, b, r in (("best", 0.6, 21.53, 0.93), ("best", 1.0, 21.91, 0.99), ("best", 1.5, 19.73, 1.2))]
    chosen = {"subset": "valid", "sentences": 1014, "beam": 4, "grid": cells, "choice": cells[1]}
    proc = _report(tmp_path, hyp_lines=3, chosen_on_valid=chosen)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.splitlines()
    first = out.index("admin 2-2: validation grid (valid, 1014 sentences, beam 4; best: checkpoint_best.pt, avgN: the "
                      "last N checkpoints averaged):")
    assert [line.split() for line in out[first + 2:first + 5]] == [["best", "0.6", "21.53", "0.930"],
                                                                  ["best", "1.0", "21.91", "0.990", "<-", "chosen"],
                                                                  ["best", "1.5", "19.73", "1.200"]]
    assert out[first + 5].startswith("admin 2-2: chosen on valid: best, lenpen 1.0; the test set translated once")
    assert out[first + 6].startswith("admin 2-2: sacreBLEU 12.35")


@pytest.mark.parametrize("hyp_lines, src_lines, needle", [(2, 3, "hyp has 2 lines"), (3, 4, "src has 4 lines")])
def test_report_refuses_translations_that_do_not_line_up(tmp_path, hyp_lines, src_lines, needle):
    proc = _report(tmp_path, hyp_lines, src_lines)
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and needle in errors[0] and "Traceback" not in proc.stderr
    assert not (tmp_path / "c.png").exists()


@pytest.mark.parametrize("argv, needle", [
    (["--scheme", "nope"], "--scheme must be admin, b2t, deepnorm, preln or postln"),
    (["--lr", "fast"], "--lr must be a positive number"),
    (["--lr", "0"], "--lr must be a positive number"),  # issue 27: accepted, then no training at all
    (["--lr", "1.2.3"], "--lr must be a positive number"),  # issue 27: passed the number check
    (["--lr", "0.0e-3"], "--lr must be a positive number"),
    (["--generate-args", "--max-len-b 20 --lenpen 0.6"], "--generate-args --lenpen: the evaluation chooses"),
    (["--max-tokens", "0"], "--max-tokens and --threads must be at least 1"),
    (["--stop-minutes", "half"], "--stop-minutes must be a number of minutes"),
    (["--stop-minutes", "0"], "--max-update 0 and --stop-minutes 0: give at least one limit"),
    (["--scheme", "postln", "--compare-postln"], "--compare-postln compares another scheme with Post-LN"),
    (["--data", "/"], "has no data-bin/dict.en.txt"),
])
def test_quickstart_refuses_bad_options_before_any_work(tmp_path, argv, needle):
    proc = subprocess.run(["bash", ROOT / "scripts" / "quickstart.sh", "--out", tmp_path / "qs", *argv],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and needle in proc.stderr, proc.stderr
    assert not (tmp_path / "qs").exists() or not any((tmp_path / "qs").iterdir())


def test_quickstart_refuses_data_without_what_the_evaluation_reads(tmp_path):
    data = tmp_path / "data"
    (data / "data-bin").mkdir(parents=True)
    for name in ("data-bin/dict.en.txt", "spm.model", "test.raw.de"):
        (data / name).write_text("")
    proc = subprocess.run(["bash", ROOT / "scripts" / "quickstart.sh", "--out", tmp_path / "qs", "--data", data],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and f"{data} has no valid.raw.de, which the evaluation reads" in proc.stderr
    assert not (tmp_path / "qs").exists() or not any((tmp_path / "qs").iterdir())


def test_print_train_command_prints_the_run_and_does_nothing_else(tmp_path):
    """--print-train-command: the main run's command with the options and -- ARGS applied (the quick start's hydra
    config is generated from it: tests/test_hydra.py), and nothing set up or created; bad options still refused."""
    import shlex

    proc = subprocess.run(["bash", ROOT / "scripts" / "quickstart.sh", "--print-train-command", "--out", tmp_path / "qs",
                           "--scheme", "b2t", "--layers", "6-2", "--lr", "2e-3", "--warmup", "10", "--max-tokens", "99",
                           "--max-update", "7", "--stop-minutes", "6", "--threads", "3", "--compare-postln",
                           "--", "--admin-init", "O(logn)"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    words = shlex.split(proc.stdout)
    assert words[:3] == ["OMP_NUM_THREADS=3", "fairseq-train", f"{tmp_path}/qs/data/data-bin"]
    value = {w: words[i + 1] for i, w in enumerate(words[:-1]) if w.startswith("--")}
    assert (value["--arch"], value["--encoder-layers"], value["--decoder-layers"]) == ("b2t_transformer", "6", "2")
    assert (value["--lr"], value["--warmup-updates"], value["--max-tokens"], value["--max-update"]) == \
        ("2e-3", "10", "99", "7")
    assert value["--stop-time-hours"] == "0.1" and value["--save-dir"] == f"{tmp_path}/qs/checkpoints/b2t_6-2"
    assert words[-2:] == ["--admin-init", "O(logn)"] and "--admin-profile-save" not in words
    assert proc.stdout.count("fairseq-train") == 1 and not (tmp_path / "qs").exists()
    refused = subprocess.run(["bash", ROOT / "scripts" / "quickstart.sh", "--print-train-command", "--lr", "0"],
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "--lr must be a positive number" in refused.stderr and not refused.stdout


def test_search_trials_are_the_quickstart_with_a_time_budget():
    cmd = quickstart_search.trial_command("admin-logn-18-6-lr2e-3", "D", "O", threads=1)
    assert cmd[:2] == ["bash", str(ROOT / "scripts" / "quickstart.sh")]
    assert {"--no-eval", "--stop-minutes"} <= set(cmd) and cmd[cmd.index("--stop-minutes") + 1] == "30"
    assert cmd[-3:] == ["--", "--admin-init", "O(logn)"]
    assert all(int(t["layers"].split("-")[0]) >= 18 for t in quickstart_search.TRIALS.values())


def _trial_result(name, nll, valid_bleu=None, distinct=None):
    r = {"trial": name, "config": dict(quickstart_search.TRIALS[name]), "threads": 2, "minutes": 30.0,
         "updates": 1000, "final_valid_nll": nll}
    if valid_bleu is not None:
        r["valid_eval"] = {label: {"sacrebleu": valid_bleu, "distinct_outputs": distinct, "sentences": 1014}
                           for label, _, _ in quickstart_search.EVALUATIONS}
    return r


def test_search_ranks_by_validation_bleu_not_by_loss(tmp_path):
    """The first round's lowest validation loss belonged to a model emitting one sentence for every input: the table
    must rank by translation of the validation set, and list unevaluated trials after the evaluated ones."""
    for r in (_trial_result("admin-18-3-lr2e-3-b2000", 5.159, 2.4, 1),     # lowest loss, ignores its source
              _trial_result("admin-18-6-lr1e-3", 5.231, 9.1, 850),
              _trial_result("deepnorm-18-6-lr2e-3", 4.9)):                 # not evaluated yet
        (tmp_path / f"{r['trial']}.json").write_text(json.dumps(r))
    ranked = [r["trial"] for r in quickstart_search.write_table(str(tmp_path))]
    assert ranked == ["admin-18-6-lr1e-3", "admin-18-3-lr2e-3-b2000", "deepnorm-18-6-lr2e-3"]
    table = (tmp_path / "TABLE.md").read_text()
    assert "| admin-18-3-lr2e-3-b2000 |" in table and "2.40 (1)" in table
    assert table.index("admin-18-6-lr1e-3 |") < table.index("admin-18-3-lr2e-3-b2000 |")


@pytest.mark.skipif(not (SHARED_DATA / "multi30k").is_dir(), reason="../shared/data/multi30k is absent")
def test_a_short_quickstart_prints_examples_and_writes_the_curves(tmp_path):
    """The real quick start, 5 updates of each model: the report's examples, BLEU with signature and one PNG with
    both runs' curves; each model's evaluation chosen on its own validation translations (5 updates leave no
    interval checkpoint: checkpoint_best.pt x 3 length penalties), the test set translated once per model."""
    pytest.importorskip("matplotlib", reason="the [plots] extra is not installed")
    env = dict(os.environ, FAIRSEQ_ADMIN_VENV=os.path.dirname(os.path.dirname(sys.executable)))
    proc = subprocess.run(["bash", ROOT / "scripts" / "quickstart.sh", "--raw-dir", SHARED_DATA / "multi30k",
                           "--out", tmp_path / "qs", "--max-update", "5", "--layers", "18-2", "--threads", "1",
                           "--compare-postln", "--generate-args", "--max-len-a 0 --max-len-b 4",
                           "--", "--log-interval", "1"],  # fairseq's train_inner lines at every update
                          capture_output=True, text=True, timeout=1500, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "[quickstart] update 5/5 (100%) | " in out and " updates/s | " in out and " left" in out
    assert out.count("source:     ") == 5 and out.count("reference:  ") == 5
    assert out.count("\n      admin 18-2: ") == 5 and out.count("\n      postln 18-2: ") == 5  # each translation
    assert "admin: sacreBLEU" not in out and "admin 18-2: sacreBLEU" in out and "postln 18-2: sacreBLEU" in out
    assert "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:" in out
    png = tmp_path / "qs" / "curves-18-2.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"curves:        {png}" in out
    assert out.count("the grid has checkpoint_best.pt alone") == 2
    assert out.count("--gen-subset valid") == 2 and out.count("--gen-subset test") == 2
    assert out.count("<- chosen") == 4  # the evaluation's grid and the report's, for each model
    for scheme in ("admin", "postln"):
        assert f"{scheme} 18-2: validation grid (valid, 1014 sentences, beam 4" in out
        result = json.loads((tmp_path / "qs" / f"results-{scheme}_18-2.json").read_text())
        assert result["num_hypotheses"] == 1000
        grid = result["chosen_on_valid"]["grid"]
        assert [(c["checkpoints"], c["lenpen"]) for c in grid] == [("best", 0.6), ("best", 1.0), ("best", 1.5)]
        assert result["lenpen"] == result["chosen_on_valid"]["choice"]["lenpen"]
