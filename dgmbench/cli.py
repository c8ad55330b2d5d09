"""The ``dgmbench`` command line: list, train, evaluate, tables, ui.

Errors a user can fix (unknown names, bad config, missing data, unreadable checkpoints, unreachable tracking)
print one line naming the problem and the fix, and exit with status 2; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from pathlib import Path

EXIT_USER_ERROR = 2


class UserError(Exception):
    """A mistake in what the user asked for, found by the CLI itself; ``str()`` is the message."""


def _user_errors() -> tuple[type[BaseException], ...]:
    from .checkpoint import CheckpointError
    from .config import ConfigError
    from .data import DatasetUnavailable
    from .identity import IdentityError
    from .registry import UnknownNameError
    from .runtime import DeviceUnavailable
    from .tracking import TrackingUnavailable
    from .train import ResumeMismatch

    return (ConfigError, UnknownNameError, DatasetUnavailable, CheckpointError, TrackingUnavailable,
            ResumeMismatch, DeviceUnavailable, IdentityError, UserError, OSError)  # OSError: unwritable dir, full disk, ...


def cmd_list(args) -> int:
    from .data import DATASETS
    from .models import MODELS

    print("models:")
    for name in MODELS.names():
        meta = MODELS.meta(name)  # an in-tree family's declaration: its module (and torch) stays unimported
        print(f"  {name:<14} [{meta['likelihood']:<5}] {meta['description']}  ({MODELS.source(name)})")
    print("datasets:")
    for name in DATASETS.names():
        info = DATASETS.get(name).info
        shape = "×".join(map(str, info.shape))
        print(f"  {name:<14} {shape:<8} {info.num_levels:>3} levels  {info.description}  ({DATASETS.source(name)})")
    return 0


def grid_of(args) -> dict:
    """The validated grid of ``--config FILE`` or ``--config-json TEXT`` (what a Snakemake job is handed: the
    settings its workflow resolved when it started, so no file another invocation rewrites is read)."""
    from .config import load_grid, parse_yaml_text, validate_grid

    if getattr(args, "config_json", None) is not None:
        if args.config:
            raise UserError("give --config or --config-json, not both")
        return validate_grid(parse_yaml_text(args.config_json, "--config-json"))
    return load_grid(args.config)


def cmd_train(args) -> int:
    from .config import resolve_run
    from .train import train

    grid = grid_of(args)
    run = resolve_run(grid, dataset=args.dataset, model=args.model, seed=args.seed, sets=args.set)
    out = Path(args.out) if args.out else Path(grid["runs_dir"]) / run.dataset / run.label / f"seed{run.seed}"
    record = train(run, out)
    print(f"{run.run_name}: {record['status']} after {record['epochs_run']} epochs "
          f"({record['train_seconds']:.1f}s); checkpoint in {out}")
    return 0


def cmd_evaluate(args) -> int:
    from .evaluate import evaluate
    from .metrics import EVALUATORS

    for name in args.only or []:
        EVALUATORS.get(name)  # an unknown name stops here, listing the valid ones
    eval_config = None
    if args.config or args.config_json is not None:
        from .config import eval_settings

        eval_config = eval_settings(grid_of(args))
    metrics = evaluate(Path(args.run), only=args.only, eval_config=eval_config, progress=lambda s: print(s, flush=True))
    lik = metrics.get("likelihood", {})
    summary = (f"{lik['estimator']} NLL {lik['nll_nats']:.2f} nats = {lik['nll_bpd']:.3f} bits/dim"
               if lik.get("nll_nats") is not None else "no likelihood")
    print(f"{metrics['run']['model']}-{metrics['run']['dataset']}-seed{metrics['run']['seed']}: {summary}; "
          f"wrote {Path(args.run) / 'metrics.json'}")
    return 0


def cmd_tables(args) -> int:
    from .tables import build_all

    try:
        written = build_all(Path(args.runs), Path(args.out))
    except ValueError as err:  # an unreadable metrics.json; the message names it and the command that rewrites it
        raise UserError(str(err)) from None
    except (KeyError, TypeError, AttributeError) as err:  # a well-formed file that lacks what a table reads
        raise UserError(f"a metrics.json under {args.runs} lacks a field the tables read ({type(err).__name__}: "
                        f"{str(err)[:100]}); rerun `dgmbench evaluate --run DIR` on runs evaluated by an older "
                        "dgmbench") from None
    for p in written:
        print(p)
    return 0


def cmd_ui(args) -> int:
    from .config import load_grid
    from .tracking import resolve_tracking_uri

    if not 1 <= args.port <= 65535:
        raise UserError(f"--port {args.port} is not a TCP port; give one from 1 to 65535 (default 5000)")
    uri = resolve_tracking_uri(args.tracking_uri or load_grid(args.config)["tracking_uri"])
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: serving the MLflow UI on {args.host}, reachable from other machines", file=sys.stderr)
    print(f"MLflow UI for {uri} at http://{args.host}:{args.port}  (Ctrl-C to stop)", file=sys.stderr)
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", args.host, "--port", str(args.port)]
    try:
        return subprocess.call(cmd, env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"})
    except KeyboardInterrupt:
        return 0


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dgmbench", description="Benchmark suite for deep generative models.")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress lines")
    sub = p.add_subparsers(dest="command", required=True)

    sub.add_parser("list", help="registered models and datasets").set_defaults(fn=cmd_list)

    t = sub.add_parser("train", help="train one (dataset, model, seed) run")
    t.add_argument("--dataset", required=True)
    t.add_argument("--model", required=True)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--config", help="grid config file (default: built-in defaults)")
    t.add_argument("--config-json", metavar="TEXT", help="the grid as JSON text instead of a file (Snakemake jobs)")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a run setting, e.g. train.max_epochs=5, hparams.latent_dim=8 (repeatable)")
    t.add_argument("--out", help="run directory (default: <runs_dir>/<dataset>/<model>/seed<seed>)")
    t.set_defaults(fn=cmd_train)

    e = sub.add_parser("evaluate", help="evaluate a trained run; writes RUN/metrics.json")
    e.add_argument("--run", required=True, help="run directory written by `dgmbench train`")
    e.add_argument("--only", nargs="*", help="evaluate only these sections")
    e.add_argument("--config", help="grid config file whose eval: settings replace those saved at training time")
    e.add_argument("--config-json", metavar="TEXT", help="the same as JSON text instead of a file (Snakemake jobs)")
    e.set_defaults(fn=cmd_evaluate)

    tb = sub.add_parser("tables", help="rebuild results/tables and results/figures from metrics.json files")
    tb.add_argument("--runs", default="results/runs")
    tb.add_argument("--out", default="results")
    tb.set_defaults(fn=cmd_tables)

    u = sub.add_parser("ui", help="serve the MLflow UI for the project's tracking store")
    u.add_argument("--config", help="grid config whose tracking_uri to use")
    u.add_argument("--tracking-uri")
    u.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1: this machine only)")
    u.add_argument("--port", type=int, default=5000)
    u.set_defaults(fn=cmd_ui)
    return p


def os_error_message(err: OSError) -> str:
    """An OSError as one line that names the file and what to do about it."""
    import errno

    where = f": {err.filename}" if err.filename else ""
    fix = {errno.ENOSPC: "free disk space and rerun", errno.EDQUOT: "free disk space and rerun",
           errno.EACCES: "fix the permissions or choose another directory", errno.EROFS: "choose a writable directory",
           errno.ENOTDIR: "a path component is a file: choose another directory"}.get(err.errno, "fix it and rerun")
    return f"{err.strerror or str(err) or type(err).__name__}{where}; {fix} (files already written are intact)"


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.debug:
        return args.fn(args)
    try:
        return args.fn(args)
    except _user_errors() as err:
        msg = os_error_message(err) if isinstance(err, OSError) else str(err)
        print(f"dgmbench: error: {msg}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("dgmbench: interrupted; a rerun resumes from the last checkpoint", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
