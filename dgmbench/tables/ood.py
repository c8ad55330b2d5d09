"""``results/tables/ood.{csv,md}``: OOD detection by each likelihood model, per (train dataset → OOD set) and score.

One row per model × (train dataset → OOD set) × score (likelihood, typicality, complexity), with AUROC and
FPR at 95% TPR as mean ± sd over the seeds that trained without diverging, and the mean NLL (bits/dim) of the
in-distribution test images and of the OOD set beside them, so an AUROC below 0.5 can be read off as "the model
gives the OOD set a higher likelihood".

``ood_auroc.{csv,md}`` is the same AUROCs side by side, one row per model × (train dataset → OOD set) and one
column per score, to read at a glance which score repairs which failure of the plain likelihood.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from . import fmt_mean_sd, group_runs, ok_results, register_table, write_table

SCORE_NOTES = {
    "likelihood": "−log₂ p(x)/D",
    "typicality": "|batch mean NLL − Ĥ_train|",
    "complexity": "(−log₂ p(x) − PNG bits)/D",
}


@register_table("ood")
def ood_table(runs: list[dict], out_dir: Path) -> list[Path]:
    rows = []
    skipped: dict[tuple[str, str], str] = {}
    batch_sizes = set()
    for (dataset, model), group in group_runs(runs).items():
        ok = ok_results(group, "ood")
        if not ok:
            continue
        batch_sizes.add(ok[0].typicality_batch)
        for name, reason in ok[0].skipped.items():
            skipped[(dataset, name)] = reason
        for ood_set in ok[0].sets:
            present = [o for o in ok if ood_set in o.sets]
            for score in ok[0].sets[ood_set].scores:
                per_seed = [o.sets[ood_set].scores[score] for o in present]
                rows.append({
                    "model": model,
                    "family": group[0].info.family,
                    "estimator": ok[0].estimator,
                    "train → OOD": f"{dataset} → {ood_set}",
                    "score": score,
                    "AUROC": fmt_mean_sd([s.auroc for s in per_seed], 3),
                    "FPR@95%TPR": fmt_mean_sd([s.fpr95 for s in per_seed], 3),
                    "NLL bits/dim (in / OOD)": (
                        f"{fmt_mean_sd([o.in_nll_bpd_mean for o in present])} / "
                        f"{fmt_mean_sd([o.sets[ood_set].nll_bpd_mean for o in present])}"
                    ),
                    "images (in / OOD)": f"{ok[0].num_in} / {ok[0].sets[ood_set].num_images}",
                    "seeds": f"{len(present)}/{len(group)}",
                })
    notes = [
        "Positive class = OOD; a higher score means more OOD. AUROC = P(s_OOD > s_in) + ½P(tie): 0.5 is chance, "
        "below 0.5 means the score ranks the OOD set as *more* in-distribution. FPR@95%TPR: fraction of "
        "in-distribution test images flagged at the threshold that catches 95% of the OOD set (lower is better).",
        "Scores: " + "; ".join(f"{k} = {v}" for k, v in SCORE_NOTES.items())
        + f". The typicality score is per batch of M = {', '.join(map(str, sorted(batch_sizes))) or '—'} images "
        "(Nalisnick et al. 2019); complexity is Serrà et al. (2020) with PNG (Pillow) as the generic compressor.",
        "Bound families (ELBO, dequantised bound, VLB) score with their bound, not the exact log p(x) (see 'estimator').",
        "mean ± sd over seeds (sample sd); diverged runs are left out ('seeds' = runs with an OOD section / all runs).",
    ]
    notes += [f"{ds} → {name}: not measured, dataset not installed ({reason.split(':')[0]})" for (ds, name), reason in sorted(skipped.items())]
    df = pd.DataFrame(rows)
    if len(df):
        df = df.sort_values(["train → OOD", "model", "score"], kind="stable").reset_index(drop=True)
    return write_table(df, out_dir, "ood", notes=notes) + auroc_summary(df, out_dir, notes)


def auroc_summary(df: pd.DataFrame, out_dir: Path, notes: list[str]) -> list[Path]:
    """``ood_auroc``: one row per (train → OOD, model), the AUROC of each score in its own column."""
    keys = ["train → OOD", "model", "estimator", "NLL bits/dim (in / OOD)", "images (in / OOD)", "seeds"]
    if len(df):
        wide = df.pivot(index=keys, columns="score", values="AUROC")
        wide = wide[[s for s in SCORE_NOTES if s in wide.columns]]
        wide.columns = [f"AUROC {s}" for s in wide.columns]
        wide = wide.reset_index()[["train → OOD", "model", "estimator", *wide.columns, "NLL bits/dim (in / OOD)",
                                   "images (in / OOD)", "seeds"]]
    else:
        wide = df
    intro = ["AUROC (mean ± sd over seeds) of each score; FPR@95%TPR and the per-score rows are in ood.md."]
    return write_table(wide, out_dir, "ood_auroc", notes=intro + notes)
