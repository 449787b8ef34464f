"""scripts/evaluate.sh and fairseq_admin/cli/evaluate.py: generate-output parsing, compound split, tokenized BLEU,
sacreBLEU equal to the sacrebleu CLI, and the whole pipeline on a tiny real Multi30k model."""
import json
import random
import shutil
import subprocess

import pytest

from helpers import ROOT, SHARED_DATA, TINY_TRAIN, USER_DIR, VENV_BIN, run_cli

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
    return dict(multi30k_data, save=save, ref=ref)


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
