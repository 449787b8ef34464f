"""The published training recipes of Post-LN, Pre-LN, Admin and B2T, as one table, and the `fairseq-train` commands
that reproduce them on any number of GPUs.

    python -m fairseq_admin.recipes --list
    python -m fairseq_admin.recipes --pair en-de --scheme admin --layers 18-18 --gpus 4 --dry-run
    python -m fairseq_admin.recipes --pair en-de --scheme b2t --layers 18-18 --gpus 8 --data DIR -- --patience 5
    bash scripts/train.sh ...   (the same options; fairseq-admin-train ... where the package is pip-installed)

A setting is (pair, scheme, encoder-decoder layers, source paper). The paper's *tokens per update* is kept whatever the
GPU count: tokens_per_update = nodes x gpus x max_tokens x update_freq. Without --max-tokens the per-GPU batch is the
paper's own (or smaller) and --update-freq makes up the rest; with --max-tokens only --update-freq is adjusted, and a
combination that cannot come within TOLERANCE of the paper's number is an error that says which --max-tokens would.

This module uses the standard library only (no torch, no fairseq import), so `--list` and `--dry-run` are instant.
Everything after a bare `--` is passed to fairseq-train unchanged, after the recipe's flags (argparse: the last
occurrence of a flag wins, so `-- --lr 5e-4` overrides the recipe's --lr; a note says so on stderr).

Sources (docs/methods.md summarizes them):
  liu2020   Liu et al., EMNLP 2020, "Understanding the Difficulty of Training Transformers" (Admin); official code
            github.com/LiyuanLucasLiu/Transformer-Clinic, nmt-experiments/{wmt14_en-de,iwslt14_de-en}.md
  liu2020b  Liu et al. 2020b, "Very Deep Transformers for Neural Machine Translation" (Admin 60L-12L WMT14 En-Fr);
            recipe in Transformer-Clinic nmt-experiments/wmt14_en-fr.md
  takase2023  Takase et al., ACL Findings 2023, "B2T Connection: Serving Stability and Performance in Deep Transformers"
  huang2020 Huang et al., ICML 2020, "Improving Transformer Optimization Through Better Initialization" (T-Fixup);
            official script github.com/layer6ai-labs/T-Fixup Train_IWSLT_TFixup_example.sh, BLEU in its README.md
  (xiong2020, Pre-LN, is *not* a row: see the comment above PRE_LN_NOTE.)
"""
from __future__ import annotations

import argparse
import math
import os
import shlex
import shutil
import sys
from dataclasses import dataclass
from typing import Optional, Sequence

SCHEMES = ("postln", "preln", "admin", "b2t", "deepnorm", "t_fixup")
LAUNCHERS = ("fairseq", "torchrun", "slurm")
TOLERANCE = 0.03  # |tokens per update - paper's| / paper's, at most
MIN_SENSIBLE_MAX_TOKENS = 1024  # below this, long sentences no longer fit in one batch: warn
# flags that the recipe computes; giving them after `--` would silently change the tokens per update or the setting
MANAGED_FLAGS = {
    "--max-tokens": "use the recipe's --max-tokens (it then adjusts --update-freq to keep the paper's tokens per update)",
    "--update-freq": "the recipe sets it from --gpus/--nodes/--max-tokens; change --max-tokens or --gpus instead",
    "--distributed-world-size": "use --gpus and --nodes",
    "--arch": "use --scheme and --layers (they choose the architecture)",
    "--encoder-layers": "use --layers ENC-DEC",
    "--decoder-layers": "use --layers ENC-DEC",
}


@dataclass(frozen=True)
class Setting:
    """One published training setting: the paper's hyperparameters, batch, length of training and evaluation."""

    # --- what it is
    pair: str                    # "en-de": source-target
    scheme: str                  # postln | preln | admin | b2t | deepnorm | t_fixup
    encoder_layers: int
    decoder_layers: int
    source: str                  # key of the paper whose recipe this is: liu2020 | liu2020b | takase2023 | huang2020
    paper: str                   # citation + where the hyperparameters come from
    base_arch: str               # fairseq architecture giving the dimensions; --arch is f"{scheme}_{base_arch}"
    data: str                    # default binarized data directory (relative to the working directory)
    # --- optimization
    lr: float
    warmup_updates: int
    warmup_init_lr: float
    dropout: float
    clip_norm: float             # 0.0 = no clipping (fairseq's convention)
    # --- batch: the paper's run; tokens_per_update = published_gpus * published_max_tokens * published_update_freq
    published_gpus: int
    published_max_tokens: int
    published_update_freq: int
    # --- length of training (fairseq stops at whichever comes first)
    max_update: Optional[int]
    max_epoch: Optional[int]
    # --- evaluation: average the last `avg_checkpoints` epoch checkpoints, then beam search
    beam: int
    lenpen: float
    avg_checkpoints: int
    bleu: Optional[float]        # the published score, where the paper (or its code's README) gives one
    bleu_metric: str             # what that score is (test set, tokenized or sacreBLEU)
    # --- the rest, identical across most rows
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0
    weight_decay: float = 0.0
    label_smoothing: float = 0.1
    optimizer: str = "adam"
    stop_min_lr: Optional[float] = None  # fairseq 0.9's --min-lr (a stop criterion), as the official scripts give it
    word_dropout: float = 0.0    # the B2T 18L recipe's --sampling-method worddrop --enc/dec-replace-rate
    layer_init: Optional[str] = None  # --layer-init of the paper's code base (None: the scheme's default)
    adam_betas: tuple = (0.9, 0.98)
    lr_scheduler: str = "inverse_sqrt"  # or inverse_sqrt_nowarmup (T-Fixup): no warm-up flags, --decay-period
    decay_period: Optional[int] = None  # inverse_sqrt_nowarmup's P: lr·sqrt(P / (P + updates))
    share_all_embeddings: bool = True
    share_decoder_input_output_embed: bool = False  # without share_all_embeddings: tie the decoder's in/out tables
    fp16: bool = True
    fp16_args: tuple = ()        # extra fp16 flags of the official scripts
    seed: Optional[int] = None   # None: fairseq's default (1)
    src_lang: str = ""
    tgt_lang: str = ""
    notes: str = ""

    def __post_init__(self):
        if self.scheme not in SCHEMES:
            raise ValueError(f"unknown scheme {self.scheme!r}")
        src, tgt = self.pair.split("-")
        object.__setattr__(self, "src_lang", self.src_lang or src)
        object.__setattr__(self, "tgt_lang", self.tgt_lang or tgt)

    @property
    def layers(self) -> str:
        return f"{self.encoder_layers}-{self.decoder_layers}"

    @property
    def arch(self) -> str:
        return f"{self.scheme}_{self.base_arch}"

    @property
    def tokens_per_update(self) -> int:
        return self.published_gpus * self.published_max_tokens * self.published_update_freq

    @property
    def name(self) -> str:
        return f"{self.pair} {self.scheme} {self.layers} [{self.source}]"

    def selector(self) -> str:
        """The CLI options that choose this row."""
        return f"--pair {self.pair} --scheme {self.scheme} --layers {self.layers} --source {self.source}"


# ------------------------------------------------------------------------------------------------------------------
# The papers' shared hyperparameters, written once per paper; the table below spreads them into its rows.
#
# Optimizer: the Admin paper's rows (Post-LN, Pre-LN and Admin alike) use RAdam with betas (0.9, 0.98), as every
# command of Transformer-Clinic's nmt-experiments/*.md does (`--optimizer radam --user-dir ../radam_fairseq`):
# `--optimizer radam` is registered by this plugin (fairseq_admin/optim/radam.py, the official update rule). The B2T
# rows use Adam (takase/b2t_connection README.md:39-47). `-- --optimizer adam` switches a row.
# Initialization: Transformer-Clinic is a fairseq 0.9 fork, so its Post-LN and Pre-LN baselines (`--init-type default`)
# start from fairseq 0.9's layers as Admin does: the liu2020/liu2020b rows pass `--layer-init fairseq-0.9` for every
# scheme (docs/methods.md); the B2T rows keep fairseq main's (the B2T code's).
# `--min-lr 1e-09` of the official scripts is fairseq 0.9's stop criterion (train while lr > min_lr, e.g.
# takase/b2t_connection fairseq_cli/train.py:96); fairseq main calls it `--stop-min-lr`, which the rows carry.

# Liu et al. 2020 (Admin), WMT14 En-De, Transformer-Clinic nmt-experiments/wmt14_en-de.md: 4 GPUs x 8192 tokens,
# --max-update 500000 as a cap; the evaluation script averages the 10 epoch checkpoints up to epoch 100
# (eval_wmt_en-de.sh, UPPER_BOUND=100), i.e. 100 epochs of training. Evaluation: beam 4 / lenpen 0.6, tokenized BLEU.
LIU2020_EN_DE = dict(
    pair="en-de", source="liu2020",
    paper="Liu et al. 2020 (Admin), EMNLP; Transformer-Clinic nmt-experiments/wmt14_en-de.md",
    base_arch="transformer_wmt_en_de", data="data/wmt14_en_de/data-bin",
    lr=1e-3, warmup_updates=8000, warmup_init_lr=1e-7, dropout=0.1, attention_dropout=0.1, activation_dropout=0.1,
    clip_norm=0.0, weight_decay=0.0, optimizer="radam", stop_min_lr=1e-9, layer_init="fairseq-0.9",
    published_gpus=4, published_max_tokens=8192, published_update_freq=1,
    max_update=500000, max_epoch=100,
    fp16_args=("--fp16-scale-window", "256", "--threshold-loss-scale", "0.03125"), seed=1111,
    beam=4, lenpen=0.6, avg_checkpoints=10, bleu_metric="tokenized BLEU (fairseq), newstest2014",
)

# Liu et al. 2020b (Very Deep Transformers), WMT14 En-Fr 60L-12L, Transformer-Clinic nmt-experiments/wmt14_en-fr.md:
# 16 GPUs x 5000 tokens x update-freq 16 (1.28M tokens per update), 50 epochs, lr 7e-4. Beam 5 / lenpen 0.8.
LIU2020B_EN_FR = dict(
    pair="en-fr", source="liu2020b",
    paper="Liu et al. 2020b (Very Deep Transformers for NMT); Transformer-Clinic nmt-experiments/wmt14_en-fr.md",
    base_arch="transformer_wmt_en_de", data="data/wmt14_en_fr/data-bin",
    lr=7e-4, warmup_updates=8000, warmup_init_lr=1e-7, dropout=0.1, attention_dropout=0.1, activation_dropout=0.1,
    clip_norm=0.0, weight_decay=0.0, optimizer="radam", stop_min_lr=1e-9, layer_init="fairseq-0.9",
    published_gpus=16, published_max_tokens=5000, published_update_freq=16,
    max_update=None, max_epoch=50,
    fp16_args=("--fp16-scale-window", "256", "--threshold-loss-scale", "0.03125"), seed=1111,
    beam=5, lenpen=0.8, avg_checkpoints=10, bleu_metric="tokenized BLEU (fairseq), newstest2014",
)

# Liu et al. 2020 (Admin), IWSLT14 De-En, Transformer-Clinic nmt-experiments/iwslt14_de-en.md: 1 GPU x 4096 tokens,
# lr 7e-4, warm-up 6000, dropout 0.3, weight decay 1e-4, 100k updates / 90 epochs, 5 seeds; eval_iwslt_de-en.sh
# averages 10 epoch checkpoints up to epoch 90, beam 5, no length penalty. BLEU: mean (± std) over the 5 seeds.
LIU2020_IWSLT = dict(
    pair="de-en", source="liu2020",
    paper="Liu et al. 2020 (Admin), EMNLP; Transformer-Clinic nmt-experiments/iwslt14_de-en.md",
    base_arch="transformer_iwslt_de_en", data="data/iwslt14_de_en/data-bin",
    lr=7e-4, warmup_updates=6000, warmup_init_lr=1e-7, dropout=0.3, attention_dropout=0.1, activation_dropout=0.1,
    clip_norm=0.0, weight_decay=1e-4, optimizer="radam", layer_init="fairseq-0.9",
    published_gpus=1, published_max_tokens=4096, published_update_freq=1,
    max_update=100000, max_epoch=90,
    fp16_args=("--fp16-scale-window", "256", "--threshold-loss-scale", "0.03125"), seed=1111,
    beam=5, lenpen=1.0, avg_checkpoints=10, bleu_metric="tokenized BLEU (fairseq), IWSLT14 test, mean of 5 seeds",
)

# Takase et al. 2023 (B2T), WMT En-De: Adam (0.9, 0.98), lr 1e-3, inverse_sqrt, warm-up 4000, clip-norm 0.1,
# 8 GPUs x 3584 tokens x update-freq 16 (458,752 tokens per update), 50k updates, fp16, shared embeddings; dropout
# 0.3 (6L) / 0.5 (18L). Evaluation: last 10 epoch checkpoints averaged, beam 4, lenpen 0.6, detokenized sacreBLEU.
# Not stated in the B2T README's command, so fairseq's defaults (the scaling-NMT recipe the B2T code follows): label smoothing 0.1,
# attention/activation dropout 0, weight decay 0, seed 1.
TAKASE2023_EN_DE = dict(
    pair="en-de", source="takase2023",
    paper="Takase et al. 2023 (B2T connection), ACL Findings",
    base_arch="transformer_wmt_en_de", data="data/wmt14_en_de/data-bin",
    lr=1e-3, warmup_updates=4000, warmup_init_lr=1e-7, clip_norm=0.1, weight_decay=0.0, stop_min_lr=1e-9,
    published_gpus=8, published_max_tokens=3584, published_update_freq=16,
    max_update=50000, max_epoch=None,
    beam=4, lenpen=0.6, avg_checkpoints=10, bleu_metric="sacreBLEU (detokenized), newstest2014",
)

# Huang et al. 2020 (T-Fixup), IWSLT14 De-En, the official Train_IWSLT_TFixup_example.sh:13-37 (transformer_iwslt_de_en,
# 6-6, 512-1024-4): no LayerNorm (the scheme), Adam (0.9, 0.98), lr 5e-4 from the first update with
# --lr-scheduler inverse_sqrt_nowarmup --decay-period 4000 (no warm-up: fairseq_admin/optim/lr_scheduler/), dropout
# 0.5, weight decay 1e-4, label smoothing 0.1, 1 GPU x 4000 tokens, 300 epochs, fp16, separate dictionaries (its
# fairseq-preprocess has no --joined-dictionary, :7-11) with --share-decoder-input-output-embed. Not in the script,
# so the fork's fairseq 0.9 defaults: --clip-norm 25 (fairseq/options.py:388), attention/activation dropout 0
# (fairseq/models/transformer.py:941-942), seed 1. Evaluation (InferenceIWSLT.py): 10 epoch checkpoints averaged,
# beam 4, lenpen 0.3, tokenized BLEU of generate.py --remove-bpe; README.md:45 reports 35.73 for epochs 278-287, a
# window the script chose as the best test BLEU among those ending at epochs 250-300 (InferenceIWSLT.py:17-45).
HUANG2020_IWSLT = dict(
    pair="de-en", source="huang2020",
    paper="Huang et al. 2020 (T-Fixup), ICML; layer6ai-labs/T-Fixup Train_IWSLT_TFixup_example.sh, README.md",
    base_arch="transformer_iwslt_de_en", data="data/iwslt14_de_en/data-bin",
    lr=5e-4, warmup_updates=0, warmup_init_lr=5e-4, lr_scheduler="inverse_sqrt_nowarmup", decay_period=4000,
    dropout=0.5, clip_norm=25.0, weight_decay=1e-4, optimizer="adam",
    share_all_embeddings=False, share_decoder_input_output_embed=True,
    published_gpus=1, published_max_tokens=4000, published_update_freq=1,
    max_update=None, max_epoch=300,
    beam=4, lenpen=0.3, avg_checkpoints=10,
    bleu_metric="tokenized BLEU (fairseq generate --remove-bpe), IWSLT14 test",
)

# PRE_LN_NOTE. Pre-LN (Xiong et al. 2020) is the paper that showed Pre-LN trains *without* warm-up: WMT14 En-De with
# lr 7e-4 or 1.5e-3 from the first step, decayed at epoch 6, then inverse-sqrt. That schedule (constant, step decay,
# then inverse-sqrt) is not one of fairseq's schedulers and the paper gives no BLEU for it, so it is
# not a row here. Our Pre-LN rows are the comparisons the Admin and B2T papers ran: Pre-LN trained on *their* recipe,
# with warm-up (8000 / 4000 updates). To try Xiong's no-warm-up setting on top of a row, pass e.g.
#   -- --warmup-updates 1 --lr 7e-4       (the inverse-sqrt decay then starts at once; our choice, not the paper's)

# DS_INIT_NOTE. DS-Init (Zhang, Titov & Sennrich 2019) is not a row: its README's training command
# (bzhangGo/zero docs/depth_scale_init_and_merged_attention/README.md, "Model Training") gives the dimensions, the
# initializer and 12 layers and sends "other details" to docs/usage/README.md, whose command trains an RNN; the
# toolkit's defaults for what both leave out (run.py:49-190: lrate 1e-5 with the gnmt+ strategy, warm-up 400,
# max_training_steps 1000, 3000 tokens per batch) are not the paper's Transformer recipe, and the paper's text is
# not in any code we could read. Its published BLEU are of DS-Init with merged attention (MAtt), which we do not
# implement. To train DS-Init on a row's recipe: print the row with --dry-run and change its --arch to
# ds_init_<base arch> (train.sh refuses --arch after `--`: the row chooses it).

SETTINGS: list[Setting] = [
    # ---- Admin paper, WMT14 En-De, 6L / 12L / 18L, Post-LN vs Pre-LN vs Admin (same recipe for all three) ----
    Setting(**LIU2020_EN_DE, scheme="postln", encoder_layers=6, decoder_layers=6, bleu=None),
    Setting(**LIU2020_EN_DE, scheme="preln", encoder_layers=6, decoder_layers=6, bleu=None),
    Setting(**LIU2020_EN_DE, scheme="admin", encoder_layers=6, decoder_layers=6, bleu=27.84,
            notes="target from the admin-torch README (example/README.md:47-48): its O(logn) closed form, Adam, "
                  "a newer fairseq; not this row's recipe"),
    Setting(**LIU2020_EN_DE, scheme="postln", encoder_layers=12, decoder_layers=12, bleu=None),
    Setting(**LIU2020_EN_DE, scheme="preln", encoder_layers=12, decoder_layers=12, bleu=None),
    Setting(**LIU2020_EN_DE, scheme="admin", encoder_layers=12, decoder_layers=12, bleu=None),
    Setting(**LIU2020_EN_DE, scheme="postln", encoder_layers=18, decoder_layers=18, bleu=None,
            notes="diverges (Admin paper): the failure Admin fixes"),
    Setting(**LIU2020_EN_DE, scheme="preln", encoder_layers=18, decoder_layers=18, bleu=None),
    Setting(**LIU2020_EN_DE, scheme="admin", encoder_layers=18, decoder_layers=18, bleu=28.91,
            notes="target from the admin-torch README (example/README.md:67-71): its O(logn) closed form, Adam, "
                  "a newer fairseq; not this row's recipe"),
    # ---- Very Deep Transformers, WMT14 En-Fr, 60L encoder / 12L decoder ----
    Setting(**LIU2020B_EN_FR, scheme="postln", encoder_layers=60, decoder_layers=12, bleu=None),
    Setting(**LIU2020B_EN_FR, scheme="preln", encoder_layers=60, decoder_layers=12, bleu=None),
    Setting(**LIU2020B_EN_FR, scheme="admin", encoder_layers=60, decoder_layers=12, bleu=43.8),
    # ---- Admin paper, IWSLT14 De-En, 6L ----
    Setting(**LIU2020_IWSLT, scheme="postln", encoder_layers=6, decoder_layers=6, bleu=35.64, notes="± 0.23"),
    Setting(**LIU2020_IWSLT, scheme="preln", encoder_layers=6, decoder_layers=6, bleu=35.50, notes="± 0.04"),
    Setting(**LIU2020_IWSLT, scheme="admin", encoder_layers=6, decoder_layers=6, bleu=35.67, notes="± 0.15"),
    # ---- B2T paper, WMT En-De, 6L and 18L ----
    Setting(**TAKASE2023_EN_DE, scheme="b2t", encoder_layers=6, decoder_layers=6, dropout=0.3, bleu=None),
    # 18L adds word dropout 0.1 on both sides (README.md:45; 6L: "remove --sampling-method ...", README.md:50)
    Setting(**TAKASE2023_EN_DE, scheme="b2t", encoder_layers=18, decoder_layers=18, dropout=0.5, word_dropout=0.1,
            bleu=28.25, notes="27.52 averaged over newstest2010-2016"),
    Setting(**TAKASE2023_EN_DE, scheme="preln", encoder_layers=18, decoder_layers=18, dropout=0.5, word_dropout=0.1,
            bleu=27.36,
            notes="B2T paper's Pre-LN baseline, on the B2T row's recipe (word dropout included); 26.57 averaged "
                  "over newstest2010-2016"),
    # DEEPNORM_NOTE. DeepNet (Wang et al. 2022) reports WMT-17 En-De, but no code we could read carries its MT
    # hyperparameters: torchscale's examples/fairseq/README.md:293-310 trains a generic mt_base without --deepnorm, and
    # Transformer-Clinic's --init-type deepnet has no command in nmt-experiments/. So DeepNorm trains on the recipe of
    # the deep rows it is most often compared with, the B2T 18L row's (our choice, not DeepNet's), with no BLEU target.
    Setting(**{**TAKASE2023_EN_DE, "paper": "our choice for DeepNorm (Wang et al. 2022): the recipe of the B2T paper's "
                                            "18L row (Takase et al. 2023, ACL Findings)"},
            scheme="deepnorm", encoder_layers=18, decoder_layers=18, dropout=0.5,
            word_dropout=0.1, bleu=None,
            notes="our choice: the B2T 18L row's recipe (DeepNet's own MT hyperparameters are in no code we could "
                  "read); compare with the b2t and preln 18-18 rows"),
    # ---- T-Fixup, IWSLT14 De-En, 6L, no warm-up, no LayerNorm ----
    Setting(**HUANG2020_IWSLT, scheme="t_fixup", encoder_layers=6, decoder_layers=6, bleu=35.73,
            notes="official README: epochs 278-287, the best window on the test set; no warm-up (decay period "
                  "4000), decoder in/out embeddings tied"),
]


# ------------------------------------------------------------------------------------------------------------------
class RecipeError(ValueError):
    """A setting, batch or launch that cannot be built; the message says what to do instead."""


def parse_layers(text: str) -> tuple[int, int]:
    """'18-18' -> (18, 18); '18' -> (18, 18); '60-12' -> (60, 12)."""
    parts = str(text).replace("x", "-").split("-")
    try:
        if len(parts) == 1:
            return int(parts[0]), int(parts[0])
        if len(parts) == 2:
            return int(parts[0]), int(parts[1])
    except ValueError:
        pass
    raise RecipeError(f"--layers {text!r}: expected ENC-DEC, e.g. 18-18 or 60-12")


def published_list(settings: Sequence[Setting] = SETTINGS) -> str:
    return "\n".join("  " + s.selector() for s in settings)


def find_setting(pair: str, scheme: str, layers, source: Optional[str] = None) -> Setting:
    """The published row for (pair, scheme, layers[, source]); a RecipeError listing the published ones otherwise."""
    enc, dec = parse_layers(layers) if isinstance(layers, str) else layers
    matches = [s for s in SETTINGS if s.pair == pair and s.scheme == scheme and s.encoder_layers == enc
               and s.decoder_layers == dec and (source is None or s.source == source)]
    if len(matches) == 1:
        return matches[0]
    what = f"--pair {pair} --scheme {scheme} --layers {enc}-{dec}" + (f" --source {source}" if source else "")
    if not matches:
        raise RecipeError(f"no published setting for {what}. The published settings are:\n{published_list()}\n"
                          "(bash scripts/train.sh --list shows their hyperparameters)")
    raise RecipeError(f"{what} was published by several papers, with different recipes; add --source:\n"
                      f"{published_list(matches)}")


@dataclass(frozen=True)
class BatchPlan:
    world_size: int
    max_tokens: int
    update_freq: int
    target: int

    @property
    def tokens_per_update(self) -> int:
        return self.world_size * self.max_tokens * self.update_freq

    @property
    def relative_error(self) -> float:
        return (self.tokens_per_update - self.target) / self.target


def plan_batch(target: int, world_size: int, max_tokens: Optional[int] = None, default_max_tokens: int = 4096,
               tolerance: float = TOLERANCE) -> BatchPlan:
    """Choose --max-tokens / --update-freq so that world_size * max_tokens * update_freq ~= target.

    Without max_tokens: the fewest accumulation steps whose per-GPU batch is at most default_max_tokens (the paper's),
    then the per-GPU batch that makes the product exact (to rounding). With max_tokens: only update_freq is chosen,
    and a mismatch above `tolerance` is a RecipeError naming a --max-tokens that works.
    """
    if world_size < 1:
        raise RecipeError(f"the number of GPUs must be at least 1, got {world_size}")

    def fitted(cap: int) -> BatchPlan:
        freq = max(1, math.ceil(target / (world_size * cap)))
        return BatchPlan(world_size, max(1, round(target / (world_size * freq))), freq, target)

    if max_tokens is None:
        plan = fitted(default_max_tokens)
    else:
        if max_tokens < 1:
            raise RecipeError(f"--max-tokens must be positive, got {max_tokens}")
        freq = max(1, round(target / (world_size * max_tokens)))
        plan = BatchPlan(world_size, max_tokens, freq, target)
        if abs(plan.relative_error) > tolerance:
            better = fitted(max_tokens)
            raise RecipeError(
                f"cannot match the paper's {target:,} tokens per update with {world_size} GPU(s) x --max-tokens "
                f"{max_tokens}: the nearest is --update-freq {freq} -> {plan.tokens_per_update:,} tokens "
                f"({plan.relative_error:+.1%}, tolerance ±{tolerance:.0%}). Use --max-tokens {better.max_tokens} "
                f"(--update-freq {better.update_freq} -> {better.tokens_per_update:,} tokens), or leave --max-tokens "
                f"out to let the recipe choose.")
    if abs(plan.relative_error) > tolerance:  # only possible for absurdly small targets; keep the promise anyway
        raise RecipeError(f"cannot match {target:,} tokens per update with {world_size} GPU(s): the nearest is "
                          f"{plan.tokens_per_update:,}; use fewer GPUs")
    return plan


def _num(x: float) -> str:
    return repr(float(x))  # 0.001, 0.0007, 1e-07, 0.0: what fairseq's float arguments parse back exactly


def _flag_value(argv: Sequence[str], flag: str) -> Optional[str]:
    """The value of the last occurrence of `flag` in argv (`--flag V` or `--flag=V`), else None."""
    value = None
    for i, tok in enumerate(argv):
        if tok == flag and i + 1 < len(argv):
            value = argv[i + 1]
        elif tok.startswith(flag + "="):
            value = tok.split("=", 1)[1]
    return value


def _has_flag(argv: Sequence[str], flag: str) -> bool:
    return any(tok == flag or tok.startswith(flag + "=") for tok in argv)


def fairseq_train_path() -> str:
    """fairseq-train's path (torchrun needs a file): the one on PATH, else the one next to this Python."""
    found = shutil.which("fairseq-train")
    if found:
        return found
    beside = os.path.join(os.path.dirname(sys.executable), "fairseq-train")
    return beside if os.path.exists(beside) else "fairseq-train"


def build_train_command(setting: Setting, data_dir: Optional[str], save_dir: Optional[str], gpus: int,
                        max_tokens: Optional[int] = None, extra_args: Sequence[str] = (), *, nodes: int = 1,
                        launcher: str = "fairseq", fp16: Optional[bool] = None, node_rank: int = 0,
                        master_addr: Optional[str] = None, master_port: int = 29500, distributed_port: int = 12345,
                        tolerance: float = TOLERANCE) -> tuple[list[str], BatchPlan]:
    """The argv that trains `setting` on nodes x gpus GPUs with the paper's tokens per update, and its batch plan.

    launcher: 'fairseq' (one node; fairseq-train spawns one process per GPU from --distributed-world-size),
    'torchrun' (one command per node, --node-rank differs) or 'slurm' (srun; fairseq reads SLURM_* and uses
    --distributed-port for the rendezvous).
    """
    extra_args = list(extra_args)
    if launcher not in LAUNCHERS:
        raise RecipeError(f"unknown launcher {launcher!r}; choose one of {', '.join(LAUNCHERS)}")
    if gpus < 1 or nodes < 1:
        raise RecipeError(f"--gpus and --nodes must be at least 1 (got --gpus {gpus} --nodes {nodes})")
    if nodes > 1 and launcher == "fairseq":
        raise RecipeError(f"--nodes {nodes}: fairseq-train alone starts processes on one node only; add "
                          "--launcher torchrun (run the printed command on every node with its --node-rank) or "
                          "--launcher slurm (inside an sbatch allocation)")
    for flag, advice in MANAGED_FLAGS.items():
        if _has_flag(extra_args, flag):
            raise RecipeError(f"{flag} after `--` would override the recipe's: {advice}")

    world = nodes * gpus
    plan = plan_batch(setting.tokens_per_update, world, max_tokens, setting.published_max_tokens, tolerance)
    fp16 = setting.fp16 if fp16 is None else fp16
    data_dir = data_dir or setting.data
    save_dir = save_dir or f"checkpoints/{setting.pair}_{setting.scheme}_{setting.layers}_{setting.source}"
    user_dir = os.path.dirname(os.path.abspath(__file__))

    s = setting
    train = [
        data_dir,
        "--user-dir", user_dir,
        "--task", "translation",
        "--source-lang", s.src_lang, "--target-lang", s.tgt_lang,
        "--arch", s.arch,
        "--encoder-layers", str(s.encoder_layers), "--decoder-layers", str(s.decoder_layers),
    ]
    if s.share_all_embeddings:
        train += ["--share-all-embeddings"]
    elif s.share_decoder_input_output_embed:
        train += ["--share-decoder-input-output-embed"]
    train += [
        "--optimizer", s.optimizer, "--adam-betas", f"({s.adam_betas[0]}, {s.adam_betas[1]})",
        "--clip-norm", _num(s.clip_norm), "--weight-decay", _num(s.weight_decay),
        "--lr", _num(s.lr), "--lr-scheduler", s.lr_scheduler,
    ]
    if s.lr_scheduler == "inverse_sqrt_nowarmup":  # no warm-up: the scheduler has no warm-up options
        train += ["--decay-period", str(s.decay_period)]
    else:
        train += ["--warmup-updates", str(s.warmup_updates), "--warmup-init-lr", _num(s.warmup_init_lr)]
    train += [
        "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", _num(s.label_smoothing),
        "--dropout", _num(s.dropout), "--attention-dropout", _num(s.attention_dropout),
        "--activation-dropout", _num(s.activation_dropout),
        "--max-tokens", str(plan.max_tokens), "--update-freq", str(plan.update_freq),
        "--distributed-world-size", str(world),
    ]
    if s.layer_init is not None:
        train += ["--layer-init", s.layer_init]
    if s.stop_min_lr is not None:
        train += ["--stop-min-lr", _num(s.stop_min_lr)]
    if s.word_dropout:
        train += ["--encoder-word-dropout", _num(s.word_dropout), "--decoder-word-dropout", _num(s.word_dropout)]
    if s.max_update is not None:
        train += ["--max-update", str(s.max_update)]
    if s.max_epoch is not None:
        train += ["--max-epoch", str(s.max_epoch)]
    if s.seed is not None:
        train += ["--seed", str(s.seed)]
    if fp16:
        train += ["--fp16", *s.fp16_args]
    train += ["--save-dir", save_dir, "--log-format", "simple", "--log-interval", "100"]
    if s.scheme == "admin" and not _has_flag(extra_args, "--admin-profile-load") \
            and (_flag_value(extra_args, "--admin-init") in (None, "profile")):
        # keep the profiled ω next to the checkpoints (Transformer-Clinic's profile.ratio.init format)
        train += ["--admin-profile-save", os.path.join(save_dir, "profile.ratio.init")]
    if launcher == "slurm":
        train += ["--distributed-port", str(distributed_port)]
    train += extra_args

    if launcher == "fairseq":
        argv = ["fairseq-train", *train]
    elif launcher == "torchrun":
        if master_addr is None:
            if nodes > 1:
                raise RecipeError("--launcher torchrun --nodes >1 needs --master-addr HOST (the node-rank-0 host) "
                                  "or MASTER_ADDR in the environment")
            master_addr = "localhost"
        if not 0 <= node_rank < nodes:
            raise RecipeError(f"--node-rank {node_rank} is outside 0..{nodes - 1}")
        argv = ["torchrun", "--nnodes", str(nodes), "--nproc-per-node", str(gpus), "--node-rank", str(node_rank),
                "--master-addr", master_addr, "--master-port", str(master_port), fairseq_train_path(), *train]
    else:  # slurm
        argv = ["srun", "--nodes", str(nodes), "--ntasks-per-node", str(gpus), "--gpus-per-node", str(gpus),
                "fairseq-train", *train]
    return argv, plan


def overridden_flags(argv_before_extra: Sequence[str], extra_args: Sequence[str]) -> list[str]:
    """Recipe flags that the extra args give again (argparse keeps the last, i.e. the extra one)."""
    flags = {tok.split("=", 1)[0] for tok in extra_args if tok.startswith("--")}
    return sorted(f for f in flags if f in set(argv_before_extra))


# ------------------------------------------------------------------------------------------------------------------
def format_table(settings: Sequence[Setting] = SETTINGS) -> str:
    cols = [
        ("pair", lambda s: s.pair), ("scheme", lambda s: s.scheme), ("layers", lambda s: s.layers),
        ("source", lambda s: s.source), ("arch", lambda s: s.arch),
        ("lr", lambda s: f"{s.lr:g}"), ("warmup", lambda s: str(s.warmup_updates)),
        ("drop", lambda s: f"{s.dropout:g}"), ("clip", lambda s: f"{s.clip_norm:g}"),
        ("wd", lambda s: f"{s.weight_decay:g}"),
        ("tok/update", lambda s: f"{s.tokens_per_update:,}"),
        ("= gpus x tok x freq", lambda s: f"{s.published_gpus}x{s.published_max_tokens}x{s.published_update_freq}"),
        ("stop", lambda s: ", ".join(x for x in (s.max_update and f"{s.max_update // 1000}k upd",
                                                 s.max_epoch and f"{s.max_epoch} ep") if x)),
        ("eval", lambda s: f"avg{s.avg_checkpoints} b{s.beam} lp{s.lenpen:g}"),
        ("BLEU", lambda s: "-" if s.bleu is None else f"{s.bleu:g}"),
        ("notes", lambda s: s.notes),
    ]
    rows = [[name for name, _ in cols]] + [[get(s) for _, get in cols] for s in settings]
    widths = [max(len(r[i]) for r in rows) for i in range(len(cols))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    common = ("Optimizer: radam (liu2020, liu2020b: every Transformer-Clinic command), adam (takase2023, huang2020).\n"
              "All rows: betas (0.9, 0.98), label smoothing 0.1, fp16; inverse_sqrt with warmup-init-lr 1e-7 and "
              "shared embeddings, except huang2020: inverse_sqrt_nowarmup (lr·sqrt(P/(P+n)), P = 4000) and "
              "--share-decoder-input-output-embed.\nBLEU: liu2020/liu2020b tokenized BLEU (fairseq) on newstest2014 / "
              "IWSLT14 test; takase2023 sacreBLEU on newstest2014; huang2020 tokenized BLEU on IWSLT14 test."
              "\nSources:\n" + "\n".join(sorted({f"  {s.source}: {s.paper}" for s in settings})))
    return "\n".join(lines) + "\n\n" + common


def make_parser(prog: str = "python -m fairseq_admin.recipes") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Print (and run) the fairseq-train command of a published Post-LN / Pre-LN / Admin / B2T / T-Fixup "
                    "setting, "
                    "keeping the paper's tokens per update on any number of GPUs. Arguments after a bare `--` go to "
                    "fairseq-train unchanged.",
        epilog="The published settings:\n" + published_list(), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--list", action="store_true", help="print the table of published settings and exit")
    p.add_argument("--pair", help="language pair: en-de, en-fr, de-en")
    p.add_argument("--scheme", choices=SCHEMES)
    p.add_argument("--layers", help="ENC-DEC layers, e.g. 18-18 or 60-12 (a single number means ENC = DEC)")
    p.add_argument("--source", help="paper key, when several papers published the setting (liu2020, liu2020b, "
                                    "takase2023, huang2020)")
    p.add_argument("--gpus", type=int, default=1, help="GPUs per node (default 1)")
    p.add_argument("--nodes", type=int, default=1, help="nodes (default 1); tokens per update spans nodes x gpus")
    p.add_argument("--max-tokens", type=int, help="tokens per GPU per batch; --update-freq is then adjusted "
                                                  "(default: the paper's, or less when that would overshoot)")
    p.add_argument("--data", help="binarized data directory (default: the setting's, e.g. data/wmt14_en_de/data-bin)")
    p.add_argument("--save-dir", help="checkpoint directory (default checkpoints/PAIR_SCHEME_LAYERS_SOURCE)")
    p.add_argument("--no-fp16", action="store_true", help="drop --fp16 and its flags (e.g. with `-- --cpu`)")
    p.add_argument("--launcher", choices=LAUNCHERS, default="fairseq",
                   help="fairseq: fairseq-train on one node (default); torchrun: print/run the command of one node "
                        "(--node-rank); slurm: srun inside an allocation")
    p.add_argument("--node-rank", type=int, help="torchrun node rank (default: $NODE_RANK, else 0)")
    p.add_argument("--master-addr", default=os.environ.get("MASTER_ADDR"), help="torchrun: host of node rank 0")
    p.add_argument("--master-port", type=int, help="torchrun (default: $MASTER_PORT, else 29500)")
    p.add_argument("--distributed-port", type=int, default=12345, help="slurm: fairseq's rendezvous port")
    p.add_argument("--tolerance", type=float, default=TOLERANCE,
                   help=f"largest relative deviation from the paper's tokens per update (default {TOLERANCE})")
    p.add_argument("--dry-run", action="store_true", help="print the command and exit")
    return p


def _environment_int(parser: argparse.ArgumentParser, name: str, default: int) -> int:
    """$NAME as a whole number >= 0 (a default of --node-rank / --master-port), else ``default``; one line if not."""
    value = os.environ.get(name)
    if value is None:
        return default
    if not value.isdigit():
        parser.error(f"environment variable {name} must be a non-negative integer, got {value!r}")
    return int(value)


def main(argv: Optional[Sequence[str]] = None, prog: str = "python -m fairseq_admin.recipes") -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1:]
    parser = make_parser(prog)
    args = parser.parse_args(argv)
    if args.node_rank is None:
        args.node_rank = _environment_int(parser, "NODE_RANK", 0)
    if args.master_port is None:
        args.master_port = _environment_int(parser, "MASTER_PORT", 29500)
    if args.list:
        print(format_table())
        return 0
    missing = [f"--{n}" for n in ("pair", "scheme", "layers") if getattr(args, n) is None]
    if missing:
        parser.error(f"{', '.join(missing)} required (or --list). The published settings:\n{published_list()}")
    try:
        setting = find_setting(args.pair, args.scheme, args.layers, args.source)
        cmd, plan = build_train_command(
            setting, args.data, args.save_dir, args.gpus, args.max_tokens, extra, nodes=args.nodes,
            launcher=args.launcher, fp16=False if args.no_fp16 else None, node_rank=args.node_rank,
            master_addr=args.master_addr, master_port=args.master_port, distributed_port=args.distributed_port,
            tolerance=args.tolerance)
    except RecipeError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2

    info = (f"[recipes] {setting.name}: {setting.paper}\n"
            f"[recipes] tokens per update {plan.tokens_per_update:,} = {plan.world_size} GPU(s) x --max-tokens "
            f"{plan.max_tokens} x --update-freq {plan.update_freq} (paper: {setting.tokens_per_update:,} = "
            f"{setting.published_gpus} x {setting.published_max_tokens} x {setting.published_update_freq}, "
            f"{plan.relative_error:+.2%})\n"
            f"[recipes] evaluate: average the last {setting.avg_checkpoints} epoch checkpoints, beam {setting.beam}, "
            f"lenpen {setting.lenpen:g}" + (f"; published BLEU {setting.bleu:g} ({setting.bleu_metric})"
                                            if setting.bleu is not None else ""))
    print(info, file=sys.stderr)
    if plan.max_tokens < MIN_SENSIBLE_MAX_TOKENS:
        print(f"[recipes] warning: --max-tokens {plan.max_tokens} is small: sentences longer than that cannot form a "
              "batch; use fewer GPUs (more --update-freq) if fairseq complains", file=sys.stderr)
    for flag in overridden_flags(cmd[:len(cmd) - len(extra)], extra):
        print(f"[recipes] note: {flag} after `--` overrides the recipe's value", file=sys.stderr)
    if args.launcher == "torchrun" and args.nodes > 1:
        print(f"[recipes] run this on each of the {args.nodes} nodes with its own --node-rank "
              f"(0..{args.nodes - 1})", file=sys.stderr)
    print(shlex.join(cmd), flush=True)
    if args.dry_run:
        return 0
    data_dir = args.data or setting.data
    if not os.path.isdir(data_dir):
        print(f"{prog}: error: data directory {data_dir!r} does not exist: binarize the corpus first "
              "(fairseq-admin-prepare, or fairseq-preprocess --joined-dictionary) or give --data DIR", file=sys.stderr)
        return 2
    sys.stderr.flush()
    try:
        os.execvp(cmd[0], cmd)
    except FileNotFoundError:
        print(f"{prog}: error: {cmd[0]} not found on PATH (activate the environment: source .venv/bin/activate)",
              file=sys.stderr)
        return 127


def cli_main() -> None:
    """``fairseq-admin-train``: the installed command (setup.py)."""
    sys.exit(main(prog="fairseq-admin-train"))


if __name__ == "__main__":  # scripts/train.sh runs this file by path (standard library only: no package import)
    sys.exit(main(prog=os.environ.get("FAIRSEQ_ADMIN_RECIPES_PROG", "python -m fairseq_admin.recipes")))
