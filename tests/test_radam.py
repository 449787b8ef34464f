"""``--optimizer radam`` against a float64 transcription of the official RAdam (Transformer-Clinic
radam_fairseq/radam.py:94-126) on a fixed problem, and through the real fairseq-train."""
import math

import pytest
import torch

from helpers import TINY_TRAIN, USER_DIR, run_cli
from fairseq_admin.optim.radam import ClinicRAdam


def official_radam_step(p, grad, state, lr, betas, eps, weight_decay):
    """radam.py:94-126, line by line, in float64 (``skip``: no update while N_sma < 5)."""
    if not state:
        state.update(step=0, exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))
    exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
    beta1, beta2 = betas
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
    state["step"] += 1
    t = state["step"]
    beta2_t = beta2 ** t
    n_sma_max = 2 / (1 - beta2) - 1
    n_sma = n_sma_max - 2 * t * beta2_t / (1 - beta2_t)
    if weight_decay != 0:
        p.add_(p, alpha=-weight_decay * lr)
    if n_sma >= 5:
        step_size = lr * math.sqrt((1 - beta2_t) * (n_sma - 4) / (n_sma_max - 4) * (n_sma - 2) * n_sma_max / n_sma
                                   / (n_sma_max - 2)) / (1 - beta1 ** t)
        p.addcdiv_(exp_avg, exp_avg_sq.sqrt().add_(eps), value=-step_size)


def _problem():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(6, 6, generator=g, dtype=torch.float64)
    return a @ a.T + torch.eye(6, dtype=torch.float64), torch.randn(6, generator=g, dtype=torch.float64)


def _loss(p, a, b):
    return 0.5 * p @ a @ p - b @ p


@pytest.mark.parametrize("betas,weight_decay", [((0.9, 0.98), 0.0), ((0.9, 0.999), 1e-2)])
def test_radam_equals_the_official_update_rule(betas, weight_decay):
    a, b = _problem()
    ours = torch.zeros(6, dtype=torch.float64, requires_grad=True)
    with torch.no_grad():
        ours.fill_(0.5)
    ref, ref_state = ours.detach().clone(), {}
    opt = ClinicRAdam([ours], lr=0.05, betas=betas, eps=1e-8, weight_decay=weight_decay)
    for step in range(1, 31):
        opt.zero_grad()
        _loss(ours, a, b).backward()
        official_radam_step(ref, a @ ref - b, ref_state, 0.05, betas, 1e-8, weight_decay)
        opt.step()
        assert torch.allclose(ours.detach(), ref, rtol=1e-12, atol=1e-14), step
    assert not torch.equal(ref, torch.full_like(ref, 0.5))  # it moved after the first 5 steps


def test_torchs_rule_differs_in_the_first_updates_only_by_the_momentum_step():
    """``--radam-unrectified sgd`` is torch.optim.RAdam: it moves in steps 1-5, where the official code does not."""
    a, b = _problem()
    ours = torch.full((6,), 0.5, dtype=torch.float64, requires_grad=True)
    torch_p = ours.detach().clone().requires_grad_(True)
    opt = ClinicRAdam([ours], skip_unrectified=False, lr=0.05, betas=(0.9, 0.98))
    ref = torch.optim.RAdam([torch_p], lr=0.05, betas=(0.9, 0.98), decoupled_weight_decay=True, foreach=False)
    for _ in range(8):
        for p, o in ((ours, opt), (torch_p, ref)):
            o.zero_grad()
            _loss(p, a, b).backward()
            o.step()
    assert torch.equal(ours, torch_p)
    skip = torch.full((6,), 0.5, dtype=torch.float64, requires_grad=True)
    opt = ClinicRAdam([skip], lr=0.05, betas=(0.9, 0.98))
    for _ in range(5):
        opt.zero_grad()
        _loss(skip, a, b).backward()
        opt.step()
    assert torch.equal(skip.detach(), torch.full((6,), 0.5, dtype=torch.float64))  # rho_5 = 4.92 < 5: no update yet


def test_fairseq_train_with_radam(synthetic_data, tmp_path):
    argv = [a for a in TINY_TRAIN]
    i = argv.index("adam")
    argv[i] = "radam"
    proc = run_cli("fairseq-train", synthetic_data, "--user-dir", USER_DIR, *argv, "--adam-betas", "(0.9, 0.98)",
                   "--weight-decay", "0.0001", "--max-tokens", "500", "--max-update", "12", "--save-dir", tmp_path / "ckpt",
                   "--no-epoch-checkpoints")
    log = proc.stdout + proc.stderr
    assert "done training" in log and "num_updates 12" in log.replace("=", " ").replace(":", " "), log[-2000:]
    assert "'optimizer': {'_name': 'radam'" in log
