"""``results/tables/probe.{csv,md}``: linear-probe and k-NN accuracy of every model's representation.

One row per (dataset, model) that embeds, one per model's untrained twin (same architecture and Config,
random initialisation), and one raw-pixel row per dataset; accuracies in % on the test split, with every
training label and with the fixed low-label subset, mean ± sd over seeds. The protocol (C grid, label
budget, k, standardisation) is read from the metrics files and written under the table.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from . import fmt_mean_sd, fmt_stderr, group_runs, ok_results, register_table, write_table


def _cells(sections: list[dict]) -> dict[str, str]:
    """The four accuracy columns (%) over seeds from a list of probe results (one per seed)."""
    pct = lambda vals: fmt_mean_sd([100 * v for v in vals], 1)  # noqa: E731
    se = lambda vals: fmt_stderr([100 * v for v in vals], 1)  # noqa: E731
    return {
        "linear (all labels)": pct([s.linear_test_acc for s in sections]),
        "s.e. (all labels)": se([s.linear_test_stderr for s in sections]),
        "k-NN (all labels)": pct([s.knn_acc for s in sections]),
        "linear (low-label)": pct([s.low_test_acc for s in sections]),
        "s.e. (low-label)": se([s.low_test_stderr for s in sections]),
        "k-NN (low-label)": pct([s.knn_low_acc for s in sections]),
    }


@register_table("probe")
def probe_table(runs: list[dict], out_dir: Path) -> list[Path]:
    rows, raw, protocols = [], {}, {}
    for (dataset, model), group in group_runs(runs).items():
        probes = ok_results(group, "probe")
        if not probes:
            continue
        protocols.setdefault(dataset, probes[0].protocol)
        raw.setdefault(dataset, [p.raw_pixels for p in probes])  # identical in every run: the data only
        base = {"dataset": dataset, "family": group[0].info.family}
        rows.append({**base, "representation": f"{model}: {probes[0].representation}",
                     "features": probes[0].feature_dim, **_cells(probes), "seeds": f"{len(probes)}/{len(group)}"})
        rand = [p.random_init for p in probes if p.random_init is not None]
        if rand:
            rows.append({**base, "representation": f"{model}, untrained (random init)",
                         "features": rand[0].feature_dim, **_cells(rand), "seeds": f"{len(rand)}/{len(group)}"})
    for dataset, sections in raw.items():
        rows.append({"dataset": dataset, "family": "baseline", "representation": "raw pixels",
                     "features": sections[0].feature_dim, **_cells(sections[:1]), "seeds": "—"})
    df = pd.DataFrame(rows)
    if len(df):
        df = df.sort_values(["dataset"], kind="stable").reset_index(drop=True)
        budgets = {p.labels_per_class for p in protocols.values()}
        if len(budgets) == 1:  # name the label budget in the header when every dataset shares it
            n = budgets.pop()
            df = df.rename(columns={c: c.replace("low-label", f"{n}/class") for c in df.columns})
    notes = [
        "Test accuracy (%) of a classifier on frozen features (model in eval mode), mean ± sd over seeds; "
        "the untrained rows rebuild each model with the same Config under a fixed different seed. s.e.: the "
        "binomial standard error √(p(1−p)/n) of one run's accuracy over its n test images (mean over seeds).",
    ]
    for dataset, p in protocols.items():
        notes.append(
            f"{dataset}: features standardised ({p.standardisation}); multinomial logistic regression "
            f"(lbfgs, L2) with C ∈ {p.c_grid} chosen by {p.c_selection}; k-NN with k = {p.knn_k} "
            f"({p.knn_metric}); all labels = {p.num_train} training images; low-label = "
            f"{p.labels_per_class} per class ({p.num_low_label} images, fixed subset, seed "
            f"{p.subset_seed}); {p.num_test} test images."
        )
    return write_table(df, out_dir, "probe", notes=notes)
