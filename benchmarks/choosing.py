#!/usr/bin/env python3
"""Which scheme for a deep MT model: the generated parts of docs/choosing.md and docs/choosing-18-18.png, from the
result files only (nothing is trained or decoded; seconds).

    python benchmarks/choosing.py                                        # this page only
    bash benchmarks/render_grid.sh --results benchmarks/results/grid-1000   # the grid's TABLE.md, then this page

Reads RESULTS/*_seed*.json (default benchmarks/results/grid-1000, written by depth_grid.py; only the standard regime
at 1000 updates is used, any other cell there is counted and left out) and the cost-<UTC time>.json reports of
benchmarks/results (cost.py). Writes

* docs/choosing.md: the text between each pair of marker lines ``<!-- choosing.py:begin NAME -->`` and
  ``<!-- choosing.py:end NAME -->`` (NAME: ``status``, ``table``). Everything outside them, the hand-written
  answer, is kept byte for byte; a missing file is created with both pairs and nothing else.
* docs/choosing-18-18.png: validation loss against updates at 18-18, one colour per scheme family (:data:`FAMILIES`),
  a shade and marker per scheme, solid seed 1 / dashed seed 2, an X where depth_grid.judge flagged a divergence.

Rows: every registered scheme (fairseq_admin.schemes.SCHEMES), every named variant of depth_grid.py (VARIANTS,
the ``--norm`` rows included), and any other row name a result file holds. A row without cells says "not run yet". Per cell: final validation loss and sacreBLEU, one value
per seed (never a mean), flagged when the cell failed (:func:`failures`). The export route is what
fairseq_admin.cli.export.scheme_of and fairseq_admin.cli.ct2_peri_ln.refusal answer for the row's configuration; the
cost, the newest cost report that measured the row's scheme with the row's options at 18-18.

The one benchmark script that imports another: the grid's variants and its rendering helpers are depth_grid.py's.
"""
import argparse
import glob
import json
import math
import os
import re
import sys
import textwrap
from collections import namedtuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import depth_grid  # noqa: E402  (VARIANTS, variant, _checkpoint_mark, _fmt: the grid's own definitions)
from common import ROOT  # noqa: E402

DEFAULT_RESULTS = os.path.join(ROOT, "benchmarks", "results", "grid-1000")
DEFAULT_COST_DIR = os.path.join(ROOT, "benchmarks", "results")
DEFAULT_DOC = os.path.join(ROOT, "docs", "choosing.md")
DEFAULT_PNG = os.path.join(ROOT, "docs", "choosing-18-18.png")
REGIME, MAX_UPDATE, DEEP = "standard", 1000, "18-18"
#: the cells each row should get: seeds per depth (what "partial: N of M cells" counts)
PLAN = {"18-18": (1, 2), "6-6": (1,)}
#: a cell whose beam outputs are this few distinct sentences (a share of the test set) has collapsed: the model
#: answers most inputs with a handful of sentences (it reads little of its source), whatever its loss
COLLAPSED_BELOW = 0.5
REGION = re.compile(r"(<!-- choosing\.py:begin (\w+) -->\n)(.*?)(<!-- choosing\.py:end \2 -->)", re.S)
SKELETON = ("# Which scheme for a deep MT model\n\n<!-- choosing.py:begin status -->\n<!-- choosing.py:end status -->"
            "\n\n<!-- choosing.py:begin table -->\n<!-- choosing.py:end table -->\n")

Family = namedtuple("Family", "name desc cmap members")
#: Families by where the normalization sits; a row not named here joins its base scheme's family.
FAMILIES = (
    Family("Post-LN", "LN after each residual sum", "Reds",
           ("postln", "admin", "admin-ologn", "deepnorm", "b2t", "ds_init")),
    Family("Pre-LN", "LN on the branch input, a final LN per stack (Mix-LN: Pre-LN above its Post-LN quarter)",
           "Blues", ("preln", "lns", "mix_ln")),
    Family("Peri-LN", "LN on the branch output", "Purples", ("peri_ln", "peri_ln-output")),
    Family("dual stream", "a Post-LN and an un-normalized stream", "Greens", ("resi_dual",)),
    Family("norm-free", "no LN at all", "Oranges", ("t_fixup", "rezero")),
)
OTHER = Family("other", "", "Greys", ())
#: row -> (official code, what it changes in plain words). The repositories are the ones each scheme's module
#: docstring cites (tests/test_choosing.py checks it); a row not here gets its base scheme's, with its options.
ABOUT = {
    "postln": ("fairseq's own `transformer`", "nothing: the baseline, LN after each residual sum"),
    "preln": ("none with the paper; fairseq's `--encoder/decoder-normalize-before`",
              "the LN moves onto the branch input; a final LN per stack"),
    "admin": ("LiyuanLucasLiu/Transformer-Clinic",
              "Post-LN with the shortcut × ω, ω profiled on one batch before training"),
    "admin-ologn": ("microsoft/admin-torch",
                    "Admin with ω from the closed form √((n+1)/ln(n+1) − 1), no profiling"),
    "deepnorm": ("microsoft/torchscale",
                 "Post-LN with the shortcut × α > 1 and the branch's initial weights × β < 1"),
    "b2t": ("takase/b2t_connection", "Post-LN plus the layer's input added before its last LN"),
    "ds_init": ("bzhangGo/zero", "Post-LN whose initial weights shrink with the layer's depth"),
    "lns": ("lmsdss/LayerNorm-Scaling", "Pre-LN with each pre-norm output × 1/√l, l the layer's depth"),
    "mix_ln": ("pixeli99/MixLN", "the lowest quarter of each stack Post-LN, the rest Pre-LN"),
    "peri_ln": ("none (the paper has no code)", "Pre-LN plus an LN on each branch output and on the embedding"),
    "peri_ln-output": ("none (OLMo 2's and Swin v2's form)", "an LN on each branch output only"),
    "resi_dual": ("microsoft/ResiDual", "Post-LN plus a second, un-normalized residual stream added back at the top"),
    "t_fixup": ("layer6ai-labs/T-Fixup", "no LN at all; depth-scaled initial weights and embeddings"),
    "rezero": ("majumderb/rezero", "no LN; each layer's branches × a learned α that starts at 0"),
}
#: --norm values: (paper, official code, what replaces every LayerNorm)
NORMS = {"rmsnorm": ("Zhang & Sennrich 2019", "bzhangGo/rmsnorm", "RMSNorm x/RMS(x)·g"),
         "dyt": ("Zhu et al. 2025", "jiachenzhu/DyT", "DyT γ·tanh(αx)+β")}

Row = namedtuple("Row", "name scheme options family")


class ChoosingError(Exception):
    """A bad input, printed in one line before anything is written."""


# ---- rows ------------------------------------------------------------------------------------------------------------
def family_of(name, scheme):
    for family in FAMILIES:
        if name in family.members:
            return family
    for family in FAMILIES:
        if scheme in family.members:
            return family
    return OTHER


def all_rows(cell_names=()):
    """Every row in the page's order: family by family, the family's named members first, then its variants."""
    from fairseq_admin.schemes import SCHEMES
    defined = {name: (name, []) for name in SCHEMES}
    defined.update({name: (scheme, list(options)) for name, (scheme, options, _) in depth_grid.VARIANTS.items()})
    for name in cell_names:  # a result of a row defined nowhere above (a variant since renamed): still shown
        if name not in defined:
            defined[name] = (name, [])
    rows = [Row(name, scheme, options, family_of(name, scheme)) for name, (scheme, options) in defined.items()]
    order = list(FAMILIES) + [OTHER]

    def key(row):
        members = row.family.members
        return (order.index(row.family), members.index(row.name) if row.name in members else len(members),
                list(defined).index(row.name))
    return sorted(rows, key=key)


def model_config(row):
    """The model options a checkpoint of this row records: ``residual_scheme`` and the row's extra options
    (``--norm rmsnorm`` -> norm='rmsnorm', a flag -> True)."""
    cfg, options = {"residual_scheme": row.scheme}, list(row.options)
    while options:
        option = options.pop(0)
        value = options.pop(0) if options and not options[0].startswith("--") else True
        cfg[option.lstrip("-").replace("-", "_")] = value
    return cfg


# ---- results ---------------------------------------------------------------------------------------------------------
def load_cells(results_dir):
    """({(row name, layers): {seed: result}} of the standard 1000-update cells, the number of other cells left out)."""
    cells, left_out = {}, 0
    for path in sorted(glob.glob(os.path.join(results_dir, "*_seed*.json"))):
        try:
            result = json.load(open(path))
            key, seed = (result["scheme"], result["layers"]), int(result["seed"])
            regime, budget = result["regime"], result.get("max_update")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ChoosingError(f"{path}: not a depth_grid result ({exc})") from None
        if regime != REGIME or budget != MAX_UPDATE:
            left_out += 1
            continue
        cells.setdefault(key, {})[seed] = result
    return cells, left_out


def failures(result):
    """What went wrong in one cell, as short phrases (empty: it trained and translates)."""
    out = []
    if result.get("diverged"):
        out.append(f"diverged @{result.get('diverged_at_update')}")
    if result.get("stalled_near_unigram"):
        out.append("stalled near the unigram level")
    evaluation = result.get("evaluation") or {}
    distinct, sentences = evaluation.get("distinct_hypotheses"), evaluation.get("sentences")
    if distinct is not None and sentences and distinct < COLLAPSED_BELOW * sentences:
        out.append(f"{distinct}/{sentences} distinct outputs")
    return out


def _value(x):
    return "—" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.2f}"


def per_seed(by_seed, show):
    """One value per seed, ' / ' between them, ✗ after a failed cell's; which seeds, unless they are the plan's."""
    if not by_seed:
        return "not run yet"
    seeds = sorted(by_seed)
    text = " / ".join(show(by_seed[s]) + (" ✗" if failures(by_seed[s]) else "") for s in seeds)
    if len(seeds) == 1:
        return f"{text} (seed {seeds[0]} only)"
    return text if tuple(seeds) == (1, 2) else f"{text} (seeds {', '.join(map(str, seeds))})"


def loss_and_bleu(by_seed):
    return (per_seed(by_seed, lambda r: _value(r.get("final_valid_loss"))),
            per_seed(by_seed, lambda r: _value(r.get("bleu")) + depth_grid._checkpoint_mark(r)))


def failure_cell(row, cells):
    found, lines = False, []
    for layers in PLAN:
        by_seed = cells.get((row.name, layers), {})
        found = found or bool(by_seed)
        bad = {s: failures(r) for s, r in sorted(by_seed.items()) if failures(r)}
        lines += [f"{layers} seed {s}: {', '.join(f)}" for s, f in bad.items()]
        if bad and len(bad) < len(by_seed):
            lines.append(f"**{layers}: the seeds disagree** (one fails, one trains)")
    extra = sorted(k for k in cells if k[0] == row.name and k[1] not in PLAN)
    for _, layers in extra:
        found = True
        for s, r in sorted(cells[(row.name, layers)].items()):
            if failures(r):
                lines.append(f"{layers} seed {s}: {', '.join(failures(r))}")
    if not found:
        return "not run yet"
    return "<br>".join(lines) if lines else "none"


# ---- cost and export -------------------------------------------------------------------------------------------------
def load_costs(cost_dir):
    """cost.py's reports (cost-<UTC time>.json), newest first; smoke runs left out."""
    reports = []
    for path in sorted(glob.glob(os.path.join(cost_dir, "cost-*.json")), reverse=True):
        if not re.fullmatch(r"cost-\d{8}T\d{4}Z\.json", os.path.basename(path)):
            continue
        try:
            report = json.load(open(path))
        except (OSError, ValueError) as exc:
            raise ChoosingError(f"{path}: not a cost.py report ({exc})") from None
        if not (report.get("setup") or {}).get("smoke"):
            reports.append((os.path.basename(path), report))
    return reports


def _ratio(part, prefix="cpu_"):
    if f"{prefix}throughput_ratio_median" not in part:
        prefix = ""
    if f"{prefix}throughput_ratio_median" not in part:
        return None
    return (f"{part[prefix + 'throughput_ratio_median']:.3f} [{part[prefix + 'throughput_ratio_min']:.3f}, "
            f"{part[prefix + 'throughput_ratio_max']:.3f}]")


def cost_cell(row, reports):
    """(text, report file) of the newest report that measured the row's scheme with the row's options at 18-18."""
    for name, report in reports:
        if ((report.get("setup") or {}).get("scheme_args") or "") != " ".join(row.options):
            continue
        for r in report.get("results", []):
            if r.get("scheme") == row.scheme and r.get("layers") == DEEP:
                train, gen = _ratio(r.get("train") or {}), _ratio(r.get("generate") or {})
                text = f"train {train or 'not measured'}<br>generate {gen or 'not measured'}"
                profiling = [p for p in report.get("admin_profiling", []) if p.get("layers") == DEEP]
                if row.scheme == "admin" and "--admin-init" not in row.options and profiling:
                    text += f"<br>+ profiling once: {profiling[0]['ratio_median']:.2f} of a training step"
                return text, name
    return "not measured", None


def export_route(row):
    """(route, why the others are closed) from the export tools' own decisions for this row's configuration."""
    from fairseq_admin.cli import ct2_peri_ln, export
    cfg = model_config(row)
    try:
        export.scheme_of(cfg)
        return "stock fairseq (`fairseq-admin-export`), then CTranslate2", None
    except export.ExportError as exc:
        refused = str(exc)
    ct2_refused = ct2_peri_ln.refusal(cfg, f"a {row.name} checkpoint")
    if ct2_refused is None:
        return "CTranslate2 (`python -m fairseq_admin.cli.ct2_peri_ln`)", refused
    # the CTranslate2 converter's own reason where the row is one it is meant for (peri_ln, a --norm), else export's
    live = row.scheme == "peri_ln" or cfg.get("norm") not in (None, "layernorm")
    return "none", refused + (f"; CTranslate2: {ct2_refused}" if live else "")


# ---- the page --------------------------------------------------------------------------------------------------------
def paper_cell(row):
    from fairseq_admin.schemes import SCHEMES
    scheme = SCHEMES.get(row.scheme)
    code, _ = ABOUT.get(row.name) or ABOUT.get(row.scheme) or ("", "")
    paper = scheme.paper if scheme is not None else "a row of the results only (not in SCHEMES or VARIANTS)"
    norm = model_config(row).get("norm")
    if norm in NORMS:
        paper += f" + {NORMS[norm][0]}"
        code = f"{code}; {NORMS[norm][1]}"
    return f"{paper}<br>{code}"


def change_cell(row):
    from fairseq_admin.schemes import SCHEMES
    if row.name in ABOUT:
        words = ABOUT[row.name][1]
    else:
        words = (ABOUT.get(row.scheme) or ("", row.scheme))[1]
        norm = model_config(row).get("norm")
        words += f"; {NORMS[norm][2]} in place of every LayerNorm" if norm in NORMS else (
            f"; with `{' '.join(row.options)}`" if row.options else "")
    scheme = SCHEMES.get(row.scheme)
    return words + (f"<br>`{scheme.formula}`" if scheme is not None and row.name == row.scheme else "")


def counts(rows, cells):
    planned = sum(len(seeds) for seeds in PLAN.values()) * len(rows)
    have = sum(1 for row in rows for layers, seeds in PLAN.items() for s in seeds
               if s in cells.get((row.name, layers), {}))
    outside = sum(1 for (_, layers), by_seed in cells.items() for s in by_seed if s not in PLAN.get(layers, ()))
    return have, planned, outside


def status_text(rows, cells, left_out):
    have, planned, outside = counts(rows, cells)
    plan = ", ".join(f"{layers} seed{'s' if len(seeds) > 1 else ''} {' and '.join(map(str, seeds))}"
                     for layers, seeds in PLAN.items())
    empty = [row.name for row in rows if not any((row.name, layers) in cells for layers in PLAN)]
    finished = [r.get("finished_utc", "") for by_seed in cells.values() for r in by_seed.values()]
    text = (f"**{'Partial' if have < planned else 'Complete'}: {have} of {planned} cells.** The plan is {plan} for "
            f"each of the {len(rows)} rows, standard regime, {MAX_UPDATE} updates"
            + (f"; {outside} more cell{'s' if outside > 1 else ''} outside it" if outside else "")
            + (f"; {left_out} cell{'s' if left_out > 1 else ''} of other regimes or budgets left out"
               if left_out else "")
            + ".")
    if finished:
        text += f" Newest cell: finished {max(finished)[:16].replace('T', ' ')} UTC."
    if empty:
        text += f" Rows with no cell yet (\"not run yet\"): {', '.join(empty)}."
    return text


def table_text(rows, cells, reports):
    head = ("| scheme | family | paper<br>official code | what it changes | 18-18 valid loss<br>seed 1 / seed 2 | "
            "18-18 sacreBLEU<br>seed 1 / seed 2 | 6-6 valid loss · sacreBLEU | failures | "
            "cost against vanilla fairseq, 18-18, CPU<br>throughput ratio, median [min, max] | export route |")
    lines = [head, "|" + "---|" * 10]
    closed, sources = [], {}
    for row in rows:
        deep_loss, deep_bleu = loss_and_bleu(cells.get((row.name, DEEP), {}))
        shallow = cells.get((row.name, "6-6"), {})
        shallow_text = "not run yet" if not shallow else " · ".join(loss_and_bleu(shallow))
        cost, source = cost_cell(row, reports)
        if source:
            sources.setdefault(source, []).append(row.name)
        route, why = export_route(row)
        if why:
            closed.append(f"- `{row.name}`: {why}")
        lines.append(f"| `{row.name}` | {row.family.name} | {paper_cell(row)} | {change_cell(row)} | {deep_loss} | "
                     f"{deep_bleu} | {shallow_text} | {failure_cell(row, cells)} | {cost} | {route} |")
    unigram = next((r.get("unigram_valid_bits") for by_seed in cells.values() for r in by_seed.values()
                    if r.get("unigram_valid_bits")), None)
    notes = [
        "",
        "Multi30k En-De (29,000 training pairs), d=128, ffn 512, 4 heads, shared embeddings, dropout 0.1, Adam, "
        f"lr 1e-3 with 200 warm-up updates (the grid's standard regime), {MAX_UPDATE} updates of 3,500 tokens, CPU, "
        "float32. "
        "Valid loss: fairseq's label-smoothed loss on the validation set after the last update, bits per token"
        + (f" (the unigram level of the valid targets: {unigram:.2f} bits)" if unigram else "") + ". sacreBLEU: "
        "test_2016_flickr, beam 4, from `checkpoint_best.pt` (†: from `checkpoint_last.pt`, a later update than the "
        "best, in cells run before the grid evaluated the best). One value per seed; ✗: that cell failed (failures "
        f"column: divergence as depth_grid.py flags it, a final validation nll within 0.5 bit of the unigram level, or "
        f"fewer than {COLLAPSED_BELOW:.0%} distinct test outputs). Families: "
        + "; ".join(f"{f.name}: {f.desc}" for f in FAMILIES) + ".",
        "",
        "Cost: training target tokens/s and generation sentences/s (beam 4) of the scheme over fairseq's own "
        "`transformer` of the same dimensions (Pre-LN's over fairseq's `--encoder/decoder-normalize-before`), "
        "CPU time at 1 thread, from "
        + ("; ".join(f"`benchmarks/results/{name}` ({', '.join(names)})" for name, names in sources.items())
           if sources else "no cost report") + ". Export route: what `fairseq-admin-export` "
        "(`fairseq_admin.cli.export.scheme_of`) and `fairseq_admin.cli.ct2_peri_ln.refusal` answer for the row's "
        "configuration. Where there is no stock route, in their words:",
        "",
    ] + closed
    return "\n".join(lines + notes)


def read_doc(doc, names=("status", "table")):
    """The page's text (the skeleton when it does not exist yet), refused if a marker pair is missing or doubled."""
    text = open(doc, encoding="utf-8").read() if os.path.exists(doc) else SKELETON
    found = [m.group(2) for m in REGION.finditer(text)]
    for name in names:
        begin = f"<!-- choosing.py:begin {name} -->"
        if found.count(name) != 1 or text.count(begin) != 1:
            raise ChoosingError(f"{doc}: needs exactly one '{begin}' line followed later by "
                                f"'<!-- choosing.py:end {name} -->'; nothing written")
    return text


def write_regions(doc, text, regions):
    """``text`` with each named marker pair's content replaced by ``regions[name]``, written atomically to ``doc``."""
    new = REGION.sub(lambda m: m.group(1) + (regions[m.group(2)].rstrip("\n") + "\n" if m.group(2) in regions
                                             else m.group(3)) + m.group(4), text)
    from fairseq_admin.output_safety import atomic_write
    with atomic_write(doc) as f:
        f.write(new)


# ---- the figure ------------------------------------------------------------------------------------------------------
def plot(rows, cells, png, status_line):
    """Validation loss against updates at 18-18 (see the module docstring)."""
    import logging

    logging.getLogger("matplotlib").setLevel(logging.WARNING)  # importing fairseq left the root logger at DEBUG
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Rectangle

    styles = {1: "-", 2: "--", 3: ":"}
    markers = ("o", "s", "^", "D", "v", "P", "X", "*")
    fig, ax = plt.subplots(figsize=(12, 7), layout="constrained")
    results = [r for row in rows for r in cells.get((row.name, DEEP), {}).values()]
    unigram = next((r["unigram_valid_bits"] for r in results if r.get("unigram_valid_bits")), None)
    finite = [p["loss"] for r in results for p in r["valid_curve"] if math.isfinite(p["loss"])]
    # 2 bits above the unigram level (room for a stall, while the trained curves keep most of the height), or the
    # first validation's level if higher
    first = [p["loss"] for r in results for p in r["valid_curve"][:1] if math.isfinite(p["loss"])]
    top = max([unigram + 2] + [x + 0.2 for x in first]) if unigram else max(finite, default=12)
    handles, labels = [], []
    for family in list(FAMILIES) + [OTHER]:
        members = [row for row in rows if row.family is family]
        shown = [row for row in members if cells.get((row.name, DEEP))]
        if not shown:
            continue
        handles.append(Rectangle((0, 0), 0, 0, alpha=0))
        labels.append(f"{family.name} family")
        cmap = plt.get_cmap(family.cmap)
        for k, row in enumerate(shown):
            color = cmap(1.0 - 0.6 * k / max(len(shown) - 1, 1))  # the family's hue, darkest first
            marker = markers[members.index(row) % len(markers)]  # a scheme keeps its marker as cells land
            notes = []
            for seed, r in sorted(cells[(row.name, DEEP)].items()):
                v = [p for p in r["valid_curve"] if math.isfinite(p["loss"])]
                xs, ys = [p["update"] for p in v], [p["loss"] for p in v]
                ax.plot(xs, ys, color=color, ls=styles.get(seed, "-."), marker=marker, ms=5.5, markevery=2, lw=1.5)
                if r.get("diverged") and r.get("diverged_at_update") in xs:
                    x = r["diverged_at_update"]
                    ax.plot([x], [min(ys[xs.index(x)], top - 0.12)], marker="X", ms=14, color=color, mec="black",
                            mew=1.3, ls="none", zorder=5)
                if ys and ys[-1] > top:  # ends off the scale: say where it went, from where it left
                    x = xs[max((k for k in range(1, len(ys)) if ys[k] > top >= ys[k - 1]), default=0)]
                    ax.annotate(f"{row.name} s{seed} off the scale: {ys[-1]:.1f} at {xs[-1]}", (x, top),
                                xytext=(10 if x < MAX_UPDATE / 2 else -10, -14 * seed), textcoords="offset points",
                                ha="left" if x < MAX_UPDATE / 2 else "right", fontsize=8, color=color)
                short = [f.replace(" near the unigram level", "").replace(" outputs", "") for f in failures(r)]
                if short:
                    notes.append(f"s{seed}: {', '.join(short)}")
            seeds = sorted(cells[(row.name, DEEP)])
            label = row.name + ("" if seeds == [1, 2] else f" (seed {', '.join(map(str, seeds))} only)")
            handles.append(Line2D([], [], color=color, marker=marker, ms=6, lw=1.5))
            labels.append(label + "".join(f"\n ✗ {note}" for note in notes))
    if unigram:
        ax.axhline(unigram, color="grey", ls=":", lw=1)
        handles.append(Line2D([], [], color="grey", ls=":"))
        labels.append(f"unigram level ({unigram:.2f} bits)")
    handles += [Line2D([], [], color="black", ls="-"), Line2D([], [], color="black", ls="--"),
                Line2D([], [], marker="X", ms=11, color="white", mec="black", ls="none")]
    labels += ["seed 1", "seed 2", "divergence flagged"]
    ax.set_ylim(min(finite, default=4) - 0.2, top)
    ax.set_xlim(0, MAX_UPDATE + 10)
    ax.grid(alpha=0.3)
    ax.set(xlabel="update", ylabel="validation loss (bits/token, label-smoothed)")
    ax.set_title("Validation loss at 18-18 layers: one colour per family, solid seed 1, dashed seed 2\n"
                 f"Multi30k En-De, d=128, lr 1e-3 with 200 warm-up updates, {MAX_UPDATE} updates, CPU", fontsize=10.5)
    fig.legend(handles, labels, loc="outside right upper", fontsize=9, frameon=False, handlelength=2.6)
    fig.supxlabel("\n".join(textwrap.wrap(status_line, 190)), fontsize=7.5)
    from fairseq_admin.output_safety import atomic_write
    with atomic_write(png, "wb") as f:
        fig.savefig(f, format="png", dpi=90)
    plt.close(fig)


def plain(markdown):
    return re.sub(r"\*\*|`", "", markdown).replace('\\"', '"')


# ---- main ------------------------------------------------------------------------------------------------------------
def main(argv=None):
    p = argparse.ArgumentParser(prog="choosing.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", default=DEFAULT_RESULTS,
                   help="grid result JSONs (default benchmarks/results/grid-1000)")
    p.add_argument("--cost-dir", default=DEFAULT_COST_DIR, help="where cost-<UTC>.json reports are "
                                                                "(default benchmarks/results)")
    p.add_argument("--doc", default=DEFAULT_DOC, help="the page whose marked regions are rewritten (docs/choosing.md)")
    p.add_argument("--png", default=DEFAULT_PNG, help="the figure (default docs/choosing-18-18.png)")
    args = p.parse_args(argv)
    try:
        for option, path in (("--results", args.results), ("--cost-dir", args.cost_dir)):
            if not os.path.isdir(path):
                raise ChoosingError(f"{option} {path}: no such directory")
        for option, path in (("--doc", args.doc), ("--png", args.png)):
            if os.path.isdir(path) or not os.path.isdir(os.path.dirname(os.path.abspath(path))):
                raise ChoosingError(f"{option} {path}: not a file in an existing directory")
        cells, left_out = load_cells(args.results)
        rows = all_rows(sorted({name for name, _ in cells}))
        reports = load_costs(args.cost_dir)
        status = status_text(rows, cells, left_out)
        table = table_text(rows, cells, reports)
        text = read_doc(args.doc)  # the markers are checked before anything is written
        plot(rows, cells, args.png, plain(status))
        write_regions(args.doc, text, {"status": status, "table": table})
    except ChoosingError as exc:
        print(f"choosing.py: error: {exc}", file=sys.stderr)
        return 2
    print(plain(status))
    print(f"wrote {args.doc} (status, table) and {args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
