"""``results/tables/sample_quality.{csv,md}``: Fréchet distance and k-NN precision/recall of every sampling family,
in the feature space of dgmbench's own per-dataset classifier (metrics/fidelity.py), mean ± sd over seeds."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from . import fmt_mean_sd, fmt_stderr, group_runs, ok_results, register_table, results, write_table


@register_table("sample_quality")
def sample_quality_table(runs: list[dict], out_dir: Path) -> list[Path]:
    rows, protocols = [], {}
    for (dataset, model), group in group_runs(runs).items():
        sq = results(group, "sample_quality")
        if not sq:
            continue  # the family does not sample
        ok = ok_results(group, "sample_quality")
        protocols.setdefault(dataset, sq[0].protocol)
        fid = [s.inception_fid for s in ok if s.inception_fid is not None]
        rows.append({
            "dataset": dataset,
            "model": model,
            "family": group[0].info.family,
            "FD ↓": fmt_mean_sd([s.fd for s in ok], 1),
            "FD s.e. (bootstrap)": fmt_stderr([s.fd_stderr for s in ok], 1),
            "precision ↑": fmt_mean_sd([s.precision for s in ok], 3),
            "recall ↑": fmt_mean_sd([s.recall for s in ok], 3),
            "Inception FID": fmt_mean_sd(fid, 1) if fid else "not computed",
            "seeds ok": f"{len(ok)}/{len(group)}",
            "data FD (floor)": fmt_mean_sd([sq[0].data_fd], 1),
            "data precision / recall": f"{sq[0].data_precision:.3f} / {sq[0].data_recall:.3f}",
        })
    notes = [
        "FD: Fréchet distance between Gaussians fitted to the features of N generated samples and of the reference "
        "images (the fixed test subset every evaluator scores), s.e. by bootstrap over both sets; precision/recall: "
        "improved k-NN precision and recall (Kynkäänniemi et al. 2019). Features: the "
        "penultimate layer of a small conv classifier dgmbench trains once per dataset (not Inception: these "
        "images are too small and the machine is offline), so values compare families within a dataset only.",
        "data FD / precision / recall: the same metrics between N training images and the reference split — what "
        "a perfect model would score at this N (FD is biased upwards at finite N, so the floor is not 0).",
        "mean ± sd over seeds (sample sd); runs marked diverged (e.g. GAN mode collapse) are excluded and counted "
        "in 'seeds ok'.",
    ]
    for dataset, p in sorted(protocols.items()):
        notes.append(
            f"{dataset}: N = {p.num_samples} samples vs the {p.num_reference} {p.reference_split} images, "
            f"k = {p.k}; {p.features}, test accuracy {p.classifier_test_accuracy:.3f} "
            f"({p.classifier_steps} steps, seed {p.classifier_seed})."
        )
    inception = {s.inception_fid_note for s in results(runs, "sample_quality")}
    if inception:
        notes.append("Inception FID: " + "; ".join(sorted(n for n in inception if n)) + ".")
    return write_table(pd.DataFrame(rows), out_dir, "sample_quality", notes=notes)
