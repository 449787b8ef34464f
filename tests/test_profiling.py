"""Admin's ω: profiling against a float64 reference, the profile file format, closed forms, and distributed sync."""
import math
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import reference as ref
from fairseq_admin.profiling import apply_profile, profile_model, profile_sizes, read_profile, write_profile
from fairseq_admin.schemes.admin import closed_form_omega
from helpers import build_model, random_batch

DEPTH = (3, 2)


def _admin(*extra, seed=0, layers=DEPTH):
    torch.manual_seed(seed)
    return build_model("admin_transformer", "--dropout", "0", *extra, layers=layers).double()


def _stack_inputs(model, batch):
    """The encoder's and decoder's layer inputs (after embeddings), as fairseq computes them, plus padding masks."""
    pad = model.encoder.padding_idx
    src, prev = batch["src_tokens"], batch["prev_output_tokens"]
    enc_pad = src.eq(pad)
    x, _ = model.encoder.forward_embedding(src)
    x = (x * (1 - enc_pad.unsqueeze(-1).type_as(x))).transpose(0, 1)
    dec = model.decoder
    y = (dec.embed_scale * dec.embed_tokens(prev) + dec.embed_positions(prev)).transpose(0, 1)
    dec_pad = prev.eq(pad)
    return {"enc_x": x.detach(), "enc_pad": enc_pad if enc_pad.any() else None,
            "dec_x": y.detach(), "dec_pad": dec_pad if dec_pad.any() else None}


def _omegas(model):
    return [[layer.residual.omega.detach().clone() for layer in stack.layers] for stack in (model.encoder, model.decoder)]


def test_profiled_omega_equals_reference_running_variance_sums():
    model = _admin()
    batch = random_batch(model.encoder.dictionary, bsz=4, src_len=9, tgt_len=7)
    expected_enc, expected_dec = ref.admin_profile_reference(
        model.encoder.layers, model.decoder.layers, [_stack_inputs(model, batch)])
    enc, dec = profile_model(model, {"net_input": batch})
    assert len(enc) == 2 * DEPTH[0] and len(dec) == 3 * DEPTH[1]
    assert enc[0] == dec[0] == 1.0  # ω_1 = 1 in each stack
    assert enc == pytest.approx(expected_enc, rel=1e-9)
    assert dec == pytest.approx(expected_dec, rel=1e-5)  # fairseq's attention softmax runs in float32
    assert len(set(enc)) == len(enc)  # a real recurrence, not a constant
    # every ω vector holds its profiled scalar, in walk order
    flat = [v for layer in model.encoder.layers for v in layer.residual.omega] + \
           [v for layer in model.decoder.layers for v in layer.residual.omega]
    for vector, value in zip(flat, enc + dec):
        assert torch.all(vector == torch.tensor(value, dtype=vector.dtype))
    assert bool(model.omega_ready)


def _train_mode_reference(model, batch, p, seed):
    """Admin's profiling as Transformer-Clinic runs it: in the first *training* forward, so with dropout on
    (fairseq/fairseq/modules/transformer_layer.py:161 and :519 profile only when ``self.training``; :181, :247, :556,
    :606 and :640 drop the branch output before its Var is taken at :193-194, :258-259, :568-569, :617-618 and
    :651-652), the embeddings dropped too (fairseq/fairseq/models/transformer.py:329). Each mask is drawn here as
    F.dropout draws it on the CPU (a Bernoulli(1 - p) tensor like the input, scaled by 1/(1 - p)), in the order the
    forward pass meets them: the encoder's embeddings, its sublayers bottom to top, then the decoder's."""
    torch.manual_seed(seed)
    drop = lambda t: t * torch.empty_like(t).bernoulli_(1 - p) / (1 - p)
    enc, dec = model.encoder, model.decoder
    src, prev = batch["src_tokens"], batch["prev_output_tokens"]
    pad = enc.padding_idx
    enc_pad = src.eq(pad) if src.eq(pad).any() else None
    dec_pad = prev.eq(pad) if prev.eq(pad).any() else None
    with torch.no_grad():
        x = drop(enc.embed_scale * enc.embed_tokens.weight[src] + enc.embed_positions(src))
        if enc_pad is not None:
            x = x * (~enc_pad).unsqueeze(-1)
        enc_sublayers = []
        for l in enc.layers:
            enc_sublayers += [(lambda h, w, l=l: drop(ref.attention(h, h, l.self_attn, enc_pad)), l.self_attn_layer_norm),
                              (lambda h, w, l=l: drop(ref.ffn(h, l)), l.final_layer_norm)]
        enc_omegas, (enc_out,), _ = ref._profile_walk(enc_sublayers, [x.transpose(0, 1)], [enc_pad])
        y = drop(dec.embed_scale * dec.embed_tokens.weight[prev] + dec.embed_positions(prev))
        dec_sublayers = []
        for l in dec.layers:
            dec_sublayers += [
                (lambda h, w, l=l: drop(ref.attention(h, h, l.self_attn, dec_pad, causal=True)), l.self_attn_layer_norm),
                (lambda h, w, l=l: drop(ref.attention(h, enc_out, l.encoder_attn, enc_pad)), l.encoder_attn_layer_norm),
                (lambda h, w, l=l: drop(ref.ffn(h, l)), l.final_layer_norm)]
        dec_omegas, _, _ = ref._profile_walk(dec_sublayers, [y.transpose(0, 1)], [dec_pad])
    return enc_omegas, dec_omegas


def test_profiling_runs_in_train_mode_with_dropout_as_the_official_code():
    """With --dropout 0.3, the profiled ω equal the train-mode reference (the same dropout masks) and not the
    dropout-free one: profiling in eval mode would give the latter."""
    p = 0.3
    model = _admin("--dropout", str(p))
    model.eval()  # profiling must switch to train mode itself, whatever mode it finds the model in
    batch = random_batch(model.encoder.dictionary, bsz=4, src_len=9, tgt_len=7)
    expected_enc, expected_dec = _train_mode_reference(model, batch, p, seed=11)
    torch.manual_seed(11)
    enc, dec = profile_model(model, {"net_input": batch})
    assert not model.training  # and leaves the mode as it found it
    assert enc == pytest.approx(expected_enc, rel=1e-9)
    assert dec == pytest.approx(expected_dec, rel=1e-5)
    no_dropout_enc, no_dropout_dec = _train_mode_reference(model, batch, 0.0, seed=11)
    assert max(abs(a / b - 1) for a, b in zip(enc + dec, no_dropout_enc + no_dropout_dec)) > 0.05  # dropout matters


def test_profiling_counts_real_tokens_only():
    """More padding around the same sentences changes nothing: the variances cover real tokens only."""
    model = _admin()
    d = model.encoder.dictionary
    batch = random_batch(d, bsz=3, src_len=6, tgt_len=5)
    more_pad = dict(batch)
    extra = torch.full((3, 4), d.pad())
    more_pad["src_tokens"] = torch.cat([extra, batch["src_tokens"]], 1)  # sources are left-padded
    more_pad["prev_output_tokens"] = torch.cat([batch["prev_output_tokens"], extra], 1)  # targets right-padded
    first = profile_model(model, {"net_input": batch})
    second = profile_model(_admin(), {"net_input": more_pad})
    assert second[0] == pytest.approx(first[0], rel=1e-9)
    assert second[1] == pytest.approx(first[1], rel=1e-6)


def test_unprofiled_admin_model_profiles_itself_at_its_first_training_forward():
    """Under any task: the model's own first training forward sets ω, from that batch, and marks it ready; an
    evaluation forward before it changes nothing."""
    model = _admin()
    batch = random_batch(model.encoder.dictionary)
    model.eval()
    model(**batch)
    assert not bool(model.omega_ready)
    expected = profile_model(_admin(), {"net_input": batch})
    model.train()
    model(**batch)
    assert bool(model.omega_ready)
    got = [[layer.residual.omega[i, 0].item() for layer in layers for i in range(len(layer.residual.sublayers))]
           for layers in (model.encoder.layers, model.decoder.layers)]
    assert got[0] == pytest.approx(expected[0], rel=1e-6) and got[1] == pytest.approx(expected[1], rel=1e-6)


def test_a_ready_model_stops_reading_its_flag_until_a_state_dict_is_loaded():
    """Reading omega_ready waits for the GPU: after it was seen True, training forwards no longer read it; loading a
    state dict (a checkpoint not yet profiled) makes the loaded flag count again."""
    model = _admin()
    unprofiled = {k: v.clone() for k, v in model.state_dict().items()}
    batch = random_batch(model.encoder.dictionary)
    model.train()
    model(**batch)
    assert not model.needs_profiling()
    model.omega_ready.fill_(False)  # not read any more
    assert not model.needs_profiling()
    model.load_state_dict(unprofiled)
    assert model.needs_profiling()


def test_profiling_leaves_the_random_state_as_it_found_it():
    """The first update then draws the dropout masks profiling drew, as in the official restart with the same seed."""
    model = _admin("--dropout", "0.1")  # dropout draws random numbers during profiling
    torch.manual_seed(3)
    before = torch.get_rng_state()
    profile_model(model, {"net_input": random_batch(model.encoder.dictionary)})
    assert torch.equal(torch.get_rng_state(), before)


def test_profile_tokens_all_counts_padding_as_the_official_code():
    """--admin-profile-tokens all: np.var over the whole tensor, padding included (Transformer-Clinic
    fairseq/fairseq/modules/transformer_layer.py:193-194), against the float64 reference reading it that way."""
    model = _admin("--admin-profile-tokens", "all")
    batch = random_batch(model.encoder.dictionary, bsz=4, src_len=9, tgt_len=7)
    expected_enc, expected_dec = ref.admin_profile_reference(
        model.encoder.layers, model.decoder.layers, [_stack_inputs(model, batch)], count_padding=True)
    enc, dec = profile_model(model, {"net_input": batch})
    assert enc == pytest.approx(expected_enc, rel=1e-9)
    assert dec == pytest.approx(expected_dec, rel=1e-5)
    real, _ = profile_model(_admin(), {"net_input": batch})
    assert max(abs(a / b - 1) for a, b in zip(enc, real)) > 1e-3  # padding does move ω


def test_profile_file_round_trip_is_bit_for_bit(tmp_path):
    model = _admin().float()
    enc, dec = profile_model(model, {"net_input": random_batch(model.encoder.dictionary)})
    path = tmp_path / "profile.ratio.init"
    write_profile(str(path), enc, dec)
    lines = path.read_text().splitlines()
    assert len(lines) == 2 * DEPTH[0] + 3 * DEPTH[1]
    assert lines[0].startswith("1 ") and lines[2 * DEPTH[0]].startswith("1 ")  # decoder indices restart at 1
    loaded = read_profile(str(path), *profile_sizes(model))
    assert loaded == (enc, dec)  # exact floats
    fresh = _admin(seed=5).float()
    apply_profile(fresh, *loaded)
    for a, b in zip(sum(_omegas(model), []), sum(_omegas(fresh), [])):
        assert torch.equal(a, b)
    assert bool(fresh.omega_ready)


def test_hand_written_transformer_clinic_file_loads(tmp_path):
    # The official code writes "{index} {ratio}" with str() of a numpy float: ints for indices, short floats.
    path = tmp_path / "profile.ratio.init"
    path.write_text("1 1.0\n2 1.4142135623730951\n1 1.0\n2 1.7320508075688772\n3 2.0\n")
    model = _admin(layers=(1, 1))
    enc, dec = read_profile(str(path), *profile_sizes(model))
    assert enc == [1.0, math.sqrt(2)] and dec == [1.0, math.sqrt(3), 2.0]
    apply_profile(model, enc, dec)
    assert torch.all(model.decoder.layers[0].residual.omega[2] == 2.0)


@pytest.mark.parametrize("content, message", [
    ("1 1.0\n2 1.5\n1 1.0\n2 1.5\n", "has 4 lines, but this model needs 5"),
    ("1 1.0\n3 1.5\n1 1.0\n2 1.5\n3 1.2\n", "line 2: expected encoder sublayer index 2, found 3"),
    ("1 1.0\n2 1.5\n1 1.0\n2 1.5\n4 1.2\n", "line 5: expected decoder sublayer index 3, found 4"),
    ("1 1.0\n2 nan\n1 1.0\n2 1.5\n3 1.2\n", "finite and positive"),
    ("1 1.0\n2 -1\n1 1.0\n2 1.5\n3 1.2\n", "finite and positive"),
    ("1 1.0\n2 0\n1 1.0\n2 1.5\n3 1.2\n", "finite and positive"),
    ("1 1.0\n2\n1 1.0\n2 1.5\n3 1.2\n", "line 2: expected '<index> <omega>'"),
    ("1 1.0\n2 1.5 7\n1 1.0\n2 1.5\n3 1.2\n", "line 2: expected '<index> <omega>'"),
])
def test_bad_profile_files_fail_clearly(tmp_path, content, message):
    path = tmp_path / "profile.ratio.init"
    path.write_text(content)
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        read_profile(str(path), 2, 3)


def test_missing_profile_file(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        read_profile(str(tmp_path / "nope"), 2, 3)


@pytest.mark.parametrize("n", [2, 3, 12, 36, 200])
def test_closed_forms_follow_admin_torch(n):
    assert closed_form_omega(n, "O(logn)") == pytest.approx(math.sqrt((n + 1) / math.log(n + 1) - 1), rel=1e-15)
    assert closed_form_omega(n, "O(1)") == pytest.approx(math.sqrt(n), rel=1e-15)
    assert closed_form_omega(n, "O(n)") == 1.0


def test_closed_form_init_sets_omega_per_stack_without_profiling():
    model = _admin("--admin-init", "O(logn)")
    assert not hasattr(model, "omega_ready")
    n_enc, n_dec = 2 * DEPTH[0], 3 * DEPTH[1]
    assert torch.allclose(model.encoder.layers[1].residual.omega, torch.tensor(closed_form_omega(n_enc, "O(logn)")).double())
    assert torch.allclose(model.decoder.layers[0].residual.omega, torch.tensor(closed_form_omega(n_dec, "O(logn)")).double())
    scalar = _admin("--admin-init", "O(1)", "--admin-omega", "scalar")
    omega = scalar.encoder.layers[0].residual.omega
    assert omega.shape == (2,) and "omega" not in dict(scalar.named_parameters())  # a fixed buffer
    assert torch.allclose(omega, torch.tensor(math.sqrt(n_enc)).double())


@pytest.mark.parametrize("init", ["profile", "O(logn)"])
def test_no_cross_attention_is_refused_when_the_model_is_built(init):
    """Transformer-Clinic asserts ``not no_encoder_attn`` for an Admin decoder layer (fairseq/fairseq/modules/
    transformer_layer.py:366, :425); a decoder without cross-attention would have 2 of the 3 sublayers that the
    profile (3M lines) and the closed forms (n = 3M) count."""
    from fairseq_admin.errors import OptionError

    with pytest.raises(OptionError, match="--no-cross-attention is not supported"):
        _admin("--no-cross-attention", "--admin-init", init)


def test_no_cross_attention_is_refused_by_fairseq_train_before_training(synthetic_data, tmp_path):
    """Today: the first training step fails with "profiling visited 4 of the 6 decoder sublayers"."""
    from test_cli_end_to_end import train_args
    from helpers import run_cli

    proc = run_cli(*train_args(synthetic_data, tmp_path, "admin_transformer", "--no-cross-attention", max_update=2),
                   check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Traceback" not in out, out[-3000:]
    errors = [line for line in out.splitlines() if "error:" in line]
    assert errors == ["fairseq-train: error: admin: --no-cross-attention is not supported (an Admin decoder layer "
                      "has 3 residual sublayers, cross-attention included, as in Transformer-Clinic); remove it"], out[-3000:]
    assert not (tmp_path / "checkpoint_last.pt").exists()


# ---- distributed: two gloo workers, different batches, one ω ----------------------------------------------------
def _worker(rank, world, init_file, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        model = _admin()
        batch = random_batch(model.encoder.dictionary, bsz=2 + rank, src_len=6 + rank, tgt_len=5, seed=10 + rank)
        omegas = profile_model(model, {"net_input": batch})
        torch.save({"omegas": omegas, "params": _omegas(model), "inputs": _stack_inputs(model, batch)},
                   os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_two_worker_profiling_gives_identical_omega_from_pooled_variances(tmp_path):
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert results[0]["omegas"] == results[1]["omegas"]
    for a, b in zip(sum(results[0]["params"], []), sum(results[1]["params"], [])):
        assert torch.equal(a, b)
    model = _admin()  # the workers' (identical) initial weights
    expected_enc, expected_dec = ref.admin_profile_reference(
        model.encoder.layers, model.decoder.layers, [r["inputs"] for r in results])
    enc, dec = results[0]["omegas"]
    assert enc == pytest.approx(expected_enc, rel=1e-9)
    assert dec == pytest.approx(expected_dec, rel=1e-5)
    # and the pooled result differs from what either worker alone would have profiled
    alone = ref.admin_profile_reference(model.encoder.layers, model.decoder.layers, [results[0]["inputs"]])
    assert alone[0] != pytest.approx(enc, rel=1e-6)
