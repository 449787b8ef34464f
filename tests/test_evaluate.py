"""scripts/evaluate.sh and fairseq_admin/cli/evaluate.py: generate-output parsing, compound split, tokenized BLEU,
sacreBLEU equal to the sacrebleu CLI, the whole pipeline on a tiny real Multi30k model, and --choose-on-valid (the
checkpoints and length penalty chosen on the validation set, fairseq_admin/choose_on_valid.py)."""
import json
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from helpers import ROOT, SHARED_DATA, TINY_TRAIN, USER_DIR, VENV_BIN, run_cli

from fairseq_admin import choose_on_valid as cov
from fairseq_admin.cli import evaluate as ev


GERMAN = [
    "Ein Mann mit einem orangefarbenen Hut, der etwas anstarrt.",
    "Ein Boston Terrier läuft über saftig-grünes Gras vor einem weißen Zaun.",
    "Ein Mädchen in einem Karateanzug bricht einen Stock mit einem Tritt.",
    "Fünf Leute in Winterjacken und mit Helmen stehen im Schnee mit Schneemobilen im Hintergrund.",
    "Leute Reparieren das Dach eines Hauses.",
    "Ein hell gekleideter Mann fotografiert eine Gruppe von Männern in dunklen Anzügen und mit Hüten.",
]


def _sacrebleu_cli(ref, hyp):
    proc = subprocess.run([str(VENV_BIN / "sacrebleu"), str(ref), "-i", str(hyp), "-m", "bleu", "-w", "4"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


# --------------------------------------------------------------------------------------------------------------------
# unit tests
# --------------------------------------------------------------------------------------------------------------------
def test_parse_generate_output_orders_by_id_and_keeps_first_nbest():
    lines = ["S-2\tc", "H-2\t-0.5\tz z", "D-2\t-0.5\tz z", "P-2\t-0.1 -0.2", "H-0\t-0.1\ta b", "H-0\t-0.9\tworse",
             "S-1\tb", "H-1\t-0.3\t", "Generate test with beam=4: BLEU4 = 1.00"]
    assert ev.parse_generate_output(lines) == ["a b", "", "z z"]
    with pytest.raises(ev.EvaluationError, match="not 0..1"):
        ev.parse_generate_output(["H-0\t-1\ta", "H-2\t-1\tb"])
    assert ev.parse_generate_output(["nothing here"]) == []


def test_compound_split_matches_the_perl_one_liner():
    line = "a-b-c rich-text x - y @-@ 3-4"
    expected = "a ##AT##-##AT## b-c rich ##AT##-##AT## text x - y @ ##AT##-##AT## @ 3 ##AT##-##AT## 4"
    assert ev.compound_split(line) == expected
    perl = shutil.which("perl")
    if perl:
        out = subprocess.run([perl, "-ple", "s{(\\S)-(\\S)}{$1 ##AT##-##AT## $2}g"], input=line + "\n",
                             capture_output=True, text=True).stdout
        assert out.rstrip("\n") == expected


def test_moses_tokenization_with_aggressive_dash_splitting():
    tok = ev.moses_tokenize(["Ein Boston Terrier läuft über saftig-grünes Gras."], "de")
    assert tok == ["Ein Boston Terrier läuft über saftig @-@ grünes Gras ."]
    assert ev.moses_tokenize(["saftig-grünes"], "de", aggressive=False) == ["saftig-grünes"]


def test_tokenized_bleu():
    assert ev.tokenized_bleu(GERMAN, GERMAN, "de")["score"] == pytest.approx(100.0)
    hyp = ["Ein Mann mit einem orangen Hut, der etwas anstarrt.", "Ein Boston Terrier läuft über saftig grünes Gras."]
    ref = GERMAN[:2]
    res = ev.tokenized_bleu(hyp, ref, "de")
    # by hand: the same tokens, computed with sacrebleu on the pre-tokenized, compound-split text
    from sacrebleu.metrics import BLEU

    sys_tok = ["Ein Mann mit einem orangen Hut , der etwas anstarrt .",
               "Ein Boston Terrier läuft über saftig grünes Gras ."]
    ref_tok = ["Ein Mann mit einem orangefarbenen Hut , der etwas anstarrt .",
               "Ein Boston Terrier läuft über saftig @ ##AT##-##AT## @ grünes Gras vor einem weißen Zaun ."]
    expected = BLEU(tokenize="none", smooth_method="none").corpus_score(sys_tok, [ref_tok]).score
    assert res["score"] == pytest.approx(expected) and 0 < res["score"] < 100
    assert "tok:none" in res["signature"]
    with pytest.raises(ev.EvaluationError):
        ev.tokenized_bleu(hyp, GERMAN, "de")


def test_sacrebleu_score_equals_the_cli(tmp_path):
    rng = random.Random(1)
    hyps = []
    for line in GERMAN:
        words = line.split()
        del words[rng.randrange(len(words))]
        hyps.append(" ".join(words))
    ref, hyp = tmp_path / "ref.de", tmp_path / "hyp.de"
    ref.write_text("".join(r + "\n" for r in GERMAN), encoding="utf-8")
    hyp.write_text("".join(h + "\n" for h in hyps), encoding="utf-8")
    ours = ev.sacrebleu_score(hyps, ev.read_lines_like_sacrebleu(str(ref)))
    cli = _sacrebleu_cli(ref, hyp)
    assert 0 < ours["score"] < 100
    assert round(ours["score"], 4) == cli["score"]
    assert ours["signature"] == cli["signature"]


def test_pair_defaults_are_the_papers():
    wmt = {"aggressive_dash": True, "compound_split": True}
    assert ev.PAIR_DEFAULTS == {"en-de": {"beam": 4, "lenpen": 0.6, **wmt}, "en-fr": {"beam": 5, "lenpen": 0.8, **wmt},
                                "de-en": {"beam": 5, "lenpen": 1.0, "aggressive_dash": False,
                                          "compound_split": False}}  # de-en: tests/test_iwslt14.py


def test_help():
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "evaluate.sh"), "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "--num-checkpoints" in proc.stdout and "compound split" in proc.stdout
    assert "--choose-on-valid" in proc.stdout and "never used to choose" in proc.stdout


# --------------------------------------------------------------------------------------------------------------------
# end to end on a tiny Multi30k model
# --------------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def multi30k_model(multi30k_data, tmp_path_factory):
    save = tmp_path_factory.mktemp("eval_ckpt")
    # --user-dir for its clean exit after a mid-epoch stop (fairseq_admin/clean_exit.py)
    run_cli("fairseq-train", multi30k_data["bin"], *TINY_TRAIN, "--user-dir", USER_DIR, "--max-tokens", "2000",
            "--max-update", "30", "--save-interval-updates", "10", "--save-dir", save, "--no-epoch-checkpoints")
    n = multi30k_data["test_size"]
    ref = tmp_path_factory.mktemp("eval_ref") / "test.raw.de"
    with open(SHARED_DATA / "multi30k" / "test_2016_flickr.de", encoding="utf-8") as f:
        ref.write_text("".join(next(f) for _ in range(n)), encoding="utf-8")
    valid_ref = ref.parent / "valid.raw.de"  # the fixture's valid subset: the first 100 lines of val
    with open(SHARED_DATA / "multi30k" / "val.de", encoding="utf-8") as f:
        valid_ref.write_text("".join(next(f) for _ in range(100)), encoding="utf-8")
    return dict(multi30k_data, save=save, ref=ref, valid_ref=valid_ref)


def test_evaluate_sh_end_to_end(multi30k_model, tmp_path):
    m = multi30k_model
    out = tmp_path / "results.json"
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "evaluate.sh"), "--pair", "en-de", "--checkpoints", str(m["save"]),
         "--data", str(m["bin"]), "--spm", str(m["spm"]), "--ref", str(m["ref"]), "--num-checkpoints", "3",
         "--cpu", "--out", str(out), "--generate-args", "--max-len-a 0 --max-len-b 20"],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for step in ("step 1/4", "step 2/4", "step 3/4", "step 4/4", "average",
                 "fairseq-generate", "sacreBLEU:", "sacreBLEU signature:", "tokenized BLEU (compound split):"):
        assert step in proc.stdout, step
    res = json.loads(out.read_text())
    assert res["num_hypotheses"] == res["num_references"] == m["test_size"]
    assert res["averaged"] and len(res["checkpoints"]) == 3
    assert [p.rsplit("/", 1)[-1] for p in res["checkpoints"]] == ["checkpoint_1_10.pt", "checkpoint_1_20.pt",
                                                                  "checkpoint_1_30.pt"]
    assert res["beam"] == 4 and res["lenpen"] == 0.6
    assert "fairseq-generate" in res["generate_command"] and "--beam 4" in res["generate_command"]
    assert "--user-dir" in res["generate_command"]
    assert res["sacrebleu_signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a")
    assert isinstance(res["tokenized_bleu"], float)
    hyps = open(res["hypotheses_file"], encoding="utf-8").read().splitlines()
    assert len(hyps) == m["test_size"] and not any("▁" in h for h in hyps)  # sentencepiece-decoded
    cli = _sacrebleu_cli(m["ref"], res["hypotheses_file"])
    assert round(res["sacrebleu"], 4) == cli["score"]
    assert res["sacrebleu_signature"] == cli["signature"]

    # the hypotheses are in the original sentence order: H-<id> of the generate output, decoded
    gen = open(res["generate_output"], encoding="utf-8").read().splitlines()
    h5 = next(line for line in gen if line.startswith("H-5\t")).split("\t")[2]
    assert ev.spm_decode([h5], str(m["spm"]))[0] == hyps[5]

    # a reference with a different number of lines is a clear error
    short = tmp_path / "short.de"
    short.write_text("".join(line + "\n" for line in open(m["ref"], encoding="utf-8").read().splitlines()[:-1]))
    with pytest.raises(ev.EvaluationError, match=rf"produced {m['test_size']} hypotheses.*has {m['test_size'] - 1} lines"):
        ev.load_hypotheses_and_references(res["generate_output"], str(m["spm"]), str(short))


def test_evaluate_errors_clearly_on_too_few_checkpoints(multi30k_model, tmp_path):
    m = multi30k_model
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "evaluate.sh"), "--pair", "en-de", "--checkpoints", str(m["save"]),
         "--data", str(m["bin"]), "--spm", str(m["spm"]), "--ref", str(m["ref"]), "--num-checkpoints", "5",
         "--cpu", "--out", str(tmp_path / "r.json")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "found only 3" in proc.stderr and "checkpoint_1_30.pt" in proc.stderr
    assert ev.select_checkpoints(str(m["save"]), 1) == [str(m["save"] / "checkpoint_best.pt")]


# --------------------------------------------------------------------------------------------------------------------
# --choose-on-valid: the evaluation chosen on the validation set, the test set translated once after the choice
# --------------------------------------------------------------------------------------------------------------------
# three finished hypotheses of one sentence: |y| = 2, 5, 12 tokens with EOS, sum log2 p = -1, -2.075, -6.05. Ranked
# by sum log2 p / |y| ** lenpen, the short one is first at lenpen 0.6, the middle one at 1.0, the long one at 1.5.
FINISHED = (("short", 2, -1.0), ("mid", 5, -2.075), ("long", 12, -6.05))
WINNER = {0.6: "short", 1.0: "mid", 1.5: "long"}


def _nbest_lines(sentence_id, hyps, lenpen):
    """fairseq-generate's H/D/P lines for the finished ``hyps`` ((pieces, |y|, sum log2 p)) at ``lenpen``, best
    first, as fairseq prints them (H: sum / |y| ** lenpen; P: one value per token and EOS)."""
    lines = []
    for pieces, length, log_prob in sorted(hyps, key=lambda h: -h[2] / h[1] ** lenpen):
        score = log_prob / length ** lenpen
        lines += [f"H-{sentence_id}\t{score}\t{pieces}", f"D-{sentence_id}\t{score}\t{pieces}",
                  f"P-{sentence_id}\t" + " ".join([f"{log_prob / length:.4f}"] * length)]
    return lines


def test_one_nbest_list_serves_every_length_penalty():
    nbest = cov.parse_nbest(["S-0\tx", *_nbest_lines(0, FINISHED, 1.0), *_nbest_lines(1, FINISHED[:1], 1.0)], 1.0)
    assert [h.pieces for h in nbest[0]] == ["mid", "short", "long"] and nbest[1] == [("short", -1.0, 2)]
    assert nbest[0][2].log_prob == pytest.approx(-6.05) and nbest[0][2].length == 12
    for lenpen, winner in WINNER.items():
        assert cov.rerank(nbest, lenpen) == [winner, "short"]
    assert cov.rerank(cov.parse_nbest(_nbest_lines(0, FINISHED, 0.6), 0.6), 1.5) == ["long"]  # generated at 0.6
    with pytest.raises(ValueError, match=r"not 0\.\.1"):
        cov.parse_nbest([*_nbest_lines(0, FINISHED, 1.0), *_nbest_lines(2, FINISHED, 1.0)], 1.0)


def test_the_choice_is_the_best_printed_score_and_ties_go_to_the_earlier_cell():
    cells = [cov.Cell("best", 0.6, 21.53, 0.95), cov.Cell("best", 1.0, 21.91, 1.0), cov.Cell("avg3", 0.6, 21.9149, 1.0),
             cov.Cell("avg3", 1.0, 19.73, 1.2)]
    assert cov.choose(cells) is cells[1]  # 21.9149 prints as 21.91: a tie, the earlier cell wins
    assert cov.choose(cells[2:]) is cells[2]
    lines = cov.format_grid(cells, cells[1])
    assert "valid sacreBLEU" in lines[0] and "length ratio" in lines[0]
    assert lines[2].split() == ["best", "1.0", "21.91", "1.000", "<-", "chosen"]
    assert sum("chosen" in line for line in lines) == 1


def _fake_pipeline(tmp_path, monkeypatch, decode=True):
    """fairseq-admin-evaluate's inputs (a real sentencepiece model; the checkpoints and data-bin as empty files) and a
    fake ``ev._run``: averaging writes its output, fairseq-generate writes n-best lists of FINISHED whose pieces
    name the model (``best:mid``). Returns the list of commands run (with decode: hypotheses are not decoded)."""
    import sentencepiece as spm

    (tmp_path / "spm.txt").write_text("".join(f"a man rides bike number {i}\n" for i in range(30)))
    spm.SentencePieceTrainer.train(input=str(tmp_path / "spm.txt"), model_prefix=str(tmp_path / "spm"),
                                   vocab_size=27, num_threads=1, minloglevel=2)
    data, ckpts = tmp_path / "data-bin", tmp_path / "ckpts"
    data.mkdir()
    ckpts.mkdir()
    for split in ("valid", "test"):
        for lang in ("en", "de"):
            for ext in ("bin", "idx"):
                (data / f"{split}.en-de.{lang}.{ext}").write_bytes(b"")
    for name in ("checkpoint_best.pt", "checkpoint_last.pt", "checkpoint_1_10.pt", "checkpoint_1_20.pt",
                 "checkpoint_1_30.pt"):
        (ckpts / name).write_bytes(b"")
    (tmp_path / "valid.raw.de").write_text("v0\nv1\nv2\n")
    (tmp_path / "test.raw.de").write_text("t0\nt1\n")
    runs = []

    def fake_run(cmd, stdout_path=None):
        runs.append(cmd)
        if "fairseq_admin.cli.average_checkpoints" in cmd:
            Path(cmd[cmd.index("--output") + 1]).write_bytes(b"averaged")
            return
        model = "best" if cmd[cmd.index("--path") + 1].endswith("checkpoint_best.pt") else "avg3"
        subset, lenpen = cmd[cmd.index("--gen-subset") + 1], float(cmd[cmd.index("--lenpen") + 1])
        nbest = int(cmd[cmd.index("--nbest") + 1]) if "--nbest" in cmd else 1
        lines = []
        for i in range(3 if subset == "valid" else 2):
            lines += _nbest_lines(i, [(f"{model}:{tag}", n, lp) for tag, n, lp in FINISHED], lenpen)[:3 * nbest]
        Path(stdout_path).write_text("\n".join(lines) + "\n")

    monkeypatch.setattr(ev, "_run", fake_run)
    if decode:
        monkeypatch.setattr(ev, "spm_decode", lambda pieces, model: list(pieces))
    monkeypatch.setattr(ev, "tokenized_bleu", lambda *a, **k: {"score": 0.0, "text": "", "signature": ""})
    return runs


def _choose_argv(tmp_path, *extra):
    return ["--pair", "en-de", "--checkpoints", str(tmp_path / "ckpts"), "--data", str(tmp_path / "data-bin"),
            "--spm", str(tmp_path / "spm.model"), "--ref", str(tmp_path / "test.raw.de"), "--num-checkpoints", "3",
            "--average-by", "update", "--beam", "4", "--cpu", "--out", str(tmp_path / "out" / "results.json"),
            "--choose-on-valid", "--valid-ref", str(tmp_path / "valid.raw.de"), *extra]


def test_the_choice_is_made_on_validation_only_and_the_test_set_is_translated_once(tmp_path, monkeypatch, capsys):
    """The validation set prefers avg3 at lenpen 1.0, the test set would prefer checkpoint_best.pt at 1.5: the
    validation set's cell is chosen, all six cells are scored before the test set is translated, once, with it."""
    runs = _fake_pipeline(tmp_path, monkeypatch)
    prefers = {"valid": "avg3:mid", "test": "best:long"}
    scored = []

    def fake_sacrebleu(hyps, refs):  # the scorer: which set it scores is told by the references
        subset = "valid" if refs[0] == "v0" else "test"
        scored.append((subset, hyps[0]))
        score = 30.0 if hyps[0] == prefers[subset] else 10.0 + len(scored)
        return {"score": score, "text": f"BLEU = {score}", "signature": "sig", "length_ratio": len(scored) / 10}

    monkeypatch.setattr(ev, "sacrebleu_score", fake_sacrebleu)
    result = ev.evaluate(ev.get_parser().parse_args(_choose_argv(tmp_path)))

    grid_order = [(model, lenpen) for model in ("best", "avg3") for lenpen in (0.6, 1.0, 1.5)]
    assert scored == [("valid", f"{m}:{WINNER[a]}") for m, a in grid_order] + [("test", "avg3:mid")]
    generated = [(c[c.index("--gen-subset") + 1], Path(c[c.index("--path") + 1]).name, c[c.index("--lenpen") + 1],
                  "--nbest" in c) for c in runs if "--gen-subset" in c]
    assert generated == [("valid", "checkpoint_best.pt", "1.0", True), ("valid", "results.avg3.pt", "1.0", True),
                         ("test", "results.avg3.pt", "1.0", False)]
    assert sum("fairseq_admin.cli.average_checkpoints" in c for c in runs) == 1
    assert result["lenpen"] == 1.0 and result["averaged"] and result["sacrebleu"] == 17.0  # not the test set's 30
    chosen = result["chosen_on_valid"]
    assert (chosen["choice"]["checkpoints"], chosen["choice"]["lenpen"], chosen["choice"]["sacrebleu"]) == \
        ("avg3", 1.0, 30.0)
    assert [(c["checkpoints"], c["lenpen"]) for c in chosen["grid"]] == grid_order
    assert [c["length_ratio"] for c in chosen["grid"]] == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    assert chosen["subset"] == "valid" and chosen["sentences"] == 3 and set(chosen["translations"]) == {"best", "avg3"}
    assert json.loads((tmp_path / "out" / "results.json").read_text())["chosen_on_valid"] == chosen
    printed = [line.split() for line in capsys.readouterr().out.splitlines() if "<- chosen" in line]
    assert printed == [["avg3", "1.0", "30.00", "0.500", "<-", "chosen"]]


@pytest.mark.parametrize("extra, needle", [
    (["--lenpen", "1.0"], "--lenpen and --choose-on-valid exclude each other"),
    (["--generate-args", "--max-len-b 5 --lenpen 0.6"], "--generate-args --lenpen and --choose-on-valid"),
    (["--grid-lenpens", "0.6,x"], "--grid-lenpens must be comma-separated numbers"),
    (["--valid-subset", "test"], "the choice is made on another set"),
    (["--valid-ref", "TEST_REF"], "the choice is made on another set"),
    (["--valid-subset", "dev"], "has no binarized 'dev' subset"),
])
def test_choose_on_valid_refuses_bad_options_before_any_work(tmp_path, monkeypatch, capsys, extra, needle):
    runs = _fake_pipeline(tmp_path, monkeypatch)
    extra = [str(tmp_path / "test.raw.de") if e == "TEST_REF" else e for e in extra]
    assert ev.cli_main(_choose_argv(tmp_path, *extra)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0] and err[0].startswith("fairseq-admin-evaluate: error: "), err
    assert runs == [] and not (tmp_path / "out" / "results.json").exists()


def test_spm_that_is_not_a_model_is_refused_before_any_work(tmp_path, monkeypatch, capsys):
    """Issue 27: an --spm naming another file (here the reference) failed only when decoding, after the
    translation, as a traceback."""
    runs = _fake_pipeline(tmp_path, monkeypatch, decode=False)
    argv = [a for a in _choose_argv(tmp_path) if a not in ("--choose-on-valid",)]
    argv = argv[:argv.index("--valid-ref")]
    argv[argv.index("--spm") + 1] = str(tmp_path / "test.raw.de")
    assert ev.cli_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--spm" in err[0] and "is not a sentencepiece model" in err[0], err
    assert runs == []


def test_choose_on_valid_end_to_end_equals_separate_fairseq_runs(multi30k_model, tmp_path):
    """The real pipeline on a tiny model: the grid printed and recorded, the validation set translated once per
    checkpoint choice, the test set once. Each cell's re-ranked n-best list is what fairseq-generate itself outputs at
    that length penalty (the claim of fairseq_admin/choose_on_valid.py, sequence_generator.py finalize_hypos),
    checked against separate runs, and so is its sacreBLEU."""
    m = multi30k_model
    out = tmp_path / "results.json"
    max_len = ["--max-len-a", "0", "--max-len-b", "20"]
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "evaluate.sh"), "--pair", "en-de", "--checkpoints", str(m["save"]),
         "--data", str(m["bin"]), "--spm", str(m["spm"]), "--ref", str(m["ref"]), "--num-checkpoints", "3",
         "--average-by", "update", "--choose-on-valid", "--valid-ref", str(m["valid_ref"]), "--cpu",
         "--out", str(out), "--generate-args", " ".join(max_len)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("--gen-subset valid") == 2 and proc.stdout.count("--gen-subset test") == 1
    assert "validation grid (valid, 100 sentences, beam 4" in proc.stdout and proc.stdout.count("<- chosen") == 1
    res = json.loads(out.read_text())
    chosen = res["chosen_on_valid"]
    assert [(c["checkpoints"], c["lenpen"]) for c in chosen["grid"]] == \
        [(m_, a) for m_ in ("best", "avg3") for a in (0.6, 1.0, 1.5)]
    assert (res["lenpen"], res["averaged"]) == (chosen["choice"]["lenpen"], chosen["choice"]["checkpoints"] == "avg3")
    assert f"--lenpen {res['lenpen']}" in res["generate_command"] and "--nbest" not in res["generate_command"]
    with open(chosen["translations"]["best"]["generate_output"], encoding="utf-8") as f:
        nbest = cov.parse_nbest(f, generated_lenpen=1.0)
    refs = ev.read_lines_like_sacrebleu(str(m["valid_ref"]))
    for lenpen in (0.6, 1.5):
        gen = run_cli("fairseq-generate", m["bin"], "--path", m["save"] / "checkpoint_best.pt", "--user-dir", USER_DIR,
                      "--gen-subset", "valid", "--beam", "4", "--lenpen", str(lenpen), "--cpu",
                      "--required-batch-size-multiple", "1", *max_len).stdout.splitlines()
        alone = ev.parse_generate_output(gen)
        assert cov.rerank(nbest, lenpen) == alone
        cell = next(c for c in chosen["grid"] if (c["checkpoints"], c["lenpen"]) == ("best", lenpen))
        assert cell["sacrebleu"] == ev.sacrebleu_score(ev.spm_decode(alone, str(m["spm"])), refs)["score"]
