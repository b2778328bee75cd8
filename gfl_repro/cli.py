"""The `gfl-repro` command line: every verb is a thin layer over a tested function.

Every error is one line ``gfl-repro: error: ...`` and a non-zero exit, never a traceback:
mistakes in what was asked for (unknown experiment, profile or format; a bad spec, option,
dataset, checkpoint or launcher setting) exit with status 2; a run that failed (non-finite
loss, nothing trained, no readable checkpoint) or a file that could not be written exit
with 1. An unexpected error is one line too, with how to see its traceback
(``GFL_REPRO_DEBUG=1``). Warnings are one line each: ``gfl-repro: warning: ...``.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import warnings
from pathlib import Path

import click

from . import __version__
from .datasets.errors import DataError
from .engines.errors import DeviceError, NonFiniteLoss, NothingTrained
from .engines.mmdet.convert import CheckpointImportError
from .engines.mmdet.safe_load import UnsafeCheckpoint
from .engines.native.checkpoints import CheckpointError
from .launch.errors import LaunchError
from .report.tables import FORMATS
from .report.overview import describe_experiment, format_description, list_experiments
from .specs.catalogue import (NoMatchingRow, UnknownName, default_experiments_dir, default_results_dir,
                              get_experiment, load_catalogue, select, select_rows, select_with_uses)
from .specs.profiles import DEFAULT_PROFILE, PROFILES, Profile, with_arithmetic
from .specs.run_config import ENGINES, PRECISIONS
from .specs.spec import SpecError
from .store import tables_dir

USAGE_EXIT = 2
FAILURE_EXIT = 1
DEBUG_ENV = "GFL_REPRO_DEBUG"

INPUT_ERRORS = (SpecError, UnknownName, DataError, LaunchError, CheckpointImportError, UnsafeCheckpoint, DeviceError)
"""The library's errors about what the user gave: one line, exit status 2."""
RUN_ERRORS = (CheckpointError, NonFiniteLoss, NothingTrained)
"""Why a run stopped: one line, exit status 1."""


class UserError(click.ClickException):
    """A mistake in what the user asked for: one line, exit status 2."""

    exit_code = USAGE_EXIT


class OneLineErrors(click.Group):
    """A Click group whose errors are one line on stderr (Click's own usage errors included)."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):  # noqa: D102
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warning
            try:
                rv = super().main(args=args, prog_name=prog_name, complete_var=complete_var, standalone_mode=False,
                                  **extra)
            except click.ClickException as err:
                _fail(err.format_message(), USAGE_EXIT if isinstance(err, (click.UsageError, UserError))
                      else err.exit_code)
            except click.Abort:
                click.echo("gfl-repro: aborted", err=True)
                sys.exit(130)
            except INPUT_ERRORS as err:
                _fail(str(err), USAGE_EXIT)
            except RUN_ERRORS as err:
                _fail(str(err), FAILURE_EXIT)
            except OSError as err:
                _fail(_os_error(err), FAILURE_EXIT)
            except Exception as err:
                if os.environ.get(DEBUG_ENV):
                    raise
                _fail(f"unexpected {type(err).__name__}: {err} (run with {DEBUG_ENV}=1 for the traceback)",
                      FAILURE_EXIT)
        sys.exit(rv if isinstance(rv, int) else 0)


def _fail(message: str, status: int) -> None:
    click.echo(f"gfl-repro: error: {' '.join(str(message).split())}", err=True)
    sys.exit(status)


def _os_error(err: OSError) -> str:
    """``path: reason`` for a file that could not be read or written."""
    if err.filename is None:
        return str(err)
    target = f"{err.filename} -> {err.filename2}" if err.filename2 else str(err.filename)
    return f"{target}: {err.strerror or err}"


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    click.echo(f"gfl-repro: warning: {' '.join(str(message).split())}", err=True)


def _profile(name: str, arithmetic: dict | None = None) -> Profile:
    """The named profile, its runs computing as the global ``--precision``, ``--channels-last``
    and ``--compile`` say."""
    if name not in PROFILES:
        raise UserError(str(UnknownName("profile", name, list(PROFILES))))
    arithmetic = dict(arithmetic or {})
    _choice("precision", arithmetic.get("precision", "fp32"), PRECISIONS)
    return with_arithmetic(PROFILES[name], **arithmetic)


def _variant(profile: Profile, engine: str) -> str:
    """The suffix of this invocation's output directories: the arithmetic's, then the engine's."""
    return profile.variant + ("" if engine == "native" else f"-{engine}")


def _choice(what: str, name: str, choices: tuple[str, ...]) -> str:
    if name not in choices:
        raise UserError(str(UnknownName(what, name, list(choices))))
    return name


def _format(name: str, choices: tuple[str, ...]) -> str:
    return _choice("format", name, choices)


def _guard(fn, *args, **kwargs):
    """Turn the library's lookup and spec errors into usage errors (the group's ``main`` turns
    every other library error into one line too)."""
    try:
        return fn(*args, **kwargs)
    except (UnknownName, NoMatchingRow, SpecError) as err:
        raise UserError(str(err)) from None


profile_option = click.option(
    "--profile", "profile_name", default=DEFAULT_PROFILE, show_default=True, help=f"One of: {', '.join(PROFILES)}."
)
engine_option = click.option(
    "--engine", default="native", show_default=True,
    help="native (this package's PyTorch engine) or mmdet (mmdetection 3.3 itself, for the rows its stock heads "
         "express; needs the mmdet extra).",
)


seeds_option = click.option(
    "--seeds", type=click.IntRange(min=1), default=None,
    help="Seeds 0..N-1 of every row (default: the profile's: smoke 3, paper 1).",
)
row_option = click.option(
    "--row", "row_patterns", multiple=True,
    help='Only rows whose "group / label" contains PATTERN (case-insensitive; repeatable).',
)


def _engine(name: str) -> str:
    return _choice("engine", name, ENGINES)


def _seeds(profile: Profile, seeds: int | None) -> int:
    return seeds if seeds is not None else profile.default_seeds


def _chosen(obj: dict, experiments: tuple[str, ...], row_patterns: tuple[str, ...]):
    """The named experiments (all when none), reduced to the rows ``--row`` selects."""
    chosen = _guard(select, experiments, obj["experiments"])
    return _guard(select_rows, chosen, row_patterns)


def _repeat_options(obj: dict, profile: Profile, engine: str, seeds: int | None,
                    row_patterns: tuple[str, ...]) -> str:
    """The options of this invocation that a follow-up command needs, as shell words."""
    words = list(obj.get("global_flags", []))
    words.append(None)  # the verb goes here
    words += ["--profile", profile.name]
    if engine != "native":
        words += ["--engine", engine]
    if seeds is not None:
        words += ["--seeds", str(seeds)]
    for pattern in row_patterns:
        words += ["--row", pattern]
    return " ".join("{verb}" if w is None else shlex.quote(w) for w in words)


@click.group(cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gfl-repro")
@click.option(
    "--experiments-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Spec directory (default: $GFL_REPRO_EXPERIMENTS or the checkout's experiments/).",
)
@click.option(
    "--results-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Results root (default: $GFL_REPRO_RESULTS or the checkout's results/).",
)
@click.option(
    "--precision",
    default="fp32",
    show_default=True,
    help="Arithmetic of training: fp32 (the paper's) or bf16 (bfloat16 autocast); part of each run's identity.",
)
@click.option("--channels-last", is_flag=True,
              help="Activations and conv weights in NHWC layout (what tensor cores prefer); part of each run's "
                   "identity.")
@click.option("--compile", "compile_", is_flag=True,
              help="torch.compile backbone, neck and head (first iterations compile); part of each run's identity.")
@click.pass_context
def cli(ctx: click.Context, experiments_dir: Path | None, results_dir: Path | None, precision: str,
        channels_last: bool, compile_: bool) -> None:
    """Reproduce the experiments of Generalized Focal Loss (Li et al., NeurIPS 2020)."""
    results = results_dir or default_results_dir()
    if results.exists() and not results.is_dir():
        raise UserError(f"results directory {results} is a file, not a directory")
    given = [("--experiments-dir", experiments_dir), ("--results-dir", results_dir),
             ("--precision", precision if precision != "fp32" else None)]
    switches = [flag for flag, on in (("--channels-last", channels_last), ("--compile", compile_)) if on]
    ctx.obj = {
        "experiments": experiments_dir or default_experiments_dir(),
        "results": results,
        "global_flags": [word for flag, value in given if value is not None for word in (flag, str(value))] + switches,
        "arithmetic": {"precision": precision, "channels_last": channels_last, "compile": compile_},
    }


@cli.command("list")
@profile_option
@engine_option
@seeds_option
@click.pass_obj
def list_command(obj: dict, profile_name: str, engine: str, seeds: int | None) -> None:
    """Every paper artifact with its rows and how many of its runs (rows x seeds) are done."""
    profile = _profile(profile_name, obj["arithmetic"])
    engine = _engine(engine)
    seeds = _seeds(profile, seeds)
    summaries = _guard(list_experiments, profile, obj["results"], obj["experiments"], engine, seeds)
    click.echo(f"{'experiment':<10}  {'paper':<16}  {'rows':>4}  {'runs done':>9}  title")
    for s in summaries:
        runs = f"{s['runs_done']}/{s['runs_total']}"
        click.echo(f"{s['id']:<10}  {s['paper_ref']:<16}  {s['rows']:>4}  {runs:>9}  {s['title']}")
    scale = " (toy scale)" if profile.toy_scale else ""
    click.echo(f"\nprofile: {profile.name}{scale} — {profile.description}; runs counted at {seeds} seed(s)"
               + (f"\nengine: {engine}" if engine != "native" else ""))


@cli.command("show")
@click.argument("experiment")
@profile_option
@engine_option
@click.option("--format", "fmt", default="text", show_default=True, help="text or json.")
@seeds_option
@row_option
@click.pass_obj
def show_command(obj: dict, experiment: str, profile_name: str, engine: str, fmt: str, seeds: int | None,
                 row_patterns: tuple[str, ...]) -> None:
    """Rows, overrides, paper numbers, claims, run ids and state of one experiment."""
    profile = _profile(profile_name, obj["arithmetic"])
    engine = _engine(engine)
    fmt = _format(fmt, ("text", "json"))
    exp = _guard(get_experiment, experiment, obj["experiments"])
    [exp] = _guard(select_rows, [exp], row_patterns)
    desc = _guard(describe_experiment, exp, profile, obj["results"], engine, _seeds(profile, seeds))
    if fmt == "json":
        click.echo(json.dumps(desc, indent=2, ensure_ascii=False))
    else:
        click.echo(format_description(desc))


@cli.command("collect")
@click.argument("experiments", nargs=-1)
@profile_option
@click.option("--format", "fmt", default="markdown", show_default=True, help=f"One of: {', '.join(FORMATS)}.")
@click.option(
    "--out", type=click.Path(path_type=Path), default=None, help="Output directory (default: results/<profile>/tables/)."
)
@engine_option
@seeds_option
@row_option
@click.pass_obj
def collect_command(obj: dict, experiments: tuple[str, ...], profile_name: str, fmt: str, out: Path | None,
                    engine: str, seeds: int | None, row_patterns: tuple[str, ...]) -> None:
    """Paper vs reproduced tables, with the paper's claims checked (all tables when no EXPERIMENT is named)."""
    from .report.claims import RULE
    from .report.tables import verdict_lines, write_tables

    profile = _profile(profile_name, obj["arithmetic"])
    engine = _engine(engine)
    fmt = _format(fmt, FORMATS)
    if out is not None and out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a directory")
    named = _guard(select, experiments, obj["experiments"])
    figures = [e.id for e in named if e.kind != "table"]
    if experiments and figures:
        raise UserError(f"{', '.join(figures)} is a figure, not a table; use `gfl-repro plot {figures[0]}`")
    chosen = _guard(select_rows, [e for e in named if e.kind == "table"], row_patterns)
    out_dir = out or tables_dir(obj["results"], profile.name)
    written = _guard(write_tables, chosen, profile, obj["results"], out_dir, fmt, engine, _seeds(profile, seeds))
    for item in written:
        click.echo(item.summary)
        for line in verdict_lines(item.verdicts):
            click.echo(f"  {line}")
        for problem in item.table.problems:
            click.echo(f"  warning: {problem}", err=True)
    if any(item.verdicts for item in written):
        click.echo(f"claims rule: {RULE}")


@cli.command("run")
@click.argument("experiments", nargs=-1, required=True)
@profile_option
@engine_option
@click.option("--launcher", default="inline", show_default=True,
              help="inline (here, one after another), local (background processes) or slurm (submitit job array).")
@click.option("--dry-run", is_flag=True, help="Show what would be submitted, with resources; submit nothing.")
@click.option("--retry", is_flag=True, help="Resubmit failed runs too (they resume from their checkpoint).")
@click.option("--data-root", type=click.Path(path_type=Path), default=None, help="COCO 2017 root (paper profile); default $GFL_REPRO_COCO.")
@click.option("--device", default=None, help="inline: cpu, cuda, cuda:1 … (default: cuda if available).")
@click.option("--max-parallel", type=int, default=None, help="local: concurrent runs (default: one per GPU, 1 on CPU).")
@click.option("--launcher-config", type=click.Path(path_type=Path), default=None, help="TOML file with a [slurm] table of the options below.")
@click.option("--partition", default=None)
@click.option("--nodes", type=int, default=None)
@click.option("--gpus-per-node", type=int, default=None)
@click.option("--cpus-per-task", type=int, default=None)
@click.option("--mem-gb", type=int, default=None)
@click.option("--time-min", type=int, default=None, help="Slurm time limit in minutes.")
@click.option("--account", default=None)
@click.option("--qos", default=None)
@click.option("--constraint", default=None)
@click.option("--sbatch", "extra", multiple=True, help="Extra sbatch flag, e.g. --sbatch=--exclusive (repeatable).")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@seeds_option
@row_option
@click.pass_obj
def run_command(obj: dict, experiments: tuple[str, ...], profile_name: str, engine: str, launcher: str, dry_run: bool,
                retry: bool, data_root: Path | None, device: str | None, max_parallel: int | None,
                launcher_config: Path | None, quiet: bool, seeds: int | None, row_patterns: tuple[str, ...],
                **slurm_flags) -> None:
    """Train and evaluate the runs of EXPERIMENTS: done, pending and running runs are skipped."""
    from .engines.environment import parse_device
    from .launch.plan import plan_runs
    from .launch.run import LAUNCHERS, LaunchOptions, run
    from .launch.slurm import slurm_options

    profile = _profile(profile_name, obj["arithmetic"])
    engine = _engine(engine)
    launcher = _choice("launcher", launcher, LAUNCHERS)
    if engine == "mmdet":
        _require_mmdet()
        if device is not None:
            raise UserError("--device is the native engine's option; with --engine mmdet, mmengine uses CUDA when "
                            "available")
    if max_parallel is not None and max_parallel < 1:
        raise UserError(f"--max-parallel must be >= 1, got {max_parallel}")
    if device is not None:
        if launcher != "inline":
            raise UserError(f"--device is the inline launcher's option; {launcher} jobs use the GPUs they are given")
        parse_device(device)
    chosen = _guard(select_rows, _guard(select_with_uses, experiments, obj["experiments"]), row_patterns)
    # a table gets the profile's seeds; what a figure draws from (its rows, the tables it uses) one run per row
    per_experiment = {e.id: _seeds(profile, seeds) if e.kind == "table" and e.id in experiments else (seeds or 1)
                      for e in chosen}
    plan = _guard(plan_runs, chosen, profile, engine, per_experiment)
    for item in plan.unsupported:
        click.echo(f"{'skipped' if engine == 'mmdet' else 'not runnable yet'}: {item}", err=True)
    figures = [e for e in chosen if e.kind == "figure"]
    options = LaunchOptions(
        launcher=launcher, dry_run=dry_run, retry=retry, data_root=data_root, device=device,
        max_parallel=max_parallel, progress=not quiet,
        slurm=slurm_options(profile, launcher_config, slurm_flags) if launcher == "slurm" else None)
    if plan.runs or plan.unsupported or not figures:
        run(plan, profile, obj["results"], options, echo=click.echo)
    else:  # figures of analytic panels and assignment passes only
        click.echo(f"0 run(s) to run: {', '.join(e.id for e in figures)} trains no model")
    if not dry_run and figures:
        if engine == "native":
            _compute_analyses(figures, profile, obj["results"], data_root, device)
        else:
            click.echo("analysis: the figures' analyses read native-engine runs; none computed with "
                       f"--engine {engine}")
    if dry_run:
        return
    names = "".join(f" {shlex.quote(e)}" for e in experiments)
    follow = _repeat_options(obj, profile, engine, seeds, row_patterns)
    click.echo(f"status:  gfl-repro {follow.replace('{verb}', 'status' + names)}")
    tables = "".join(f" {shlex.quote(e.id)}" for e in chosen if e.id in experiments and e.kind == "table")
    if tables:
        click.echo(f"tables:  gfl-repro {follow.replace('{verb}', 'collect' + tables)}")
    if figures:
        plots = "".join(f" {shlex.quote(e.id)}" for e in figures)
        flags = " ".join(shlex.quote(w) for w in obj.get("global_flags", []))
        click.echo(f"figures: gfl-repro {flags + ' ' if flags else ''}plot{plots} --profile {profile.name}")


def _compute_analyses(figures: list, profile: Profile, results_root: Path, data_root: Path | None,
                      device: str | None) -> None:
    """After training: the data of the figures' analyses that need a trained run or the training set."""
    from .analysis import AnalysisError, compute_analyses

    for exp in figures:
        try:
            for line in compute_analyses(exp, profile, results_root, data_root=data_root, device=device):
                click.echo(f"analysis: {line}")
        except AnalysisError as err:
            raise UserError(str(err)) from None


@cli.command("plot")
@click.argument("figures", nargs=-1)
@profile_option
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Output directory (default: figures/<profile>/ of the checkout; figures/<profile>-bf16/, ... "
                   "for another arithmetic).")
@click.option("--data-root", type=click.Path(path_type=Path), default=None,
              help="COCO 2017 root for Fig. 5(c)'s assignment pass (paper profile); default $GFL_REPRO_COCO.")
@click.pass_obj
def plot_command(obj: dict, figures: tuple[str, ...], profile_name: str, out: Path | None,
                 data_root: Path | None) -> int:
    """Draw FIGURES (all figures when none is named) as PNG + PDF + CSV from the runs' files."""
    from .analysis import AnalysisError, NotReady
    from .engines.environment import DataError
    from .report.figures import default_figures_dir, plot_experiment

    profile = _profile(profile_name, obj["arithmetic"])
    chosen = _guard(select, figures, obj["experiments"])
    tables = [e.id for e in chosen if e.kind != "figure"]
    if figures and tables:
        raise UserError(f"{', '.join(tables)} is a table, not a figure; use `gfl-repro collect {tables[0]}`")
    catalogue = _guard(load_catalogue, obj["experiments"])
    out_dir = out or default_figures_dir(profile)
    not_ready = []
    for exp in (e for e in chosen if e.kind == "figure"):
        try:
            plotted = plot_experiment(exp, profile, obj["results"], out_dir, catalogue, data_root)
        except NotReady as err:
            not_ready.append(str(err))
            continue
        except (AnalysisError, DataError) as err:
            raise UserError(str(err)) from None
        for item in plotted:
            click.echo(f"{item.experiment} {item.artifact}: {', '.join(str(p) for p in item.files)}")
            for note in item.notes:
                click.echo(f"  {note}")
    for line in not_ready:
        click.echo(f"gfl-repro: error: {line}", err=True)
    return 1 if not_ready else 0


@cli.command("status")
@click.argument("experiments", nargs=-1)
@profile_option
@engine_option
@click.option("--format", "fmt", default="text", show_default=True, help="text or json.")
@seeds_option
@row_option
@click.pass_obj
def status_command(obj: dict, experiments: tuple[str, ...], profile_name: str, engine: str, fmt: str,
                   seeds: int | None, row_patterns: tuple[str, ...]) -> None:
    """State of every run (row x seed: missing / pending / running / done / failed), progress, AP, last error."""
    from .report.status import format_status, status_rows

    profile = _profile(profile_name, obj["arithmetic"])
    engine = _engine(engine)
    fmt = _format(fmt, ("text", "json"))
    chosen = _chosen(obj, experiments, row_patterns)
    rows = _guard(status_rows, chosen, profile, obj["results"], engine=engine, seeds=_seeds(profile, seeds))
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
    else:
        click.echo(format_status(rows))


@cli.command("report")
@profile_option
@engine_option
@seeds_option
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Output directory (default: results/<profile>/report/; report-bf16/, report-mmdet/, ... for "
                   "another arithmetic or engine).")
@click.option("--figures-dir", type=click.Path(path_type=Path), default=None,
              help="Where `gfl-repro plot` wrote the figures (default: $GFL_REPRO_FIGURES or the checkout's figures/).")
@click.pass_obj
def report_command(obj: dict, profile_name: str, engine: str, seeds: int | None, out: Path | None,
                   figures_dir: Path | None) -> None:
    """One document (PDF via pdflatex, and Markdown): every table, figure, claim and verdict, what is missing."""
    from .report.document import ReportError, build_report
    from .specs.catalogue import default_figures_dir
    from .store import report_dir

    profile = _profile(profile_name, obj["arithmetic"])
    engine = _engine(engine)
    out_dir = out or report_dir(obj["results"], profile.name, _variant(profile, engine))
    global_flags = " ".join(shlex.quote(w) for w in obj.get("global_flags", []))
    try:
        report = _guard(build_report, profile, obj["results"], out_dir, figures_dir or default_figures_dir(),
                        obj["experiments"], engine, _seeds(profile, seeds), global_flags)
    except ReportError as err:
        raise click.ClickException(str(err)) from None
    click.echo(f"markdown: {report.markdown}")
    click.echo(f"latex:    {report.latex}")
    if report.pdf is None:
        click.echo("pdf:      not built: pdflatex is not installed (scripts/setup.sh installs it)")
    else:
        click.echo(f"pdf:      {report.pdf}")
    drawn = sum(f.exists for f in report.figures)
    click.echo(f"{len(report.tables)} tables, {drawn}/{len(report.figures)} figures, {len(report.missing)} missing item(s)"
               + (" (listed in the report)" if report.missing else ""))


def _require_mmdet() -> None:
    try:
        import mmcv.ops  # noqa: F401  (the compiled ops mmdet's heads need)
        import mmdet  # noqa: F401
    except ImportError as err:
        from .engines.mmdet.config import MMDET_EXTRA_HINT

        raise UserError(f"--engine mmdet needs mmdetection 3.3 ({err}); {MMDET_EXTRA_HINT}") from None


@cli.command("import-mmdet")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Where to write the native checkpoint.")
def import_mmdet_command(checkpoint: Path, out: Path) -> None:
    """Convert an mmdet 3.x/2.x GFL, ATSS, FCOS, RetinaNet, FoveaBox or SSD512 checkpoint into the native format
    (read weights-only through an allow-list)."""
    from .engines.mmdet.convert import import_checkpoint

    info = import_checkpoint(checkpoint, out)
    click.echo(f"{out}: {info['kind']} head, {info['num_classes']} classes, {info['tensors']} tensors")


@cli.group("data")
def data_group() -> None:
    """Datasets: check a dataset before training; generate the synthetic COCO-format set."""


@data_group.command("check")
@click.option("--data-root", type=click.Path(path_type=Path), default=None,
              help="COCO 2017 root to check (default: $GFL_REPRO_COCO); implies the paper profile.")
@click.option("--profile", "profile_name", default=None,
              help="smoke (the synthetic set, generated if needed) or paper (COCO 2017). Default: paper with "
                   "--data-root, else smoke.")
@click.option("--sample", type=click.IntRange(min=1), default=None,
              help="Images decoded per split: all of a set up to this size, else a random sample of this many "
                   "(default 500).")
def data_check_command(data_root: Path | None, profile_name: str | None, sample: int | None) -> None:
    """Check the dataset a profile trains on, as every run does before training: one line per
    class of problem, with its count and first example."""
    from .datasets.check import SAMPLE_IMAGES, check_dataset
    from .engines.environment import profile_data

    profile = _profile(profile_name or ("paper" if data_root is not None else DEFAULT_PROFILE))
    if data_root is not None and profile.name != "paper":
        raise UserError(f"--data-root names COCO 2017, which the paper profile uses, not {profile.name}")
    paths = profile_data(profile, data_root)
    reports = check_dataset(paths.train_images, paths.train_annotations, paths.val_images, paths.val_annotations,
                            sample=sample or SAMPLE_IMAGES)
    for report in reports:
        click.echo(report.summary())
        for line in report.errors:
            click.echo(f"  error: {line}")
        for line in report.warnings:
            click.echo(f"  warning: {line}")
    errors = sum(len(r.errors) for r in reports)
    if errors:
        raise DataError(f"data check: {errors} problem(s), listed above; runs refuse this data")
    click.echo(f"ok: {profile.label} data can be trained and evaluated on")


@data_group.command("synth")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Directory (default: the cache the smoke profile uses).")
@click.option("--num-train", type=click.IntRange(min=0), default=256, show_default=True)
@click.option("--num-val", type=click.IntRange(min=0), default=64, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
def data_synth_command(out: Path | None, num_train: int, num_val: int, seed: int) -> None:
    """Generate a deterministic synthetic COCO-format dataset (images + instances_*.json)."""
    from .datasets.synthetic import ensure_synthetic, generate
    from .engines.environment import default_cache_dir

    if out is None:
        path = ensure_synthetic(default_cache_dir(), num_train=num_train, num_val=num_val, seed=seed)
    elif out.exists():
        raise UserError(f"{out} already exists; choose a new directory")
    else:
        path = generate(out, num_train=num_train, num_val=num_val, seed=seed)
    click.echo(f"synthetic COCO: {path} ({num_train} train, {num_val} val images)")


def main() -> None:
    """Console-script entry point."""
    cli()  # OneLineErrors.main exits with the right status


if __name__ == "__main__":
    main()
