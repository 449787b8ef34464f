"""The published training recipes (fairseq_admin/recipes.py) and their launcher (scripts/train.sh).

Every published setting is run through the real `scripts/train.sh --dry-run` for 1, 2, 4 and 8 GPUs, and the printed
fairseq-train command is checked flag by flag against the table and against the papers' numbers from
the papers and their official scripts (docs/methods.md) (written out again below, so that a typo in the table is caught). One test hands every command to
fairseq's own argument parser with the plugin loaded, so every flag name is one fairseq-train accepts.
"""
import importlib.util
import math
import os
import shlex
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_SH = os.path.join(ROOT, "scripts", "train.sh")


def _load_recipes():
    # by file: `import fairseq_admin.recipes` would import the package, hence torch and fairseq (~10 s)
    spec = importlib.util.spec_from_file_location("_recipes_under_test", os.path.join(ROOT, "fairseq_admin", "recipes.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


recipes = _load_recipes()
SETTINGS = recipes.SETTINGS
GPU_COUNTS = (1, 2, 4, 8)

# The papers' numbers, from the papers and their official scripts (docs/methods.md) and the official scripts, independently of the table.
# key: (pair, scheme, layers, source) -> expected values
PAPER = {}
for _scheme in ("postln", "preln", "admin"):
    for _l in (6, 12, 18):
        PAPER[("en-de", _scheme, f"{_l}-{_l}", "liu2020")] = dict(
            lr=1e-3, warmup=8000, dropout=0.1, clip=0.0, tokens=4 * 8192, beam=4, lenpen=0.6)
    PAPER[("en-fr", _scheme, "60-12", "liu2020b")] = dict(
        lr=7e-4, warmup=8000, dropout=0.1, clip=0.0, tokens=16 * 5000 * 16, beam=5, lenpen=0.8)
    PAPER[("de-en", _scheme, "6-6", "liu2020")] = dict(
        lr=7e-4, warmup=6000, dropout=0.3, clip=0.0, tokens=4096, beam=5, lenpen=1.0)
# DeepNorm has no published MT recipe in code (recipes.py DEEPNORM_NOTE): it takes the B2T 18L row's, no BLEU
for _scheme, _l, _drop in (("b2t", 6, 0.3), ("b2t", 18, 0.5), ("preln", 18, 0.5), ("deepnorm", 18, 0.5)):
    PAPER[("en-de", _scheme, f"{_l}-{_l}", "takase2023")] = dict(
        lr=1e-3, warmup=4000, dropout=_drop, clip=0.1, tokens=8 * 3584 * 16, beam=4, lenpen=0.6, max_update=50000)
# T-Fixup, layer6ai-labs/T-Fixup Train_IWSLT_TFixup_example.sh:13-37: no warm-up (inverse_sqrt_nowarmup, decay period
# 4000), dropout 0.5, no --clip-norm given, so the fork's fairseq 0.9 default 25 (fairseq/options.py:388), 1 GPU x 4000
# tokens, 300 epochs; InferenceIWSLT.py: 10 checkpoints averaged, beam 4, lenpen 0.3; README.md:45: 35.73
PAPER[("de-en", "t_fixup", "6-6", "huang2020")] = dict(
    lr=5e-4, warmup=0, dropout=0.5, clip=25.0, tokens=4000, beam=4, lenpen=0.3, max_epoch=300, decay_period=4000)
NO_WARMUP = {("de-en", "t_fixup", "6-6", "huang2020")}  # inverse_sqrt_nowarmup, decoder in/out tables tied
PUBLISHED_BLEU = {("en-de", "admin", "6-6", "liu2020"): 27.84, ("en-de", "admin", "18-18", "liu2020"): 28.91,
                  ("en-fr", "admin", "60-12", "liu2020b"): 43.8, ("de-en", "postln", "6-6", "liu2020"): 35.64,
                  ("de-en", "preln", "6-6", "liu2020"): 35.50, ("de-en", "admin", "6-6", "liu2020"): 35.67,
                  ("en-de", "b2t", "18-18", "takase2023"): 28.25, ("en-de", "preln", "18-18", "takase2023"): 27.36,
                  ("de-en", "t_fixup", "6-6", "huang2020"): 35.73}


def key(s):
    return (s.pair, s.scheme, s.layers, s.source)


def run_train_sh(*args, check=True):
    proc = subprocess.run(["bash", TRAIN_SH, *args], capture_output=True, text=True, cwd=ROOT, timeout=60)
    if check:
        assert proc.returncode == 0, f"train.sh {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}"
    return proc


def printed_argv(proc):
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected exactly the command on stdout, got:\n{proc.stdout}"
    return shlex.split(lines[0])


def flags(argv):
    """{flag: value} (last occurrence wins, as in argparse); valueless flags map to True."""
    out = {}
    i = 0
    while i < len(argv):
        tok = argv[i]
        if tok.startswith("--"):
            if i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                out[tok] = argv[i + 1]
                i += 2
                continue
            out[tok] = True
        i += 1
    return out


def selector(s):
    return ["--pair", s.pair, "--scheme", s.scheme, "--layers", s.layers, "--source", s.source]


# ---------------------------------------------------------------------------------------------------------------
def test_table_matches_the_papers():
    assert {key(s) for s in SETTINGS} == set(PAPER), "the table's rows differ from the published settings"
    for s in SETTINGS:
        want = PAPER[key(s)]
        assert (s.lr, s.warmup_updates, s.dropout, s.clip_norm) == (
            want["lr"], want["warmup"], want["dropout"], want["clip"]), s.name
        assert s.tokens_per_update == want["tokens"], s.name
        assert (s.beam, s.lenpen, s.avg_checkpoints) == (want["beam"], want["lenpen"], 10), s.name
        assert s.adam_betas == (0.9, 0.98) and s.label_smoothing == 0.1 and s.fp16, s.name
        if key(s) in NO_WARMUP:
            assert s.lr_scheduler == "inverse_sqrt_nowarmup" and s.decay_period == want["decay_period"], s.name
            assert not s.share_all_embeddings and s.share_decoder_input_output_embed, s.name
            assert s.max_epoch == want["max_epoch"] and s.max_update is None, s.name
        else:
            assert s.lr_scheduler == "inverse_sqrt" and s.warmup_init_lr == 1e-7 and s.share_all_embeddings, s.name
        assert s.max_update is not None or s.max_epoch is not None, s.name
        if "max_update" in want:
            assert s.max_update == want["max_update"], s.name
        assert s.bleu == PUBLISHED_BLEU.get(key(s)), s.name
    assert len({key(s) for s in SETTINGS}) == len(SETTINGS), "duplicate rows"


@pytest.mark.parametrize("gpus", GPU_COUNTS)
@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: f"{s.pair}-{s.scheme}-{s.layers}-{s.source}")
def test_dry_run_command_matches_table(setting, gpus, tmp_path):
    s = setting
    save = str(tmp_path / "ckpt")
    proc = run_train_sh(*selector(s), "--gpus", str(gpus), "--data", "DATA", "--save-dir", save, "--dry-run")
    argv = printed_argv(proc)
    assert argv[0] == "fairseq-train" and argv[1] == "DATA"
    f = flags(argv[2:])
    assert f["--arch"] == f"{s.scheme}_{s.base_arch}"
    assert f["--task"] == "translation"  # Admin profiles inside the model under any task
    assert os.path.samefile(f["--user-dir"], os.path.join(ROOT, "fairseq_admin"))
    assert (f["--source-lang"], f["--target-lang"]) == tuple(s.pair.split("-"))
    assert (int(f["--encoder-layers"]), int(f["--decoder-layers"])) == (s.encoder_layers, s.decoder_layers)
    assert float(f["--lr"]) == s.lr == PAPER[key(s)]["lr"]
    if key(s) in NO_WARMUP:  # T-Fixup's scheduler has no warm-up options (fairseq would refuse them)
        assert f["--lr-scheduler"] == "inverse_sqrt_nowarmup"
        assert int(f["--decay-period"]) == PAPER[key(s)]["decay_period"]
        assert "--warmup-updates" not in f and "--warmup-init-lr" not in f
        assert f["--share-decoder-input-output-embed"] is True and "--share-all-embeddings" not in f
    else:
        assert f["--lr-scheduler"] == "inverse_sqrt"
        assert int(f["--warmup-updates"]) == s.warmup_updates
        assert float(f["--warmup-init-lr"]) == s.warmup_init_lr
        assert f["--share-all-embeddings"] is True
    assert float(f["--dropout"]) == s.dropout
    assert float(f["--clip-norm"]) == s.clip_norm
    assert float(f["--weight-decay"]) == s.weight_decay
    assert float(f["--label-smoothing"]) == 0.1 and f["--criterion"] == "label_smoothed_cross_entropy"
    # the official scripts' optimizer: RAdam in every Transformer-Clinic command, Adam in B2T's README
    assert f["--optimizer"] == ("radam" if s.source.startswith("liu2020") else "adam")
    # fairseq 0.9's --min-lr 1e-09 (a stop criterion) is fairseq main's --stop-min-lr; IWSLT's script has none
    assert f.get("--stop-min-lr") == (None if s.pair == "de-en" else "1e-09")
    # Transformer-Clinic's baselines and Admin start from fairseq 0.9's layers; B2T's code from fairseq main's
    assert f.get("--layer-init") == ("fairseq-0.9" if s.source.startswith("liu2020") else None)
    # the B2T 18L recipe's word dropout (--sampling-method worddrop --enc/dec-replace-rate 0.1)
    expected_word_dropout = "0.1" if s.source == "takase2023" and s.encoder_layers == 18 else None
    assert f.get("--encoder-word-dropout") == f.get("--decoder-word-dropout") == expected_word_dropout
    assert tuple(float(x) for x in f["--adam-betas"].strip("()").split(",")) == (0.9, 0.98)
    assert f["--fp16"] is True
    assert f.get("--max-update") == (str(s.max_update) if s.max_update else None)
    assert f.get("--max-epoch") == (str(s.max_epoch) if s.max_epoch else None)
    assert f["--save-dir"] == save
    # the paper's tokens per update, whatever the GPU count, without a bigger per-GPU batch than the paper's
    world, max_tokens, freq = int(f["--distributed-world-size"]), int(f["--max-tokens"]), int(f["--update-freq"])
    assert world == gpus
    assert max_tokens <= s.published_max_tokens and freq >= 1
    assert math.isclose(world * max_tokens * freq, PAPER[key(s)]["tokens"], rel_tol=0.01)
    if s.scheme == "admin":
        assert f["--admin-profile-save"] == os.path.join(save, "profile.ratio.init")
    else:
        assert "--admin-profile-save" not in f
    assert "tokens per update" in proc.stderr


def test_published_gpu_count_reproduces_the_papers_batch():
    for s in SETTINGS:
        argv, plan = recipes.build_train_command(s, "DATA", "SAVE", s.published_gpus)
        assert (plan.max_tokens, plan.update_freq) == (s.published_max_tokens, s.published_update_freq), s.name


def test_multi_node_torchrun_command():
    s = recipes.find_setting("en-de", "admin", "18-18")
    proc = run_train_sh("--pair", "en-de", "--scheme", "admin", "--layers", "18-18", "--nodes", "2", "--gpus", "8",
                        "--launcher", "torchrun", "--node-rank", "1", "--master-addr", "node0", "--dry-run")
    argv = printed_argv(proc)
    assert argv[:11] == ["torchrun", "--nnodes", "2", "--nproc-per-node", "8", "--node-rank", "1",
                         "--master-addr", "node0", "--master-port", "29500"]
    assert os.path.basename(argv[11]) == "fairseq-train"
    f = flags(argv[13:])
    assert int(f["--distributed-world-size"]) == 16
    assert 16 * int(f["--max-tokens"]) * int(f["--update-freq"]) == s.tokens_per_update


def test_multi_node_slurm_and_refusals():
    argv = printed_argv(run_train_sh("--pair", "en-de", "--scheme", "b2t", "--layers", "18-18", "--nodes", "2",
                                     "--gpus", "8", "--launcher", "slurm", "--dry-run"))
    assert argv[:7] == ["srun", "--nodes", "2", "--ntasks-per-node", "8", "--gpus-per-node", "8"]
    f = flags(argv)
    assert int(f["--distributed-world-size"]) == 16 and "--distributed-port" in f
    assert 16 * int(f["--max-tokens"]) * int(f["--update-freq"]) == 8 * 3584 * 16
    # several nodes need a multi-node launcher; torchrun on several nodes needs the master's address
    proc = run_train_sh("--pair", "en-de", "--scheme", "b2t", "--layers", "18-18", "--nodes", "2", "--gpus", "8",
                        "--dry-run", check=False)
    assert proc.returncode != 0 and "--launcher torchrun" in proc.stderr
    env_has_master = "MASTER_ADDR" in os.environ
    if not env_has_master:
        proc = run_train_sh("--pair", "en-de", "--scheme", "b2t", "--layers", "18-18", "--nodes", "2", "--gpus", "8",
                            "--launcher", "torchrun", "--dry-run", check=False)
        assert proc.returncode != 0 and "--master-addr" in proc.stderr


def test_unknown_setting_lists_the_published_ones():
    proc = run_train_sh("--pair", "en-de", "--scheme", "admin", "--layers", "24-24", "--dry-run", check=False)
    assert proc.returncode != 0 and proc.stdout == ""
    assert "no published setting" in proc.stderr
    for s in SETTINGS:
        assert s.selector() in proc.stderr
    proc = run_train_sh("--pair", "en-de", "--scheme", "preln", "--layers", "18-18", "--dry-run", check=False)
    assert proc.returncode != 0 and "--source liu2020" in proc.stderr and "--source takase2023" in proc.stderr


def test_extra_args_pass_through_last():
    extra = ["--patience", "5", "--lr", "5e-4", "--wandb-project", "my project", "--cpu"]
    proc = run_train_sh("--pair", "en-de", "--scheme", "b2t", "--layers", "6-6", "--gpus", "2", "--no-fp16",
                        "--dry-run", "--", *extra)
    argv = printed_argv(proc)
    assert argv[-len(extra):] == extra
    assert flags(argv)["--lr"] == "5e-4"  # the last occurrence wins in fairseq's argparse
    assert "--lr after `--` overrides" in proc.stderr
    assert "--fp16" not in argv
    # flags that would break the tokens per update are refused
    for bad in (["--update-freq", "2"], ["--max-tokens", "4096"], ["--distributed-world-size", "3"],
                ["--arch=transformer"]):
        proc = run_train_sh("--pair", "en-de", "--scheme", "b2t", "--layers", "6-6", "--dry-run", "--", *bad,
                            check=False)
        assert proc.returncode != 0 and bad[0].split("=")[0] in proc.stderr
    # Admin: loading a saved profile replaces the recipe's --admin-profile-save (the task refuses both)
    argv = printed_argv(run_train_sh("--pair", "en-de", "--scheme", "admin", "--layers", "6-6", "--dry-run", "--",
                                     "--admin-profile-load", "p.init"))
    assert "--admin-profile-save" not in argv and argv[-2:] == ["--admin-profile-load", "p.init"]


def test_max_tokens_that_cannot_match_is_a_clear_error():
    proc = run_train_sh("--pair", "en-de", "--scheme", "admin", "--layers", "6-6", "--gpus", "4",
                        "--max-tokens", "3000", "--dry-run", check=False)
    assert proc.returncode != 0 and "cannot match" in proc.stderr and "Use --max-tokens 2731" in proc.stderr
    argv = printed_argv(run_train_sh("--pair", "en-de", "--scheme", "admin", "--layers", "6-6", "--gpus", "4",
                                     "--max-tokens", "2731", "--dry-run"))
    f = flags(argv)
    assert (f["--max-tokens"], f["--update-freq"]) == ("2731", "3")
    # a given --max-tokens that fits is kept, only --update-freq changes
    argv = printed_argv(run_train_sh("--pair", "en-de", "--scheme", "b2t", "--layers", "18-18", "--gpus", "4",
                                     "--max-tokens", "4096", "--dry-run"))
    f = flags(argv)
    assert f["--max-tokens"] == "4096" and 4 * 4096 * int(f["--update-freq"]) == pytest.approx(458752, rel=0.03)


def test_plan_batch():
    assert recipes.plan_batch(32768, 3, None, 8192).tokens_per_update == pytest.approx(32768, rel=1e-3)
    plan = recipes.plan_batch(458752, 1, None, 3584)
    assert (plan.max_tokens, plan.update_freq) == (3584, 128)
    with pytest.raises(recipes.RecipeError, match="--max-tokens"):
        recipes.plan_batch(32768, 8, 8192)  # 65,536 tokens with update-freq 1 already: twice the paper's


def test_help_and_list():
    proc = run_train_sh("--help")
    assert proc.returncode == 0
    for text in ("--pair", "--dry-run", "torchrun --nnodes 2 --nproc-per-node 8", "--distributed-world-size 16",
                 "srun", "--distributed-port"):
        assert text in proc.stdout
    proc = run_train_sh("--list")
    for s in SETTINGS:
        assert s.arch in proc.stdout
    assert "43.8" in proc.stdout and "458,752" in proc.stdout


def test_commands_parse_with_fairseq_train():
    """Every flag of every recipe is one fairseq-train (with the plugin loaded) accepts."""
    options = pytest.importorskip("fairseq.options")
    from fairseq.models import ARCH_MODEL_REGISTRY

    for s in SETTINGS:
        argv, _ = recipes.build_train_command(s, "DATA", "SAVE", 2)
        assert argv[0] == "fairseq-train"
        parser = options.get_training_parser()
        args = options.parse_args_and_arch(parser, input_args=argv[1:])
        assert s.arch in ARCH_MODEL_REGISTRY, s.arch
        assert args.arch == s.arch and args.encoder_layers == s.encoder_layers and args.lr == [s.lr]
        assert args.update_freq == [int(argv[argv.index("--update-freq") + 1])]
