"""Stability diagnostics (fairseq_admin/diagnostics.py): the papers' qualitative claims on our implementation, the
``fairseq-admin-diagnose`` CLI and ``--log-stability`` in a real fairseq-train run.

Models: d=64, ffn 128, 4 heads, encoder = decoder depth, seed 1, eval mode (no dropout) after Admin's profiling,
one synthetic batch (8 sentences). Every claim is a function returning (holds, numbers), so the tests also show that
it fails when Admin's ω is forced to 1 (Admin = Post-LN).
"""
import functools
import json
import re

import pytest
import torch

from fairseq_admin import diagnostics as D
from fairseq_admin.cli.diagnose import SyntheticTask, synthetic_sample
from fairseq_admin.models import ResidualTransformerModel
from fairseq_admin.profiling import apply_profile, profile_model, profile_sizes
from helpers import USER_DIR, parse_args, run_cli
from test_cli_end_to_end import train_args

DIMS = ["--encoder-embed-dim", "64", "--decoder-embed-dim", "64", "--encoder-ffn-embed-dim", "128",
        "--decoder-ffn-embed-dim", "128", "--encoder-attention-heads", "4", "--decoder-attention-heads", "4"]
TASK = SyntheticTask(200)
SAMPLE = synthetic_sample(TASK.source_dictionary, bsz=8, src_len=12, tgt_len=12, seed=0)


@functools.lru_cache(maxsize=None)
def measure(scheme, depth, omega_one=False):
    """(a), (b), (c) for one model; ``omega_one``: Admin with every ω = 1 instead of profiled (must break claims)."""
    torch.set_num_threads(1)
    torch.manual_seed(1)
    model = ResidualTransformerModel.build_model(parse_args(f"{scheme}_transformer", *DIMS, layers=(depth, depth)),
                                                 TASK)
    if model.needs_profiling():
        if omega_one:
            apply_profile(model, *[[1.0] * n for n in profile_sizes(model)])
        else:
            torch.manual_seed(1)
            profile_model(model, SAMPLE)
    model.eval()
    return {"grads": D.gradient_norms(model, SAMPLE), "change": D.output_change(model, SAMPLE, 0.01, draws=3),
            "beta": D.residual_dependency(model, SAMPLE)}


def top_vs_bottom_beta(result, stack="decoder"):
    rows = result["beta"][stack]
    mean = [sum(r) / len(r) for r in rows]
    return mean[0], mean[-1]


# ---- the claims ----------------------------------------------------------------------------------------------------
def claim_last_ffn_gradient(depths=(2, 6, 12)):
    """Xiong et al. Theorem 1: Pre-LN's last-FFN gradient falls with depth (~1/sqrt(L)), Post-LN's does not."""
    pre = [measure("preln", L)["grads"]["last_ffn"] for L in depths]
    post = [measure("postln", L)["grads"]["last_ffn"] for L in depths]
    holds = (all(a > b for a, b in zip(pre, pre[1:])) and pre[-1] / pre[0] < 0.7
             and post[-1] / post[0] > 0.8)
    return holds, {"preln": pre, "postln": post}


def claim_output_change(admin_omega_one=False, depths=(2, 24)):
    """Liu et al.: Post-LN's output change grows with depth faster than Admin's (O(N) vs O(log N))."""
    post = [measure("postln", L)["change"]["mean"] for L in depths]
    admin = [measure("admin", L, admin_omega_one)["change"]["mean"] for L in depths]
    post_growth, admin_growth = post[-1] / post[0], admin[-1] / admin[0]
    holds = post_growth > 1.25 * admin_growth and post[-1] > 1.5 * admin[-1]
    return holds, {"postln": post, "admin": admin, "growth": (post_growth, admin_growth)}


def claim_beta(admin_omega_one=False, depth=12):
    """Liu et al.: Post-LN depends on its residual branch in every layer (β does not decay with the layer index);
    Admin's ω make the branch share fall (β_i ~ 1/i), far below Post-LN's at the top."""
    post_bottom, post_top = top_vs_bottom_beta(measure("postln", depth))
    admin_bottom, admin_top = top_vs_bottom_beta(measure("admin", depth, admin_omega_one))
    holds = post_top > 0.7 * post_bottom and admin_top < 0.5 * admin_bottom and admin_top < post_top / 3
    return holds, {"postln": (post_bottom, post_top), "admin": (admin_bottom, admin_top)}


def test_preln_last_ffn_gradient_falls_with_depth_postln_does_not():
    holds, numbers = claim_last_ffn_gradient()
    assert holds, numbers


@pytest.mark.parametrize("depths", [(2, 12), (2, 24)])
def test_postln_output_change_grows_faster_than_admin(depths):
    holds, numbers = claim_output_change(depths=depths)
    assert holds, numbers


def test_admin_beta_decays_where_postln_stays_branch_dependent():
    holds, numbers = claim_beta()
    assert holds, numbers


@pytest.mark.parametrize("claim", [claim_output_change, claim_beta])
def test_claims_fail_when_admin_omega_is_one(claim):
    holds, numbers = claim(admin_omega_one=True)
    assert not holds, numbers


def test_gradient_claim_fails_on_swapped_schemes():
    """The gradient claim is not vacuous: Post-LN's last-FFN gradient does not fall like Pre-LN's."""
    post = [measure("postln", L)["grads"]["last_ffn"] for L in (2, 12)]
    assert not post[-1] / post[0] < 0.7


# ---- the hook ------------------------------------------------------------------------------------------------------
def test_record_residuals_is_transparent_and_restored():
    torch.manual_seed(0)
    model = ResidualTransformerModel.build_model(parse_args("b2t_transformer", *DIMS, layers=(2, 2)), TASK).eval()
    with torch.no_grad():
        before = D.decoder_features(model, SAMPLE)
        with D.record_residuals(model) as record:
            during = D.decoder_features(model, SAMPLE)
        after = D.decoder_features(model, SAMPLE)
    assert torch.equal(before, during) and torch.equal(before, after)
    assert all("combine" not in s.__dict__ for st in ("encoder", "decoder") for s in model.scheme_layers(st))
    beta = record.beta()
    assert [len(r) for r in beta["encoder"]] == [2, 2] and [len(r) for r in beta["decoder"]] == [3, 3]
    assert all(0 < b < 1 for st in beta.values() for r in st for b in r)


def test_record_residuals_max_abs_is_the_largest_residual_sum_on_real_tokens():
    """``max_abs`` (logged as stab_act_max, the grid's fp16-risk proxy) against every residual sum seen through the
    layers' ``connect`` (a path of its own), padding excluded."""
    torch.manual_seed(0)
    model = ResidualTransformerModel.build_model(parse_args("preln_transformer", *DIMS, layers=(2, 2)), TASK).eval()
    pad = TASK.source_dictionary.pad()
    sample = SAMPLE
    assert sample["net_input"]["prev_output_tokens"].eq(pad).any()  # padded target positions are left out
    sums = []
    for stack in ("encoder", "decoder"):
        for scheme in model.scheme_layers(stack):
            def connect(branch, shortcut, scheme=scheme, inner=scheme.connect):
                out = inner(branch, shortcut)
                mask = scheme.token_mask(out)
                sums.append(out.detach().abs()[mask].max() if mask is not None else out.detach().abs().max())
                return out
            scheme.connect = connect
    with torch.no_grad(), D.record_residuals(model) as record:
        D.decoder_features(model, sample)
    assert len(sums) == 2 * 2 + 2 * 3 and record.max_abs == max(sums).item()
    # fairseq zeroes padded source positions, so that model cannot show the mask at work: a sum whose only large
    # value sits at a padding position must not count
    scheme = model.scheme_layers("encoder")[0]
    scheme.begin(torch.zeros(3, 2, 64), torch.tensor([[True, False, False], [False, False, False]]))
    combined = torch.ones(3, 2, 64)
    combined[0, 0, 5] = -1e4  # time 0 of sentence 0: padding
    padded = D.ResidualRecord()
    padded.observe("encoder", 0, scheme, 0, torch.zeros(3, 2, 64), combined)
    assert padded.max_abs == 1.0


def test_admin_beta_equals_reference_from_the_profiling_walk():
    """β_i = Var(f_i) / (Var(x_i ω_i) + Var(f_i)) against the float64 reference walk (dropout off, float64), which
    checks that s_i is x_i·ω_i and that the variances are taken over real tokens as profiling takes them."""
    import reference as ref
    from test_profiling import _stack_inputs

    torch.manual_seed(1)
    model = ResidualTransformerModel.build_model(parse_args("admin_transformer", *DIMS, "--dropout", "0",
                                                            layers=(3, 3)), TASK).double()
    net_input = SAMPLE["net_input"]
    batch = {k: net_input[k] for k in ("src_tokens", "src_lengths", "prev_output_tokens")}
    enc, _ = profile_model(model, {"net_input": batch})
    _, (expected_enc, expected_dec) = ref.admin_profile_reference(
        model.encoder.layers, model.decoder.layers, [_stack_inputs(model, batch)], return_betas=True)
    beta = D.residual_dependency(model, {"net_input": batch})
    enc_beta = [b for row in beta["encoder"] for b in row]
    dec_beta = [b for row in beta["decoder"] for b in row]
    assert len(enc_beta) == len(enc) == len(expected_enc)
    assert enc_beta == pytest.approx(expected_enc, rel=1e-9)
    assert dec_beta == pytest.approx(expected_dec, rel=1e-5)  # fairseq's attention softmax runs in float32


def _rezero_term(scheme, index, branch):
    return scheme.alpha.detach() * branch


def _peri_ln_term(scheme, index, branch):  # LN_out(f) from the formula: (f − mean) / sqrt(var + eps) · γ + β
    norm = scheme.output_norms[index]
    mean = branch.mean(-1, keepdim=True)
    var = ((branch - mean) ** 2).mean(-1, keepdim=True)
    return (branch - mean) / torch.sqrt(var + norm.eps) * norm.weight.detach() + norm.bias.detach()


@pytest.mark.parametrize("scheme_name, term", [("rezero", _rezero_term), ("peri_ln", _peri_ln_term)])
def test_beta_is_of_the_branch_as_the_join_adds_it(scheme_name, term):
    """A join that scales (ReZero: α·f) or normalizes (Peri-LN: LN_out(f)) the branch: β_i = Var(t_i) / (Var(x_i) +
    Var(t_i)) with t_i what the sum holds, against a float64 reference from each sublayer's branch and shortcut as the
    layer hands them to the join (a path of its own). ReZero: 0 at init, every layer the identity. (Both read as
    Var(f) / (Var(f) + Var(x + t − f)) before ``branch_term``.)"""
    torch.manual_seed(1)
    model = ResidualTransformerModel.build_model(parse_args(f"{scheme_name}_transformer", *DIMS, "--dropout", "0",
                                                            layers=(2, 2)), TASK).double().eval()
    if scheme_name == "rezero":
        with torch.no_grad():
            assert all(b == 0 for st in D.residual_dependency(model, SAMPLE).values() for r in st for b in r)
    values = iter((0.5, -2.0, 1.5, 0.25))
    expected = {"encoder": [], "decoder": []}
    for stack in expected:
        for scheme in model.scheme_layers(stack):
            with torch.no_grad():
                if scheme_name == "rezero":
                    scheme.alpha.fill_(next(values))
                else:  # γ, β away from their init, so that LN_out(f) is neither f's scale nor centred
                    for norm in scheme.output_norms:
                        norm.weight.uniform_(0.5, 2.0), norm.bias.uniform_(-1.0, 1.0)
            row = []
            expected[stack].append(row)

            def connect(branch, shortcut, scheme=scheme, row=row, inner=scheme.connect):
                state = scheme._forward
                index = state.active[state.next]
                mask = scheme.token_mask(branch)
                t, x = term(scheme, index, branch.detach())[mask], shortcut.detach()[mask]
                row.append(float(t.var(unbiased=False) / (x.var(unbiased=False) + t.var(unbiased=False))))
                return inner(branch, shortcut)
            scheme.connect = connect
    with torch.no_grad():
        beta = D.residual_dependency(model, SAMPLE)
    for stack in expected:
        assert [len(r) for r in expected[stack]] == [len(r) for r in beta[stack]]
        assert [b for r in beta[stack] for b in r] == pytest.approx([b for r in expected[stack] for b in r],
                                                                    rel=1e-9), stack


def test_output_change_restores_weights_and_is_deterministic():
    torch.manual_seed(0)
    model = ResidualTransformerModel.build_model(parse_args("preln_transformer", *DIMS, layers=(2, 2)), TASK)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    first = D.output_change(model, SAMPLE, draws=2, seed=3)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    assert D.output_change(model, SAMPLE, draws=2, seed=3) == first and first["mean"] > 0


# ---- the CLI and the training-time logging -------------------------------------------------------------------------
def test_diagnose_cli_end_to_end(tmp_path):
    out = tmp_path / "diag.json"
    proc = run_cli("fairseq-admin-diagnose", "--arch", "transformer", "--schemes", "postln,admin", "--layers", "1,3",
                   "--synthetic-batch", "--batch-size", "3", "--src-len", "6", "--tgt-len", "6", "--vocab-size", "50",
                   "--draws", "2", *DIMS, "--out-json", out, "--plot-dir", tmp_path / "plots", "--threads", "1")
    data = json.loads(out.read_text())
    assert [(r["scheme"], r["layers"]) for r in data["results"]] == [("postln", 1), ("postln", 3), ("admin", 1),
                                                                      ("admin", 3)]
    admin3 = data["results"][3]
    assert len(admin3["grad_norms"]["decoder"]) == 3 and len(admin3["beta"]["encoder"]) == 3
    assert admin3["omega"]["encoder"][0][0] == 1.0 and admin3["omega"]["decoder"][2][2] > 1
    assert data["results"][0]["omega"] is None and admin3["embed_dim"] == 64
    for name in ("grad_norms", "beta", "last_ffn_grad", "output_change", "omega"):
        assert (tmp_path / "plots" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    assert re.search(r"admin\s+3\s+[\d.e-]+", proc.stdout)


@pytest.mark.parametrize("argv, message", [
    (["--schemes", "postln,nope"], "unknown scheme"),
    (["--layers", "6,,12"], "--layers"),
    (["--layers", "0"], "positive"),
    (["--data", "/nonexistent/data-bin"], "no such directory"),
    (["--arch", "admin_transformer_wmt_en_de"], "--arch transformer_wmt_en_de"),
])
def test_diagnose_cli_errors(argv, message):
    from fairseq_admin.cli.diagnose import DiagnoseError, main

    with pytest.raises(DiagnoseError, match=re.escape(message)):
        main(argv)


def test_diagnose_cli_error_exit_status():
    proc = run_cli("fairseq-admin-diagnose", "--schemes", "postln,nope", check=False)
    assert proc.returncode == 2 and "error: unknown scheme(s) nope" in proc.stderr and "Traceback" not in proc.stderr


def test_diagnose_cli_on_data_bin(synthetic_data, tmp_path):
    out = tmp_path / "d.json"
    run_cli("fairseq-admin-diagnose", "--data", synthetic_data, "--arch", "transformer", "--schemes", "preln",
            "--layers", "2", "--batch-size", "4", "--draws", "1", *DIMS, "--out-json", out, "--threads", "1")
    result = json.loads(out.read_text())["results"][0]
    assert result["last_ffn_grad_norm"] > 0 and "train" in json.loads(out.read_text())["config"]["batch"]


@pytest.mark.parametrize("task", ["translation", "admin_translation"])  # any task; the earlier name still works
def test_train_log_stability(synthetic_data, tmp_path, task):
    args = train_args(synthetic_data, tmp_path, "admin_transformer", "--log-stability", "2", max_update=4)
    args[args.index("--task") + 1] = task
    proc = run_cli(*args)
    log = proc.stdout + proc.stderr
    lines = [line for line in log.splitlines() if "| train_inner |" in line]
    logged = [line for line in lines if re.search(r"stab_g_last_ffn[ =][\d.]+", line)]
    assert logged, log[-3000:]
    # updates 1 and 3 (update_num 0 and 2) are measured, 2 and 4 not; those lines carry no stab_* column at all
    # (fairseq would print a meter that got no value since the last log as "stab_...=None")
    assert len(logged) == 2, logged
    assert len([line for line in lines if "stab_" in line]) == 2 and "None" not in "".join(lines), lines
    for key in ("stab_g_enc0", "stab_g_dec1", "stab_beta_enc1", "stab_beta_dec0", "stab_omega_dec_max",
                "stab_act_max"):
        assert re.search(key + r"[ =][\d.]+", logged[0]), logged[0]
    omega_max = float(re.search(r"stab_omega_dec_max[ =]([\d.]+)", logged[0]).group(1))
    assert omega_max > 1


def test_resumed_without_log_stability_logs_no_stab_columns(synthetic_data, tmp_path):
    """fairseq saves the metrics meters with the checkpoint and restores them on resume: a run resumed without
    --log-stability from a checkpoint written with it printed ``stab_g_enc0=None, ...`` on every line."""
    run_cli(*train_args(synthetic_data, tmp_path, "admin_transformer", "--log-stability", "1", max_update=3))
    proc = run_cli(*train_args(synthetic_data, tmp_path, "admin_transformer", max_update=10))
    log = proc.stdout + proc.stderr
    assert "Loaded checkpoint" in log, log[-3000:]
    lines = [line for line in log.splitlines() if "| train_inner |" in line or "| train |" in line]
    assert lines and not [line for line in lines if "None" in line], lines
