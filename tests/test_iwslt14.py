"""IWSLT14 De-En: data-prep/prepare-iwslt14deen.sh offline (``--raw-dir``) on real sentences laid out as the IWSLT14
archive lays them out, and ``fairseq-admin-evaluate --pair de-en`` on a tiny model trained on the result.

The raw directory is built from Multi30k's real German/English sentences (../shared/data, skipped when absent) in
the format of de-en.tgz: ``train.tags.de-en.{de,en}`` (talk headers in tags, one sentence a line) and the
``IWSLT14.*.de-en.{de,en}.xml`` files (``<seg id="N">`` lines). The expected splits come from a reference written
from the classic prepare-iwslt14.sh's commands, step by step.
"""
import json
import re

import pytest

from fairseq_admin.cli import evaluate as ev
from helpers import TINY_TRAIN, USER_DIR, run_cli
from test_data_prep import DATA, lines, prepare, run_script

TEST_SETS = ["IWSLT14.TED.dev2010", "IWSLT14.TEDX.dev2012", "IWSLT14.TED.tst2010", "IWSLT14.TED.tst2011",
             "IWSLT14.TED.tst2012"]
TALKS, TALK_LINES, SEGS = 4, 400, 20


def multi30k(name, lang):
    return (DATA / "multi30k" / f"{name}.{lang}").read_text(encoding="utf-8").splitlines()


def write(path, rows):
    path.write_text("".join(row + "\n" for row in rows), encoding="utf-8")


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    if not (DATA / "multi30k" / "train.de").is_file():
        pytest.skip(f"Multi30k not found under {DATA}")
    folder = tmp_path_factory.mktemp("iwslt_raw") / "de-en"
    folder.mkdir()
    train = {lang: multi30k("train", lang) for lang in ("de", "en")}
    sides = {"de": [], "en": []}
    for talk in range(TALKS):
        sentences = {lang: train[lang][talk * TALK_LINES:(talk + 1) * TALK_LINES] for lang in ("de", "en")}
        for lang in ("de", "en"):
            title, description, *body = sentences[lang]
            sides[lang] += [f"<url>http://www.ted.com/talks/talk_{talk}.html</url>",
                            f"<keywords>talks, {lang} keywords</keywords>", f"<speaker>Speaker {talk}</speaker>",
                            f"<talkid>{100 + talk}</talkid>", f"<title>{title}</title>",
                            f"<description>{description}</description>", *body]
    sides["de"].append("Ja.")  # a pair that the 1.5 length ratio drops
    sides["en"].append(train["en"][TALKS * TALK_LINES])
    for lang, rows in sides.items():
        write(folder / f"train.tags.de-en.{lang}", rows)
    for k, name in enumerate(TEST_SETS):
        source = "val" if "dev" in name else "test_2016_flickr"
        for lang in ("de", "en"):
            segs = multi30k(source, lang)[k * SEGS:(k + 1) * SEGS]
            if k == 0 and lang == "en":
                segs[0] = "It\u2019s " + segs[0]
            write(folder / f"{name}.de-en.{lang}.xml",
                  ['<?xml version="1.0" encoding="UTF-8"?>', "<mteval>",
                   f'<srcset setid="{name}" srclang="{lang}">', f'<doc docid="{k}" genre="lectures">',
                   f"<url>http://www.ted.com/talks/{k}.html</url>", f"<talkid>{k}</talkid>",
                   f"<title>{segs[-1]}</title>", *[f'<seg id="{i}"> {s} </seg>' for i, s in enumerate(segs, 1)],
                   "</doc>", "</srcset>", "</mteval>"])
    return folder.parent


def classic_reference(orig):
    """prepare-iwslt14.sh's commands, one by one, on the train.tags files (Moses tokens from sacremoses)."""
    from sacremoses import MosesTokenizer

    sides = {}
    for lang in ("de", "en"):
        rows = (orig / f"train.tags.de-en.{lang}").read_text(encoding="utf-8").splitlines()
        rows = [r for r in rows if "<url>" not in r and "<talkid>" not in r and "<keywords>" not in r]  # grep -v
        for tag in ("<title>", "</title>", "<description>", "</description>"):
            rows = [r.replace(tag, "") for r in rows]  # sed -e 's/<title>//g' ...
        tok = MosesTokenizer(lang=lang)
        sides[lang] = [(r, tok.tokenize(r, escape=True)) for r in rows]
    kept = []
    for (de, de_tok), (en, en_tok) in zip(sides["de"], sides["en"]):  # clean-corpus-n.perl -ratio 1.5 ... 1 175
        if 1 <= len(de_tok) <= 175 and 1 <= len(en_tok) <= 175 and len(de_tok) / len(en_tok) <= 1.5 \
                and len(en_tok) / len(de_tok) <= 1.5:
            kept.append((de.lower(), en.lower()))  # lowercase.perl
    valid = [p for nr, p in enumerate(kept, 1) if nr % 23 == 0]  # awk '{if (NR%23 == 0) print $0; }'
    train = [p for nr, p in enumerate(kept, 1) if nr % 23 != 0]
    return train, valid, len(sides["de"]) - len(kept)


@pytest.fixture(scope="module")
def prepared(raw, tmp_path_factory):
    out = tmp_path_factory.mktemp("iwslt_out")
    proc = run_script("prepare-iwslt14deen.sh", "--out", out, "--raw-dir", raw, "--vocab-size", 1000, "--workers", 1)
    return out, proc


def test_help_and_bad_raw_dir(tmp_path):
    proc = run_script("prepare-iwslt14deen.sh", "--help")
    assert proc.stdout.startswith("Usage: bash data-prep/prepare-iwslt14deen.sh") and "--raw-dir" in proc.stdout
    proc = run_script("prepare-iwslt14deen.sh", "--out", tmp_path / "o", "--raw-dir", tmp_path, check=False)
    assert proc.returncode != 0 and "expected train.tags.de-en.de" in proc.stderr
    assert "stage spm" not in proc.stdout


def test_splits_and_cleaning_are_the_classic_recipes(raw, prepared):
    out, proc = prepared
    train, valid, dropped = classic_reference(raw / "de-en")
    assert dropped >= 1  # the "Ja." pair at least
    report = json.loads((out / "iwslt14-report.json").read_text())
    assert (report["train"], report["valid"], report["dropped_by_cleaning"]) == (len(train), len(valid), dropped)
    for lang, side in (("de", 0), ("en", 1)):
        assert lines(out / f"train.clean.{lang}") == [prepare.normalize(p[side]) for p in train]
        assert lines(out / f"valid.raw.{lang}") == [p[side] for p in valid]
    train_text = (out / "train.clean.en").read_text(encoding="utf-8")
    assert "<url>" not in train_text and "<talkid>" not in train_text and "<title>" not in train_text
    assert "<speaker>speaker 0</speaker>" in train_text  # the classic recipe keeps the speaker lines
    assert prepare.normalize(multi30k("train", "en")[0].lower()) in train_text  # a title's text, its tags removed
    assert "ja." not in lines(out / "train.clean.de")


def test_test_set_is_the_five_ted_sets_in_order(prepared):
    out, _ = prepared
    expected = {lang: [] for lang in ("de", "en")}
    for k, name in enumerate(TEST_SETS):
        source = "val" if "dev" in name else "test_2016_flickr"
        for lang in ("de", "en"):
            expected[lang] += [s.lower() for s in multi30k(source, lang)[k * SEGS:(k + 1) * SEGS]]
    expected["en"][0] = "it's " + expected["en"][0]  # ’ -> '
    assert lines(out / "test.raw.en") == expected["en"] and lines(out / "test.raw.de") == expected["de"]
    for name in ("dict.de.txt", "train.de-en.de.bin", "valid.de-en.en.bin", "test.de-en.en.bin"):
        assert (out / "data-bin" / name).is_file()


def test_second_run_does_nothing(raw, prepared):
    out, _ = prepared
    proc = run_script("prepare-iwslt14deen.sh", "--out", out, "--raw-dir", raw, "--vocab-size", 1000, "--workers", 1)
    assert "stage split: already done" in proc.stdout and "stage binarize: already done" in proc.stdout


def test_de_en_tokenized_bleu_is_the_iwslt_one():
    """Moses tokens without -a and without the WMT compound split, as the classic data is tokenized."""
    from sacrebleu.metrics import BLEU

    hyp, ref = ["a well-known man ' s dog runs ."], ["a well-known man's dog runs fast."]
    res = ev.tokenized_bleu(hyp, ref, "en", aggressive=False, compound=False)
    expected = BLEU(tokenize="none", smooth_method="none").corpus_score(
        ["a well-known man &apos; s dog runs ."], [["a well-known man &apos;s dog runs fast ."]]).score
    assert res["score"] == pytest.approx(expected)
    assert ev.PAIR_DEFAULTS["de-en"] == {"beam": 5, "lenpen": 1.0, "aggressive_dash": False, "compound_split": False}


def test_evaluate_de_en_end_to_end(prepared, tmp_path):
    out, _ = prepared
    save = tmp_path / "ckpt"
    # --user-dir for its clean exit after a mid-epoch stop (fairseq_admin/clean_exit.py)
    run_cli("fairseq-train", out / "data-bin", *TINY_TRAIN, "--user-dir", USER_DIR, "--max-tokens", "2000",
            "--max-update", "10", "--save-dir", save, "--no-epoch-checkpoints")
    proc = run_cli("fairseq-admin-evaluate", "--pair", "de-en", "--checkpoints", save, "--data", out / "data-bin",
                   "--spm", out / "spm.model", "--ref", out / "test.raw.en", "--num-checkpoints", "1", "--cpu",
                   "--out", tmp_path / "r.json", "--generate-args", "--max-len-a 0 --max-len-b 10")
    assert re.search(r"^tokenized BLEU: [\d.]+", proc.stdout, re.M), proc.stdout[-2000:]
    res = json.loads((tmp_path / "r.json").read_text())
    assert (res["beam"], res["lenpen"]) == (5, 1.0)
    assert "--source-lang de --target-lang en" in res["generate_command"]
    assert res["num_hypotheses"] == res["num_references"] == len(TEST_SETS) * SEGS
    assert "-a" not in res["tokenized_bleu_recipe"].split() and "ATAT" not in res["tokenized_bleu_recipe"]
