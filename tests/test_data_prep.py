"""Data preparation: unit tests of fairseq_admin/cli/prepare.py and offline end-to-end runs of data-prep/*.sh.

The end-to-end cases read the real corpora in ../shared/data (never copied into the repo; temp dirs hold only
symlinks and deliberately corrupted variants) and skip when it is absent. Vocabularies are tiny (1000) to keep the
whole file at a couple of minutes on 2 CPU cores.
"""
import gzip
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = (REPO / ".." / "shared" / "data").resolve()
SCRIPTS = REPO / "data-prep"
USER_DIR = str(REPO / "fairseq_admin")

# Load prepare.py as a file: importing the fairseq_admin package would import fairseq, which these tests do not need.
_spec = importlib.util.spec_from_file_location("prepare_under_test", REPO / "fairseq_admin" / "cli" / "prepare.py")
prepare = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(prepare)

needs_data = pytest.mark.skipif(not (DATA / "README.md").is_file(), reason=f"shared data not found at {DATA}")


def _env():
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env["PYTHON"] = sys.executable
    return env


def run_script(name, *args, check=True):
    proc = subprocess.run(["bash", str(SCRIPTS / name), *map(str, args)], cwd=REPO, env=_env(),
                          capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{name} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def write(path, lines, newline=True):
    path.write_text("".join(line + ("\n" if newline else "") for line in lines), encoding="utf-8")
    return path


def lines(path):
    return Path(path).read_text(encoding="utf-8").split("\n")[:-1]


def snapshot(root):
    return {str(p): p.stat().st_mtime_ns for p in Path(root).rglob("*") if p.is_file()}


def fairseq_train_ok(data_bin):
    # --user-dir for its clean exit after a mid-epoch stop (fairseq_admin/clean_exit.py); the model is fairseq's own
    cmd = [os.path.join(os.path.dirname(sys.executable), "fairseq-train"), str(data_bin), "--user-dir", USER_DIR,
           "--arch", "transformer",
           "--encoder-layers", "1", "--decoder-layers", "1", "--encoder-embed-dim", "32", "--decoder-embed-dim", "32",
           "--encoder-ffn-embed-dim", "64", "--decoder-ffn-embed-dim", "64", "--encoder-attention-heads", "2",
           "--decoder-attention-heads", "2", "--max-update", "2", "--max-tokens", "2000", "--optimizer", "adam",
           "--lr", "1e-4", "--criterion", "label_smoothed_cross_entropy", "--cpu", "--no-save",
           "--disable-validation", "--num-workers", "0"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "num_updates 2" in proc.stdout + proc.stderr


# ------------------------------------------------------------------------------------------------ unit tests


def test_normalize():
    assert prepare.normalize("Parliament &apos;s &quot;x&quot; &amp; &#91;1&#93;") == "Parliament 's \"x\" & [1]"
    assert prepare.normalize("S&P and R&paragraph &nbsp;") == "S&P and R&paragraph &nbsp;"  # only XML entities
    assert prepare.normalize("ein\u00a0Hund\tbellt\x07 \u200b laut\u3000!  ") == "ein Hund bellt laut !"
    assert prepare.normalize("\ufb01ne \uff21") == "fine A"  # NFKC
    assert prepare.normalize("&apos;", unescape=False) == "&apos;"


def test_drop_reason():
    assert prepare.drop_reason("", "x") == "empty"
    assert prepare.drop_reason(" ".join(["a"] * 251), " ".join(["b"] * 251)) == "too_long"
    assert prepare.drop_reason(" ".join(["a"] * 250), " ".join(["b"] * 250)) is None
    assert prepare.drop_reason("a b c d", "a b") == "ratio"
    assert prepare.drop_reason("a b c", "a b") is None  # 1.5 exactly is kept, as in Moses
    assert prepare.drop_reason("a b c d", "a b", ratio=0) is None
    assert prepare.drop_reason(" ".join(["a"] * 300), " ".join(["b"] * 300), max_len=0) is None


def test_clean_corpus_report(tmp_path):
    src = write(tmp_path / "in.en", ["hello world", "empty target", "a b c d e f", "  &quot;ok&quot;  ", "x " * 300])
    tgt = write(tmp_path / "in.de", ["hallo welt", "", "a b", "\u00a0&quot;gut&quot;", "y " * 300])
    report = prepare.clean_corpus([(str(src), str(tgt))], str(tmp_path / "o.en"), str(tmp_path / "o.de"))
    assert report["total"] == 5 and report["kept"] == 2
    assert report["dropped"] == {"empty": 1, "too_long": 1, "ratio": 1}
    assert lines(tmp_path / "o.en") == ["hello world", '"ok"']
    assert lines(tmp_path / "o.de") == ["hallo welt", '"gut"']
    # valid/test mode keeps every line (aligned with references), normalizing only
    report = prepare.clean_corpus([(str(src), str(tgt))], str(tmp_path / "v.en"), str(tmp_path / "v.de"),
                                  filter_pairs=False)
    assert report["kept"] == 5 and lines(tmp_path / "v.de")[1] == ""


def test_clean_cli_report_and_gz(tmp_path):
    src = tmp_path / "c.en.gz"
    with gzip.open(src, "wt", encoding="utf-8") as f:
        f.write("one two\nthree\n")
    tgt = write(tmp_path / "c.de", ["eins zwei", ""])
    prepare.cli_main(["clean", "--pair", str(src), str(tgt), "--src-out", str(tmp_path / "o.en"),
                      "--tgt-out", str(tmp_path / "o.de"), "--report", str(tmp_path / "r.json")])
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["kept"] == 1 and report["dropped"]["empty"] == 1


def test_mismatched_line_counts_name_both_files(tmp_path, capsys):
    a = write(tmp_path / "a.en", ["1", "2", "3"])
    b = write(tmp_path / "a.de", ["1", "2"])
    with pytest.raises(prepare.PrepareError, match=r"a\.en has 3 lines but .*a\.de has 2 lines"):
        list(prepare.read_parallel(str(a), str(b)))
    with pytest.raises(SystemExit) as e:
        prepare.cli_main(["check-lines", str(a), str(b)])
    assert e.value.code == 1
    err = capsys.readouterr().err
    assert "a.en has 3" in err and "a.de has 2" in err
    with pytest.raises(SystemExit):
        prepare.cli_main(["clean", "--pair", str(a), str(b), "--src-out", str(tmp_path / "x"),
                          "--tgt-out", str(tmp_path / "y")])


def test_invalid_utf8_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.en"
    bad.write_bytes(b"fine\nalso fine\nbroken \xff byte\n")
    good = write(tmp_path / "bad.de", ["a", "b", "c"])
    with pytest.raises(prepare.PrepareError, match=r"bad\.en: line 3: invalid UTF-8"):
        prepare.clean_corpus([(str(bad), str(good))], str(tmp_path / "o1"), str(tmp_path / "o2"))


def test_truncated_gzip(tmp_path):
    full = gzip.compress(("some text line\n" * 5000).encode())
    gz = tmp_path / "t.en.gz"
    gz.write_bytes(full[: len(full) // 2])
    with pytest.raises(prepare.PrepareError, match=r"t\.en\.gz: unreadable or truncated"):
        prepare.count_lines(str(gz))


SGM = """<srcset setid="newstest" srclang="any">
<doc docid="1" genre="news" origlang="en">
<seg id="1">First  sentence &amp; S&P &quot;quoted&quot;.</seg>
<seg id="2"> Second one </seg>
</doc>
<doc docid="2">
<seg id="1">Third.</seg>
</doc>
</srcset>
"""


def test_read_sgm(tmp_path):
    path = tmp_path / "a.sgm"
    path.write_text(SGM, encoding="utf-8")
    assert prepare.read_sgm(str(path)) == ['First sentence & S&P "quoted".', "Second one", "Third."]


def test_sgm_errors(tmp_path):
    unclosed = tmp_path / "unclosed.sgm"
    unclosed.write_text(SGM.replace("Second one </seg>", "Second one"), encoding="utf-8")
    with pytest.raises(prepare.PrepareError, match=r"unclosed\.sgm: line 4: <seg> without matching </seg>"):
        prepare.read_sgm(str(unclosed))
    truncated = tmp_path / "truncated.sgm"
    truncated.write_text(SGM[: SGM.index("</doc>\n<doc")], encoding="utf-8")
    with pytest.raises(prepare.PrepareError, match=r"truncated\.sgm: .*truncated"):
        prepare.read_sgm(str(truncated))
    good, short = tmp_path / "good.sgm", tmp_path / "short.sgm"
    good.write_text(SGM, encoding="utf-8")
    short.write_text(SGM.replace('<seg id="1">Third.</seg>\n', ""), encoding="utf-8")
    with pytest.raises(prepare.PrepareError, match=r"good\.sgm has 3 segments but .*short\.sgm has 2"):
        prepare.sgm_to_text(str(good), str(short), str(tmp_path / "o1"), str(tmp_path / "o2"))


def test_spm_train_encode_keeps_line_counts(tmp_path):
    src = write(tmp_path / "t.en", [f"the cat number {i} sat on the mat" for i in range(200)] + [""])
    tgt = write(tmp_path / "t.de", [f"die Katze Nummer {i} sass auf der Matte" for i in range(200)] + ["x"])
    model = prepare.spm_train([str(src), str(tgt)], str(tmp_path / "spm"), vocab_size=100, max_sentences=1000)
    prepare.spm_encode(model, [str(src), str(tgt)], [str(tmp_path / "e.en"), str(tmp_path / "e.de")], batch=7)
    assert len(lines(tmp_path / "e.en")) == len(lines(tmp_path / "e.de")) == 201
    assert lines(tmp_path / "e.en")[-1] == ""
    write(tmp_path / "t.de", ["only one"])
    with pytest.raises(prepare.PrepareError, match="line count mismatch"):
        prepare.spm_encode(model, [str(src), str(tgt)], [str(tmp_path / "f.en"), str(tmp_path / "f.de")])


@pytest.mark.parametrize("script", ["prepare-wmt14en2de.sh", "prepare-wmt14en2fr.sh", "prepare-multi30k.sh"])
def test_help(script):
    proc = run_script(script, "--help")
    assert proc.stdout.startswith("Usage: bash data-prep/" + script) and "--raw-dir" in proc.stdout
    proc = run_script(script, check=False)
    assert proc.returncode != 0 and "--out DIR is required" in proc.stderr


# ------------------------------------------------------------------------------------------ end-to-end (real)


@pytest.fixture(scope="module")
def ende(tmp_path_factory):
    if not (DATA / "README.md").is_file():
        pytest.skip(f"shared data not found at {DATA}")
    out = tmp_path_factory.mktemp("ende")
    args = ["--out", out, "--raw-dir", DATA / "wmt14-sample-tok", "--dev-prefix", DATA / "wmt14-sample-tok" / "val",
            "--test-sgm-dir", DATA / "wmt14" / "sgm", "--vocab-size", 1000, "--workers", 2]
    run_script("prepare-wmt14en2de.sh", *args)
    return out, args


@pytest.fixture(scope="module")
def enfr(tmp_path_factory):
    if not (DATA / "README.md").is_file():
        pytest.skip(f"shared data not found at {DATA}")
    out = tmp_path_factory.mktemp("enfr")
    run_script("prepare-wmt14en2fr.sh", "--out", out,
               "--train-prefix", DATA / "europarl" / "europarl-v7.fr-en.head3000",
               "--dev-prefix", DATA / "multi30k" / "val", "--test-sgm-dir", DATA / "wmt14" / "sgm",
               "--vocab-size", 1000, "--workers", 2)
    return out


@needs_data
def test_ende_end_to_end(ende):
    out, args = ende
    assert (out / "spm.model").is_file()
    fairseq_train_ok(out / "data-bin")
    # test set extracted from the official sgm equals the reference text, line by line
    assert lines(out / "test.raw.en") == lines(DATA / "wmt14" / "newstest2014.en-de.en")
    assert lines(out / "test.raw.de") == lines(DATA / "wmt14" / "newstest2014.en-de.de")
    # the tokenized sample's HTML escapes are gone from the training text
    text = (out / "train.clean.en").read_text(encoding="utf-8")
    assert "&apos;" not in text and "&quot;" not in text and " 's " in text
    report = json.loads((out / "clean-report.json").read_text())
    assert report["total"] == 10000 and report["kept"] + sum(report["dropped"].values()) == 10000
    assert len(lines(out / "train.clean.en")) == len(lines(out / "bpe" / "train.de")) == report["kept"]


@needs_data
def test_second_run_does_nothing(ende):
    out, args = ende
    before = snapshot(out)
    proc = run_script("prepare-wmt14en2de.sh", *args)
    for stage in ["gather", "clean", "spm", "encode", "binarize"]:
        assert f"stage {stage}: already done, skipping" in proc.stdout
    assert "running" not in proc.stdout
    assert snapshot(out) == before


@needs_data
def test_enfr_end_to_end(enfr):
    out = enfr
    fairseq_train_ok(out / "data-bin")
    report = json.loads((out / "clean-report.json").read_text())
    assert report["total"] == 3000 and report["dropped"]["empty"] == 6
    assert lines(out / "test.raw.en") == lines(DATA / "wmt14" / "newstest2014.en-fr.en")
    assert lines(out / "test.raw.fr") == lines(DATA / "wmt14" / "newstest2014.en-fr.fr")
    assert (out / "data-bin" / "dict.en.txt").read_text() == (out / "data-bin" / "dict.fr.txt").read_text()


@needs_data
def test_multi30k(tmp_path):
    out = tmp_path / "m30"
    run_script("prepare-multi30k.sh", "--out", out, "--raw-dir", DATA / "multi30k", "--vocab-size", 1000,
               "--workers", 2)
    for name in ["dict.en.txt", "train.en-de.en.bin", "valid.en-de.de.bin", "test.en-de.de.bin"]:
        assert (out / "data-bin" / name).is_file()
    assert "\u00a0" in (DATA / "multi30k" / "train.de").read_text(encoding="utf-8")
    assert "\u00a0" not in (out / "train.clean.de").read_text(encoding="utf-8")
    assert len(lines(out / "train.clean.de")) == 29000
    assert lines(out / "test.raw.de") == lines(DATA / "multi30k" / "test_2016_flickr.de")
    assert len(lines(out / "bpe" / "valid.en")) == 1014


# -------------------------------------------------------------------------------------- corrupted inputs (real)


def _raw_dir_with(tmp_path, **replace):
    """A --raw-dir for En-De made of symlinks to the shared sample, with some files replaced by given bytes."""
    raw = tmp_path / "raw"
    raw.mkdir()
    for name in ["train.en", "train.de", "val.en", "val.de"]:
        if name not in replace:
            (raw / name).symlink_to(DATA / "wmt14-sample-tok" / name)
    for name, content in replace.items():
        (raw / name).write_bytes(content)
    return raw


def _fails(proc, *needles):
    assert proc.returncode != 0, proc.stdout
    for needle in needles:
        assert needle in proc.stderr, proc.stderr
    assert "stage spm: running" not in proc.stdout


@needs_data
def test_train_with_missing_line_fails(tmp_path):
    data = (DATA / "wmt14-sample-tok" / "train.en").read_bytes()
    raw = _raw_dir_with(tmp_path, **{"train.en": data[: data.rindex(b"\n", 0, len(data) - 1) + 1]})
    proc = run_script("prepare-wmt14en2de.sh", "--out", tmp_path / "o", "--raw-dir", raw,
                      "--test-sgm-dir", DATA / "wmt14" / "sgm", "--vocab-size", 1000, check=False)
    _fails(proc, f"{raw}/train.en has 9999", "train.de has 10000")


@needs_data
def test_truncated_gz_fails(tmp_path):
    full = gzip.compress((DATA / "wmt14-sample-tok" / "train.en").read_bytes())
    raw = _raw_dir_with(tmp_path, **{"train.en.gz": full[: len(full) // 2]})
    (raw / "train.en").unlink(missing_ok=True)
    proc = run_script("prepare-wmt14en2de.sh", "--out", tmp_path / "o", "--raw-dir", raw,
                      "--test-sgm-dir", DATA / "wmt14" / "sgm", "--vocab-size", 1000, check=False)
    _fails(proc, "train.en.gz", "truncated")


@needs_data
def test_invalid_utf8_fails(tmp_path):
    data = bytearray((DATA / "wmt14-sample-tok" / "val.de").read_bytes())
    pos = data.index(b"\n") + 1
    data[pos:pos] = b"\xc3\x28"  # invalid continuation byte at the start of line 2
    raw = _raw_dir_with(tmp_path, **{"val.de": bytes(data)})
    proc = run_script("prepare-wmt14en2de.sh", "--out", tmp_path / "o", "--raw-dir", raw,
                      "--test-sgm-dir", DATA / "wmt14" / "sgm", "--vocab-size", 1000, check=False)
    _fails(proc, "val.de: line 2: invalid UTF-8")


def _sgm_dir_with(tmp_path, ref_text):
    sgm = tmp_path / "sgm"
    sgm.mkdir()
    (sgm / "newstest2014-deen-src.en.sgm").symlink_to(DATA / "wmt14" / "sgm" / "newstest2014-deen-src.en.sgm")
    (sgm / "newstest2014-deen-ref.de.sgm").write_text(ref_text, encoding="utf-8")
    return sgm


@needs_data
@pytest.mark.parametrize("corruption", ["missing_close", "missing_seg", "truncated"])
def test_corrupt_sgm_fails(tmp_path, corruption):
    ref = (DATA / "wmt14" / "sgm" / "newstest2014-deen-ref.de.sgm").read_text(encoding="utf-8")
    if corruption == "missing_close":
        i = ref.index("</seg>", len(ref) // 2)
        ref, needle = ref[:i] + ref[i + len("</seg>"):], "without matching </seg>"
    elif corruption == "missing_seg":
        i = ref.index("<seg", len(ref) // 2)
        ref, needle = ref[:i] + ref[ref.index("\n", i) + 1:], "has 3003 segments but"
    else:
        ref, needle = ref[: ref.index("\n", len(ref) // 2) + 1], "no closing </srcset> or </refset>: file is truncated"
    sgm = _sgm_dir_with(tmp_path, ref)
    proc = run_script("prepare-wmt14en2de.sh", "--out", tmp_path / "o", "--raw-dir", _raw_dir_with(tmp_path),
                      "--test-sgm-dir", sgm, "--vocab-size", 1000, check=False)
    _fails(proc, "newstest2014-deen-ref.de.sgm", needle)


@needs_data
def test_missing_inputs_fail_clearly(tmp_path):
    proc = run_script("prepare-wmt14en2fr.sh", "--out", tmp_path / "o", "--raw-dir", DATA / "multi30k",
                      "--test-sgm-dir", tmp_path, check=False)
    _fails(proc, "newstest2014-fren-src.en.sgm")
    proc = run_script("prepare-multi30k.sh", "--out", tmp_path / "o2", "--raw-dir", DATA / "europarl", check=False)
    _fails(proc, "train.en and")


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
def test_download_resumes_and_rejects_truncated_archives(tmp_path):
    """lib.sh's download(): file:// URLs stand in for statmt.org (no network in tests)."""
    import tarfile

    (tmp_path / "training").mkdir()
    write(tmp_path / "training" / "corpus.en", [f"line {i}" for i in range(50000)])
    good = tmp_path / "good.tgz"
    with tarfile.open(good, "w:gz") as tar:
        tar.add(tmp_path / "training", arcname="training")
    (tmp_path / "bad.tgz").write_bytes(good.read_bytes()[:5000])
    out = tmp_path / "out"
    out.mkdir()
    (out / "good.tgz.part").write_bytes(good.read_bytes()[:3000])  # an interrupted earlier download
    script = f"""
SCRIPT_NAME=t SRC=en TGT=de VOCAB_SIZE=1 ALLOW_LANG_FLAGS=0
usage() {{ :; }}
source {SCRIPTS / 'lib.sh'}
download file://{good} {out}/good.tgz
download file://{good} {out}/good.tgz
extract {out}/good.tgz {out}
download file://{tmp_path}/bad.tgz {out}/bad.tgz
"""
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=_env())
    assert proc.returncode != 0
    assert f"have {out}/good.tgz" in proc.stdout and "Resuming transfer from byte position 3000" in proc.stderr
    assert (out / "good.tgz").read_bytes() == good.read_bytes()
    assert (out / "training" / "corpus.en").is_file()
    assert "bad.tgz.part: downloaded file is corrupt or truncated" in proc.stderr
    assert not (out / "bad.tgz").exists()
