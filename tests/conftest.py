"""Session-wide data for the end-to-end tests: a synthetic corpus (always) and a Multi30k slice (when present).

Both are binarized by the real ``fairseq-preprocess``; the Multi30k slice goes through sentencepiece first, as the
quick start does. ../shared/data is read in place, never copied into the project.
"""
import random

import pytest

from helpers import SHARED_DATA, run_cli


def _write(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def _binarize(raw, out, src="src", tgt="tgt"):
    run_cli("fairseq-preprocess", "--source-lang", src, "--target-lang", tgt, "--trainpref", raw / "train",
            "--validpref", raw / "valid", "--testpref", raw / "test", "--destdir", out, "--joined-dictionary",
            "--workers", "1")
    return out


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory):
    """A learnable toy task (the target is the source reversed) over 24 word types."""
    rng = random.Random(0)
    raw = tmp_path_factory.mktemp("synthetic_raw")
    words = [f"w{i}" for i in range(24)]
    for split, n in (("train", 400), ("valid", 40), ("test", 30)):
        src = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 9))) for _ in range(n)]
        _write(raw / f"{split}.src", src)
        _write(raw / f"{split}.tgt", [" ".join(reversed(s.split())) for s in src])
    return _binarize(raw, tmp_path_factory.mktemp("synthetic_bin"))


@pytest.fixture(scope="session")
def multi30k_data(tmp_path_factory):
    """A slice of Multi30k En-De (3,000 training pairs), joint sentencepiece BPE (1,000), binarized."""
    corpus = SHARED_DATA / "multi30k"
    if not corpus.is_dir():
        pytest.skip(f"{corpus} is absent")
    import sentencepiece as spm

    raw = tmp_path_factory.mktemp("multi30k_raw")
    slices = {"train": ("train", 3000), "valid": ("val", 100), "test": ("test_2016_flickr", 50)}
    text = {}
    for split, (name, n) in slices.items():
        for lang in ("en", "de"):
            with open(corpus / f"{name}.{lang}", encoding="utf-8") as f:
                text[split, lang] = [next(f).strip() for _ in range(n)]
    _write(raw / "spm_input.txt", text["train", "en"] + text["train", "de"])
    spm.SentencePieceTrainer.train(input=str(raw / "spm_input.txt"), model_prefix=str(raw / "spm"),
                                   vocab_size=1000, model_type="bpe", character_coverage=1.0, num_threads=1)
    sp = spm.SentencePieceProcessor(model_file=str(raw / "spm.model"))
    for (split, lang), lines in text.items():
        _write(raw / f"{split}.{lang}", [" ".join(sp.encode(line, out_type=str)) for line in lines])
    data_bin = _binarize(raw, tmp_path_factory.mktemp("multi30k_bin"), src="en", tgt="de")
    return {"bin": data_bin, "raw": raw, "spm": raw / "spm.model", "test_size": 50}
