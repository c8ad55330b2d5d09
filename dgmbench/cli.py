"""The ``dgmbench`` command line: list, train, evaluate, track, tables, ui.

Errors a user can fix (unknown names, bad config, missing data, unreadable checkpoints, unreachable tracking)
print one line naming the problem and the fix, and exit with status 2; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import logging
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
    from .journal import JournalError
    from .registry import UnknownNameError
    from .runtime import DeviceUnavailable
    from .tracking import TrackingUnavailable
    from .train import ResumeMismatch

    return (ConfigError, UnknownNameError, DatasetUnavailable, CheckpointError, TrackingUnavailable,
            ResumeMismatch, DeviceUnavailable, IdentityError, JournalError, UserError, OSError)  # OSError: unwritable dir, full disk, ...


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
    from .train import summary_line, train

    if args.evaluate and args.evaluate_pending:
        raise UserError("give --evaluate (write OUT/metrics.json) or --evaluate-pending (the workflow's), not both")
    grid = grid_of(args)
    run = resolve_run(grid, dataset=args.dataset, model=args.model, seed=args.seed, sets=args.set)
    out = Path(args.out) if args.out else Path(grid["runs_dir"]) / run.dataset / run.label / f"seed{run.seed}"
    # A run inside the grid's runs directory shares its FLOP count with the grid's other seeds of its configuration
    # (dgmbench.train.cached_train_step_flops); a run written elsewhere counts its own and writes nothing beside it.
    from .train import FLOPS_CACHE

    runs_dir = Path(grid["runs_dir"]).resolve()
    flops_cache = runs_dir / FLOPS_CACHE if out.resolve().is_relative_to(runs_dir) else None
    record = train(run, out, journal=args.tracking == "journal", flops_cache=flops_cache)
    print(f"{summary_line(run, record)}; checkpoint in {out}", flush=True)
    if args.evaluate:
        from .config import eval_settings

        metrics = evaluate_run(out, eval_settings(grid), journal=args.tracking == "journal")
        print(f"{evaluation_summary(metrics)}; wrote {out / 'metrics.json'}", flush=True)
    elif args.evaluate_pending:
        evaluate_pending(args, out)
    return 0


EVAL_ENV = "DGMBENCH_EVAL_JSON"  # the workflow's eval section, for --evaluate-pending (workflow/rules/common.smk)


def evaluate_pending(args, out: Path) -> None:
    """The workflow's train job: evaluate in this process with the eval settings its evaluate job will be handed
    (that job's --config-json is this job's plus the grid's eval section, which the workflow puts in
    $DGMBENCH_EVAL_JSON) and leave metrics.pending.json for it. A failure here costs nothing but the saving: the
    evaluate job then evaluates (and reports the error) in a process of its own."""
    import json
    import os

    from .pending import PENDING

    section = os.environ.get(EVAL_ENV)
    if args.config_json is None or section is None:
        print(f"not evaluating in this process: --evaluate-pending needs --config-json and ${EVAL_ENV} "
              "(the workflow sets both); the evaluate job will evaluate", file=sys.stderr, flush=True)
        return
    try:
        from .config import eval_settings, parse_yaml_text, validate_grid
        from .pending import pending_key

        eval_grid = {**json.loads(args.config_json), "eval": json.loads(section)}
        settings = eval_settings(validate_grid(parse_yaml_text(json.dumps(eval_grid), f"${EVAL_ENV}")))
        metrics = evaluate_run(out, settings, pending_key=pending_key(out, eval_grid),
                               journal=args.tracking == "journal")
    except Exception as err:  # noqa: BLE001 - the run is trained; its evaluate job evaluates (and fails) on its own
        (out / PENDING).unlink(missing_ok=True)
        print(f"evaluation in the training process failed ({type(err).__name__}: {str(err)[:300]}); the evaluate "
              "job will evaluate the run in a process of its own", file=sys.stderr, flush=True)
        return
    print(f"{evaluation_summary(metrics)}; left {out / PENDING} for the evaluate job", flush=True)


def evaluate_run(run_dir: Path, settings: dict, pending_key: dict | None = None, journal: bool = False) -> dict:
    from .evaluate import evaluate

    return evaluate(run_dir, eval_config=settings, progress=lambda s: print(s, flush=True), pending_key=pending_key,
                    in_training_process=True, journal=journal)


def evaluation_summary(metrics: dict) -> str:
    lik = metrics.get("likelihood", {})
    summary = (f"{lik['estimator']} NLL {lik['nll_nats']:.2f} nats = {lik['nll_bpd']:.3f} bits/dim"
               if lik.get("nll_nats") is not None else "no likelihood")
    return f"{metrics['run']['model']}-{metrics['run']['dataset']}-seed{metrics['run']['seed']}: {summary}"


def cmd_evaluate(args) -> int:
    if args.adopt_pending:
        import json

        from .pending import adopt_pending

        if args.config_json is None or args.only:
            raise UserError("--adopt-pending (the workflow's evaluate job) needs --config-json and no --only")
        try:
            eval_grid = json.loads(args.config_json)
        except ValueError as err:
            raise UserError(f"--config-json is not JSON ({err}); give the grid as JSON text") from None
        why = adopt_pending(Path(args.run), eval_grid)
        if why is None:
            print(f"{Path(args.run) / 'metrics.json'}: the evaluation made by the training process, adopted (same "
                  "checkpoint, settings and code); its per-evaluator lines are in the train job's log", flush=True)
            return 0
        print(f"{why}; evaluating", flush=True)
    from .evaluate import evaluate
    from .metrics import EVALUATORS

    for name in args.only or []:
        EVALUATORS.get(name)  # an unknown name stops here, listing the valid ones
    eval_config = None
    if args.config or args.config_json is not None:
        from .config import eval_settings

        eval_config = eval_settings(grid_of(args))
    metrics = evaluate(Path(args.run), only=args.only, eval_config=eval_config, progress=lambda s: print(s, flush=True),
                       journal=args.tracking == "journal")
    print(f"{evaluation_summary(metrics)}; wrote {Path(args.run) / 'metrics.json'}")
    return 0


def cmd_track(args) -> int:
    from .config import load_grid
    from .journal import replay_all

    runs = Path(args.runs or (load_grid(args.config)["runs_dir"] if args.config else "results/runs"))
    if not runs.is_dir():
        raise UserError(f"no run directory {runs}; give --runs DIR (where `dgmbench train` wrote the runs)")
    if args.tracking_uri is not None:
        from .config import check_tracking_uri

        check_tracking_uri(args.tracking_uri, confine=False)
    total, problems = replay_all(runs, tracking_uri=args.tracking_uri, progress=lambda s: print(s, flush=True))
    print(f"{total} journal entries written to MLflow from {runs}", flush=True)
    if problems:
        for line in problems:
            print(f"error: {line}", file=sys.stderr)
        return EXIT_USER_ERROR
    return 0


def cmd_tables(args) -> int:
    from .tables import build_all
    from .tables.committed import check, results_dirs

    if args.check:
        if args.runs is not None:
            raise UserError("--check rebuilds OUT's tables and figures from its committed copies in OUT/metrics; "
                            "drop --runs")
        outs = [Path(args.out)] if args.out else results_dirs(Path("."))
        if not outs:
            raise UserError("no committed results/**/tables under this directory; run from the repository root, "
                            "or give --out")
        for out in outs:
            problem = check(out)
            if problem:
                raise UserError(problem)
            print(f"ok: {out / 'tables'} and {out / 'figures'} follow from {out / 'metrics'}")
        return 0
    runs, out = Path(args.runs or "results/runs"), Path(args.out or "results")
    try:
        written = build_all(runs, out)
    except ValueError as err:  # an unreadable metrics.json; the message names it and the command that rewrites it
        raise UserError(str(err)) from None
    except (KeyError, TypeError, AttributeError) as err:  # a well-formed file that lacks what a table reads
        raise UserError(f"a metrics.json under {runs} lacks a field the tables read ({type(err).__name__}: "
                        f"{str(err)[:100]}); rerun `dgmbench evaluate --run DIR` on runs evaluated by an older "
                        "dgmbench") from None
    for p in written:
        print(p)
    return 0


def cmd_ui(args) -> int:
    import socket

    from .config import load_grid
    from .tracking import WORKFLOW_QUERY, Tracker, resolve_tracking_uri, serve_ui, ui_links

    if not 1 <= args.port <= 65535:
        raise UserError(f"--port {args.port} is not a TCP port; give one from 1 to 65535 (default 5000)")
    uri = resolve_tracking_uri(args.tracking_uri or load_grid(args.config)["tracking_uri"])
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: serving the MLflow UI on {args.host}, reachable from other machines", file=sys.stderr)
    with socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server will: past TIME_WAIT
        try:
            probe.bind((args.host, args.port))
        except OSError as err:
            raise UserError(f"cannot serve on {args.host}:{args.port} ({err.strerror}); is a UI already running "
                            "there? Stop it or give another --port") from None
    # The experiments' kind and saved views go into the store before the server reads it; a store that does
    # not exist yet is left to MLflow (there is nothing to show).
    db = Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None
    views = Tracker(uri, None).prepare_ui() if db is not None and db.exists() else []
    base = f"http://{'[' + args.host + ']' if ':' in args.host else args.host}:{args.port}"

    def ready() -> None:
        print(f"MLflow UI for {uri} at {base}/#/?{WORKFLOW_QUERY}  (Ctrl-C to stop)", file=sys.stderr)
        for line in ui_links(base, views):
            print(f"  {line}", file=sys.stderr)

    print(f"starting the MLflow UI for {uri} on {base} ...", file=sys.stderr)
    return serve_ui(uri, args.host, args.port, on_ready=ready)


class _VersionAction(argparse.Action):
    """``--version``: dgmbench's version and the installed torch's, read from package metadata so that it
    imports nothing heavy (``import torch`` alone takes seconds)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        from importlib import metadata

        from . import __version__

        try:
            torch_version = metadata.version("torch")
        except metadata.PackageNotFoundError:
            torch_version = "not installed"
        print(f"dgmbench {__version__} (torch {torch_version}, python {sys.version.split()[0]})")  # stdout, as argparse's
        parser.exit()


def make_parser() -> argparse.ArgumentParser:
    # Help texts name where the valid values come from; nothing here imports a registry, so `--help` stays fast.
    p = argparse.ArgumentParser(prog="dgmbench", description="Benchmark suite for deep generative models.")
    p.add_argument("--version", action=_VersionAction, help="print the dgmbench and torch versions and exit")
    p.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress lines")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND",
                         help="one of the following; `dgmbench COMMAND --help` lists its options")

    sub.add_parser("list", help="registered models and datasets",
                   description="Registered models (with their likelihood: exact, bound or none) and datasets "
                               "(shape, levels), each with the package that registered it.").set_defaults(fn=cmd_list)

    t = sub.add_parser("train", help="train one (dataset, model, seed) run",
                       description="Train one (dataset, model, seed) run; a killed run resumes from OUT/last.pt.")
    t.add_argument("--dataset", required=True, metavar="NAME",
                   help="a registered dataset, e.g. digits (all names: `dgmbench list`)")
    t.add_argument("--model", required=True, metavar="NAME",
                   help="a registered model, or a variant the grid (--config) defines, e.g. vae "
                        "(all names: `dgmbench list`)")
    t.add_argument("--seed", type=int, default=0, metavar="N",
                   help="random seed, 0 ≤ N < 2^32; seeds the data order, the initialisation and sampling (default 0)")
    t.add_argument("--config", metavar="FILE",
                   help="grid config file, e.g. config/config.yaml (default: built-in defaults)")
    t.add_argument("--config-json", metavar="TEXT", help="the grid as JSON text instead of a file (Snakemake jobs)")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a run setting, e.g. train.max_epochs=5, hparams.latent_dim=8 (repeatable); "
                        "hparams keys are the fields of the family's Config in dgmbench/models/<family>.py")
    t.add_argument("--out", metavar="DIR", help="run directory (default: <runs_dir>/<dataset>/<model>/seed<seed>)")
    t.add_argument("--evaluate", action="store_true",
                   help="then evaluate the run in this process, with the eval: settings of --config (as `dgmbench "
                        "evaluate --run OUT --config FILE` would, without a second process's start-up)")
    t.add_argument("--evaluate-pending", action="store_true",
                   help="for the workflow: evaluate in this process with the eval section in $DGMBENCH_EVAL_JSON and "
                        "leave OUT/metrics.pending.json for the evaluate job (`dgmbench evaluate --adopt-pending`)")
    t.add_argument("--tracking", choices=("live", "journal"), default="live",
                   help="live: write the MLflow store as the run trains (default); journal: append what the run "
                        "logs to OUT/mlflow-journal, for `dgmbench track` to write (the workflow's default)")
    t.set_defaults(fn=cmd_train)

    e = sub.add_parser("evaluate", help="evaluate a trained run; writes RUN/metrics.json",
                       description="Run every evaluator that applies to a trained run, one progress line each; "
                                   "writes RUN/metrics.json and logs it to the run's MLflow run.")
    e.add_argument("--run", required=True, metavar="DIR", help="run directory written by `dgmbench train`")
    e.add_argument("--only", nargs="*", metavar="EVALUATOR",
                   help="recompute only these sections, keeping the others, e.g. likelihood ood (names: the "
                        "sections of metrics.json; an unknown one is refused with the list)")
    e.add_argument("--config", metavar="FILE",
                   help="grid config file whose eval: settings to use (default: the built-in evaluation defaults)")
    e.add_argument("--config-json", metavar="TEXT", help="the same as JSON text instead of a file (Snakemake jobs)")
    e.add_argument("--adopt-pending", action="store_true",
                   help="for the workflow: take RUN/metrics.pending.json (left by `dgmbench train --evaluate-pending`) "
                        "as metrics.json if it was computed from this checkpoint with these settings (--config-json) "
                        "and this dgmbench source; evaluate otherwise")
    e.add_argument("--tracking", choices=("live", "journal"), default="live",
                   help="live: write the MLflow store (default); journal: append what the evaluation logs to "
                        "RUN/mlflow-journal, for `dgmbench track` to write")
    e.set_defaults(fn=cmd_evaluate)

    tr = sub.add_parser("track", help="write the runs' MLflow journals into the tracking store",
                        description="Write what the workflow's jobs journalled (RUN/mlflow-journal, written with "
                                    "--tracking journal) into each run's MLflow run: only the entries the store does not hold "
                                    "yet, so it is safe to rerun. The workflow's last job runs it.")
    tr.add_argument("--runs", metavar="DIR", help="directory searched for run journals (default: --config's runs_dir, "
                                                  "else results/runs)")
    tr.add_argument("--config", metavar="FILE", help="grid config whose runs_dir to search")
    tr.add_argument("--tracking-uri", metavar="URI",
                    help="write to this store instead of each run's own (its config's tracking_uri)")
    tr.set_defaults(fn=cmd_track)

    tb = sub.add_parser("tables", help="rebuild results/tables and results/figures from metrics.json files")
    tb.add_argument("--runs", metavar="DIR",
                    help="directory searched for metrics.json files (default results/runs)")
    tb.add_argument("--out", metavar="DIR",
                    help="writes DIR/tables, DIR/figures and DIR/metrics, the copy of the inputs they follow from "
                         "(default results)")
    tb.add_argument("--check", action="store_true",
                    help="rebuild OUT (default: every committed results directory) from OUT/metrics in a temporary "
                         "directory; exit 2 naming the first table or figure that differs")
    tb.set_defaults(fn=cmd_tables)

    u = sub.add_parser("ui", help="serve the MLflow UI for the project's tracking store")
    u.add_argument("--config", metavar="FILE", help="grid config whose tracking_uri to use (default: ./mlflow/mlflow.db)")
    u.add_argument("--tracking-uri", metavar="URI",
                   help="tracking store to serve, e.g. sqlite:///mlflow/mlflow.db (overrides --config)")
    u.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1: this machine only)")
    u.add_argument("--port", type=int, default=5000, help="TCP port (default 5000)")
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
