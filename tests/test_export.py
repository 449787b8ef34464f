"""fairseq-admin-export: the exported checkpoint is fairseq's own transformer with the plugin model's outputs.

Stock fairseq runs in a subprocess that never imports fairseq_admin (tests/stock_fairseq_outputs.py; asserted), on
random weights (every parameter and ω drawn at random, so a fold that misses a tensor shows) and on weights after a
few real training updates on the Multi30k slice (skipped without it). Teacher-forced log-probabilities must agree
within 1e-5 (float32) and beam-search hypotheses must be equal; the max abs differences are printed per case
(``pytest -s``).
"""
import argparse
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from helpers import ROOT, TINY, USER_DIR, VENV_BIN, run_cli
from fairseq import options, tasks
from fairseq.dataclass.utils import convert_namespace_to_omegaconf
from fairseq.sequence_generator import SequenceGenerator

from fairseq_admin import checkpoint_safety
from fairseq_admin.cli import export

STOCK_SCRIPT = Path(__file__).with_name("stock_fairseq_outputs.py")
TOLERANCE = 1e-5
BEAM, MAX_LEN_B = 4, 20

# (case name, --arch, extra options); admin's vector ω is random everywhere (so ω_1 != 1: the embedding fold)
RANDOM_CASES = [
    ("postln", "postln_transformer", []),
    ("preln", "preln_transformer", []),
    ("admin-vector", "admin_transformer", []),
    ("admin-vector-share-all", "admin_transformer", ["--share-all-embeddings"]),
    ("admin-vector-share-dec-io-learned-pos", "admin_transformer", ["--share-decoder-input-output-embed",
                                                                     "--encoder-learned-pos", "--decoder-learned-pos"]),
    ("admin-vector-layernorm-embedding", "admin_transformer", ["--layernorm-embedding"]),
    ("admin-scalar", "admin_transformer", ["--admin-omega", "scalar", "--share-all-embeddings"]),
    ("deepnorm", "deepnorm_transformer", ["--share-all-embeddings"]),
    ("lns", "lns_transformer", ["--share-all-embeddings"]),  # 1/sqrt(l) folded into the pre-norms' γ and β
]


def _randomize(model, seed):
    """Every parameter and ω drawn at random (LayerNorm gains around 1, ω positive and not 1)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        omega_buffers = [(n, b) for n, b in model.named_buffers() if n.endswith("residual.omega")]  # scalar ω
        for name, tensor in list(model.named_parameters()) + omega_buffers:  # not fairseq's `version` buffers
            noise = torch.randn(tensor.shape, generator=g)
            if name.endswith("residual.omega"):
                tensor.copy_(torch.empty(tensor.shape).uniform_(0.5, 2.0, generator=g))
            elif "norm" in name and name.endswith("weight"):
                tensor.copy_(1 + 0.3 * noise)
            else:
                tensor.copy_(0.3 * noise)
    if hasattr(model, "omega_ready"):
        model.omega_ready.fill_(True)


def _save_like_fairseq_train(model, args, path):
    """The checkpoint layout fairseq's trainer writes (cfg a plain dict, cfg["model"] the argparse Namespace)."""
    cfg = OmegaConf.to_container(convert_namespace_to_omegaconf(args), resolve=True, enum_to_str=True)
    state = {"args": None, "cfg": cfg, "model": model.state_dict(),
             "optimizer_history": [{"criterion_name": "CrossEntropyCriterion", "optimizer_name": "Adam",
                                    "lr_scheduler_state": {}, "num_updates": 0}],
             "extra_state": {"epoch": 1}}
    torch.save(state, path)


def _plugin_model(path, data):
    import fairseq_admin  # noqa: F401
    from fairseq import checkpoint_utils

    models, _cfg, task = checkpoint_utils.load_model_ensemble_and_task([str(path)], arg_overrides={"data": str(data)})
    return models[0].eval(), task


def _batches(task, split="test", max_sentences=25):
    task.load_dataset(split)
    dataset = task.dataset(split)
    itr = task.get_batch_iterator(dataset, max_sentences=max_sentences, seed=1).next_epoch_itr(shuffle=False)
    return [sample["net_input"] for sample in itr]


def _plugin_outputs(model, task, batches):
    generator = SequenceGenerator([model], task.target_dictionary, beam_size=BEAM, max_len_b=MAX_LEN_B)
    log_probs, hypotheses = [], []
    with torch.no_grad():
        for net_input in batches:
            log_probs.append(model.get_normalized_probs(model(**net_input), log_probs=True))
            hypotheses.append([h[0]["tokens"].tolist() for h in generator.generate([model], {"net_input": net_input})])
    return log_probs, hypotheses


def _stock_outputs(tmp_path, data, checkpoints, batches):
    request, result = tmp_path / "request.pt", tmp_path / "result.pt"
    torch.save({"data": str(data), "checkpoints": [str(c) for c in checkpoints], "batches": batches, "beam": BEAM,
                "max_len_b": MAX_LEN_B}, request)
    proc = subprocess.run([sys.executable, str(STOCK_SCRIPT), str(request), str(result)], capture_output=True,
                          text=True, cwd=str(tmp_path), timeout=600, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = torch.load(result, weights_only=True)
    assert out["plugin_modules"] == [], out["plugin_modules"]
    return out["results"]


def _compare(name, plugin, stock):
    (plugin_lp, plugin_hyps), stock_lp, stock_hyps = plugin, stock["log_probs"], stock["hypotheses"]
    assert stock["arch"].startswith("fairseq.models.transformer"), stock["arch"]
    diff = max((a - b).abs().max().item() for a, b in zip(plugin_lp, stock_lp))
    print(f"export {name}: max |Δ log-prob| = {diff:.2e}")
    assert diff <= TOLERANCE, f"{name}: log-probabilities differ by {diff:.3e}"
    assert plugin_hyps == stock_hyps, f"{name}: beam-search hypotheses differ"
    return diff


def _export(src, dst, *extra):
    lines = export.main(["--checkpoint", str(src), "--out", str(dst), *map(str, extra)])
    assert Path(dst).is_file()
    return lines


@pytest.fixture(scope="module")
def random_checkpoints(synthetic_data, tmp_path_factory):
    """{case: (plugin checkpoint, exported checkpoint)} with random weights on the synthetic task."""
    import fairseq_admin  # noqa: F401

    out_dir = tmp_path_factory.mktemp("export_random")
    cases = {}
    for seed, (name, arch, extra) in enumerate(RANDOM_CASES):
        argv = [str(synthetic_data), "--task", "translation", "--arch", arch, "--encoder-layers", "2",
                "--decoder-layers", "2", *TINY, *extra]
        args = options.parse_args_and_arch(options.get_training_parser(), argv)
        task = tasks.setup_task(args)
        model = task.build_model(args)
        _randomize(model, seed)
        src, dst = out_dir / f"{name}.pt", out_dir / f"{name}.export.pt"
        _save_like_fairseq_train(model, args, src)
        _export(src, dst, "--data", synthetic_data)
        cases[name] = (src, dst)
    return cases


def test_random_weights_stock_fairseq_matches_plugin(random_checkpoints, synthetic_data, tmp_path):
    first_model, task = _plugin_model(random_checkpoints["postln"][0], synthetic_data)
    batches = _batches(task)
    stock = _stock_outputs(tmp_path, synthetic_data, [dst for _, dst in random_checkpoints.values()], batches)
    for name, (src, dst) in random_checkpoints.items():
        model, task = _plugin_model(src, synthetic_data)
        _compare(name, _plugin_outputs(model, task, batches), stock[str(dst)])


def test_exported_config_is_stock(random_checkpoints):
    """No plugin option, arch, task or user-dir in the config; readable by torch's safe loader as is (no allow-list
    needed: plain dicts, lists, primitives and one OrderedDict); the fold untied what it had to."""
    state = torch.load(random_checkpoints["admin-vector-share-all"][1], weights_only=True)
    assert state["args"] is None
    model = state["cfg"]["model"]
    assert model.arch == model["arch"] == "transformer" and model["task"] == "translation"
    assert state["cfg"]["task"]["_name"] == "translation" and state["cfg"]["common"]["user_dir"] is None
    plugin_options = {"residual_scheme", "layer_init", "admin_init", "admin_omega", "encoder_word_dropout",
                      "decoder_word_dropout", "no_b2t_init_scale"}
    assert not plugin_options & set(model), plugin_options & set(model)
    assert not model["share_all_embeddings"] and model["share_decoder_input_output_embed"] is False
    assert model["encoder_learned_pos"] and model["decoder_learned_pos"]
    assert not any(".residual." in k for k in state["model"]) and "omega_ready" not in state["model"]
    unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(str(random_checkpoints["admin-vector"][1]))
    assert unsafe == [], unsafe


def test_cheap_case_when_first_omega_is_one(random_checkpoints, tmp_path):
    """ω_1 = 1 (a profiled scalar Admin): shared embeddings and sinusoidal positions stay, no size cost."""
    state = checkpoint_safety.load_checkpoint(random_checkpoints["admin-scalar"][0])
    for stack in ("encoder", "decoder"):
        state["model"][f"{stack}.layers.0.residual.omega"] = state["model"][f"{stack}.layers.0.residual.omega"].clone()
        state["model"][f"{stack}.layers.0.residual.omega"][0] = 1.0
    out, lines = export.export_state(state)
    assert out["fairseq_admin_export"]["added_parameters"] == 0, lines
    model = out["cfg"]["model"]
    assert model["share_all_embeddings"] and not model["encoder_learned_pos"] and not model["decoder_learned_pos"]
    assert "encoder.embed_positions.weight" not in out["model"]


def test_export_is_deterministic(random_checkpoints, synthetic_data, tmp_path):
    """Exporting again (another file name, the same input and options) gives the same bytes."""
    src, first = random_checkpoints["admin-vector"]
    again = tmp_path / "again.pt"
    _export(src, again, "--data", synthetic_data)
    assert again.read_bytes() == first.read_bytes()


def test_b2t_is_refused_in_one_line(synthetic_data, tmp_path, capsys):
    import fairseq_admin  # noqa: F401

    argv = [str(synthetic_data), "--task", "translation", "--arch", "b2t_transformer", "--encoder-layers", "1",
            "--decoder-layers", "1", *TINY]
    args = options.parse_args_and_arch(options.get_training_parser(), argv)
    model = tasks.setup_task(args).build_model(args)
    src = tmp_path / "b2t.pt"
    _save_like_fairseq_train(model, args, src)
    capsys.readouterr()  # what building and saving printed
    assert export.cli_main(["--checkpoint", str(src), "--out", str(tmp_path / "out.pt")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "b2t cannot be exported" in err, err
    assert not (tmp_path / "out.pt").exists()


@pytest.mark.parametrize("argv, message", [
    (["--checkpoint", "{missing}", "--out", "{out}"], "no such file"),
    (["--checkpoint", "{src}", "--out", "{src}"], "is one of the inputs"),
    (["--checkpoint", "{src}", "--out", "{under_file}"], "is not a directory"),  # a missing directory is created
    (["--checkpoint", "{src}", "--out", "{out}", "--data", "{missing}"], "no such directory"),
    (["--checkpoint", "{src}", "--out", "{out}", "--sentencepiece-model", "{missing}"], "no such file"),
    (["--checkpoint", "{garbage}", "--out", "{out}"], "not a torch checkpoint"),
])
def test_bad_input_one_line_error(random_checkpoints, tmp_path, capsys, argv, message):
    garbage = tmp_path / "garbage.pt"
    garbage.write_text("not a checkpoint")
    paths = {"missing": tmp_path / "missing", "out": tmp_path / "out.pt", "src": random_checkpoints["postln"][0],
             "under_file": garbage / "out.pt", "garbage": garbage}
    assert export.cli_main([a.format(**paths) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fairseq-admin-export: error:") and "\n" not in err and message in err, err
    assert not paths["out"].exists()


def test_wrong_dictionaries_refused(random_checkpoints, multi30k_data, tmp_path, capsys):
    assert export.cli_main(["--checkpoint", str(random_checkpoints["postln"][0]), "--out", str(tmp_path / "o.pt"),
                            "--data", str(multi30k_data["bin"])]) == 2
    assert "not this model's dictionaries" in capsys.readouterr().err


# ---- trained weights: real fairseq-train updates on the Multi30k slice ---------------------------------------------
TRAINED_CASES = [
    ("postln", ["--arch", "postln_transformer", "--task", "translation"]),
    ("preln", ["--arch", "preln_transformer", "--task", "translation"]),
    ("admin-vector-profiled", ["--arch", "admin_transformer", "--task", "admin_translation"]),
    ("admin-scalar-profiled", ["--arch", "admin_transformer", "--task", "admin_translation", "--admin-omega",
                               "scalar"]),
    ("admin-vector-O(logn)", ["--arch", "admin_transformer", "--task", "translation", "--admin-init", "O(logn)"]),
    ("deepnorm", ["--arch", "deepnorm_transformer", "--task", "translation"]),
    ("lns", ["--arch", "lns_transformer", "--task", "translation"]),
]
TRAIN = ["--user-dir", USER_DIR, "--encoder-layers", "2", "--decoder-layers", "2", *TINY, "--share-all-embeddings",
         "--optimizer", "adam", "--lr", "0.003", "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "4",
         "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1", "--max-tokens", "2000",
         "--max-update", "12", "--cpu", "--num-workers", "0", "--no-progress-bar", "--seed", "1",
         "--no-epoch-checkpoints", "--no-save-optimizer-state", "--disable-validation"]


@pytest.fixture(scope="module")
def trained_checkpoints(multi30k_data, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("export_trained")
    cases = {}
    for name, argv in TRAINED_CASES:
        save_dir = out_dir / name
        run_cli("fairseq-train", multi30k_data["bin"], *argv, *TRAIN, "--save-dir", save_dir)
        src, dst = save_dir / "checkpoint_last.pt", out_dir / f"{name}.export.pt"
        _export(src, dst, "--data", multi30k_data["bin"], "--sentencepiece-model", multi30k_data["spm"])
        cases[name] = (src, dst)
    return cases


def test_trained_weights_stock_fairseq_matches_plugin(trained_checkpoints, multi30k_data, tmp_path):
    data = multi30k_data["bin"]
    _, task = _plugin_model(trained_checkpoints["postln"][0], data)
    batches = _batches(task)
    stock = _stock_outputs(tmp_path, data, [dst for _, dst in trained_checkpoints.values()], batches)
    for name, (src, dst) in trained_checkpoints.items():
        cfg = torch.load(dst, weights_only=True)["cfg"]
        assert cfg["task"]["_name"] == cfg["model"]["task"] == "translation", name
        model, task = _plugin_model(src, data)
        _compare(name, _plugin_outputs(model, task, batches), stock[str(dst)])
    # the profiled scalar Admin's ω_1 is a fixed 1: the cheap export (no untying)
    cheap = torch.load(trained_checkpoints["admin-scalar-profiled"][1], weights_only=True)
    assert cheap["fairseq_admin_export"]["added_parameters"] == 0 and cheap["cfg"]["model"]["share_all_embeddings"]
    assert cheap["cfg"]["bpe"]["sentencepiece_model"] == str(Path(multi30k_data["spm"]).resolve())


def _hypotheses(generate_stdout):
    return sorted(line.split("\t")[0] + "\t" + line.split("\t")[2] for line in generate_stdout.splitlines()
                  if line.startswith("H-"))


def test_plain_fairseq_generate_on_export(trained_checkpoints, multi30k_data):
    """`fairseq-generate DATA --path OUT.pt` without --user-dir gives the plugin's hypotheses (admin, vector ω)."""
    src, dst = trained_checkpoints["admin-vector-profiled"]
    common = [multi30k_data["bin"], "--gen-subset", "test", "--beam", "4", "--batch-size", "16",
              "--required-batch-size-multiple", "1", "--cpu"]
    plugin = run_cli("fairseq-generate", *common, "--path", src, "--user-dir", USER_DIR)
    stock = run_cli("fairseq-generate", *common, "--path", dst)
    assert len(_hypotheses(stock.stdout)) == multi30k_data["test_size"]
    assert _hypotheses(plugin.stdout) == _hypotheses(stock.stdout)


# ---- CTranslate2 (the optional `deploy` extra) ---------------------------------------------------------------------
CT2_TOLERANCE = 1e-4


def _fairseq_token_log_probs(model, task, batches):
    """Per sentence: (source tokens, target tokens, fairseq's log-probability of each target token and of </s>)."""
    src_dict, tgt_dict = task.source_dictionary, task.target_dictionary
    out = []
    with torch.no_grad():
        for net_input in batches:
            lprobs = model.get_normalized_probs(model(**net_input), log_probs=True)
            prev = net_input["prev_output_tokens"]
            for i in range(prev.size(0)):
                src = [src_dict[t] for t in net_input["src_tokens"][i].tolist() if t not in (src_dict.pad(),
                                                                                              src_dict.eos())]
                tgt_ids = [t for t in prev[i, 1:].tolist() if t != tgt_dict.pad()] + [tgt_dict.eos()]
                scores = lprobs[i, torch.arange(len(tgt_ids)), torch.tensor(tgt_ids)].tolist()
                out.append((src, [tgt_dict[t] for t in tgt_ids[:-1]], scores))
    return out


def test_ctranslate2_converter_and_scores(random_checkpoints, synthetic_data, tmp_path):
    """CTranslate2's own ct2-fairseq-converter converts the exported checkpoints (no --user_dir); score_batch gives
    fairseq's per-token log-probabilities."""
    ctranslate2 = pytest.importorskip("ctranslate2")
    from fairseq import checkpoint_utils

    for name in ("postln", "preln", "admin-vector-share-all", "admin-vector-share-dec-io-learned-pos", "deepnorm",
                 "lns"):
        exported = random_checkpoints[name][1]
        model_dir = tmp_path / name
        run_cli("ct2-fairseq-converter", "--model_path", exported, "--data_dir", synthetic_data, "--output_dir",
                model_dir)
        models, _cfg, task = checkpoint_utils.load_model_ensemble_and_task([str(exported)])
        expected = _fairseq_token_log_probs(models[0].eval(), task, _batches(task))
        translator = ctranslate2.Translator(str(model_dir), device="cpu", compute_type="float32", intra_threads=1)
        results = translator.score_batch([src for src, _, _ in expected], [tgt for _, tgt, _ in expected])
        diff = max(abs(a - b) for (_, _, scores), r in zip(expected, results) for a, b in zip(scores, r.log_probs))
        assert all(len(r.log_probs) == len(s) for (_, _, s), r in zip(expected, results))
        print(f"ctranslate2 {name}: max |Δ log-prob| vs fairseq = {diff:.2e}")
        assert diff <= CT2_TOLERANCE, f"{name}: CTranslate2 log-probabilities differ by {diff:.3e}"
