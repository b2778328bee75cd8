"""The `gfl-repro` command line: every verb is a thin layer over a tested function.

User mistakes (unknown experiment, profile or format; an unreadable spec; a bad option)
print one line ``gfl-repro: error: ...`` and exit with status 2, never a traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from . import __version__
from .report.collect import FORMATS, collect_table, render
from .report.overview import describe_experiment, format_description, list_experiments
from .specs.catalogue import (UnknownName, default_experiments_dir, default_results_dir, get_experiment, load_catalogue,
                              select, select_with_uses)
from .specs.profiles import DEFAULT_PROFILE, PROFILES, Profile
from .specs.run_config import ENGINES
from .specs.spec import SpecError
from .store import atomic_write_text, tables_dir

USAGE_EXIT = 2


class UserError(click.ClickException):
    """A mistake in what the user asked for: one line, exit status 2."""

    exit_code = USAGE_EXIT


class OneLineErrors(click.Group):
    """A Click group whose errors are one line on stderr (Click's own usage errors included)."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):  # noqa: D102
        try:
            rv = super().main(args=args, prog_name=prog_name, complete_var=complete_var, standalone_mode=False, **extra)
        except click.ClickException as err:
            message = " ".join(err.format_message().split())
            click.echo(f"gfl-repro: error: {message}", err=True)
            sys.exit(USAGE_EXIT if isinstance(err, (click.UsageError, UserError)) else err.exit_code)
        except click.Abort:
            click.echo("gfl-repro: aborted", err=True)
            sys.exit(130)
        sys.exit(rv if isinstance(rv, int) else 0)


def _profile(name: str) -> Profile:
    if name not in PROFILES:
        raise UserError(str(UnknownName("profile", name, list(PROFILES))))
    return PROFILES[name]


def _choice(what: str, name: str, choices: tuple[str, ...]) -> str:
    if name not in choices:
        raise UserError(str(UnknownName(what, name, list(choices))))
    return name


def _format(name: str, choices: tuple[str, ...]) -> str:
    return _choice("format", name, choices)


def _guard(fn, *args, **kwargs):
    """Turn the library's user-facing errors into one-line CLI errors."""
    try:
        return fn(*args, **kwargs)
    except (UnknownName, SpecError) as err:
        raise UserError(str(err)) from None


profile_option = click.option(
    "--profile", "profile_name", default=DEFAULT_PROFILE, show_default=True, help=f"One of: {', '.join(PROFILES)}."
)
engine_option = click.option(
    "--engine", default="native", show_default=True,
    help="native (this package's PyTorch engine) or mmdet (mmdetection 3.3 itself, for the rows its stock heads "
         "express; needs the mmdet extra).",
)


def _engine(name: str) -> str:
    return _choice("engine", name, ENGINES)


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
@click.pass_context
def cli(ctx: click.Context, experiments_dir: Path | None, results_dir: Path | None) -> None:
    """Reproduce the experiments of Generalized Focal Loss (Li et al., NeurIPS 2020)."""
    ctx.obj = {
        "experiments": experiments_dir or default_experiments_dir(),
        "results": results_dir or default_results_dir(),
    }


@cli.command("list")
@profile_option
@engine_option
@click.pass_obj
def list_command(obj: dict, profile_name: str, engine: str) -> None:
    """Every paper artifact with its rows and how many of its runs are done."""
    profile = _profile(profile_name)
    engine = _engine(engine)
    summaries = _guard(list_experiments, profile, obj["results"], obj["experiments"], engine)
    click.echo(f"{'experiment':<10}  {'paper':<16}  {'rows':>4}  {'runs done':>9}  title")
    for s in summaries:
        runs = f"{s['runs_done']}/{s['runs_total']}"
        click.echo(f"{s['id']:<10}  {s['paper_ref']:<16}  {s['rows']:>4}  {runs:>9}  {s['title']}")
    scale = " (toy scale)" if profile.toy_scale else ""
    click.echo(f"\nprofile: {profile.name}{scale} — {profile.description}"
               + (f"\nengine: {engine}" if engine != "native" else ""))


@cli.command("show")
@click.argument("experiment")
@profile_option
@engine_option
@click.option("--format", "fmt", default="text", show_default=True, help="text or json.")
@click.pass_obj
def show_command(obj: dict, experiment: str, profile_name: str, engine: str, fmt: str) -> None:
    """Rows, overrides, paper numbers, run ids and state of one experiment."""
    profile = _profile(profile_name)
    engine = _engine(engine)
    fmt = _format(fmt, ("text", "json"))
    exp = _guard(get_experiment, experiment, obj["experiments"])
    desc = _guard(describe_experiment, exp, profile, obj["results"], engine)
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
@click.pass_obj
def collect_command(obj: dict, experiments: tuple[str, ...], profile_name: str, fmt: str, out: Path | None,
                    engine: str) -> None:
    """Paper vs reproduced tables (all tables when no EXPERIMENT is named)."""
    profile = _profile(profile_name)
    engine = _engine(engine)
    fmt = _format(fmt, FORMATS)
    chosen = _guard(select, experiments, obj["experiments"])
    figures = [e.id for e in chosen if e.kind != "table"]
    if experiments and figures:
        raise UserError(f"{', '.join(figures)} is a figure, not a table; use `gfl-repro plot {figures[0]}`")
    out_dir = out or tables_dir(obj["results"], profile.name)
    for exp in chosen:
        if exp.kind != "table":
            continue
        table = _guard(collect_table, exp, profile, obj["results"], engine)
        text, ext = render(table, fmt)
        path = out_dir / (f"{exp.id}.{ext}" if engine == "native" else f"{exp.id}.{engine}.{ext}")
        atomic_write_text(path, text)
        states = table.frame.xs("run", axis=1, level=-2).to_numpy().ravel()
        done = int((states == "done").sum())
        runs = int((states != "reference").sum())
        click.echo(f"{exp.id}: {done}/{runs} rows reproduced -> {path}")
        for problem in table.problems:
            click.echo(f"  warning: {problem}", err=True)


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
@click.pass_obj
def run_command(obj: dict, experiments: tuple[str, ...], profile_name: str, engine: str, launcher: str, dry_run: bool,
                retry: bool, data_root: Path | None, device: str | None, max_parallel: int | None,
                launcher_config: Path | None, quiet: bool, **slurm_flags) -> None:
    """Train and evaluate the runs of EXPERIMENTS: done, pending and running runs are skipped."""
    from .engines.environment import DataError
    from .engines.errors import NonFiniteLoss
    from .launch.errors import LaunchError
    from .launch.plan import plan_runs
    from .launch.run import LAUNCHERS, LaunchOptions, run
    from .launch.slurm import slurm_options

    profile = _profile(profile_name)
    engine = _engine(engine)
    launcher = _choice("launcher", launcher, LAUNCHERS)
    if engine == "mmdet":
        _require_mmdet()
        if device is not None:
            raise UserError("--device is the native engine's option; with --engine mmdet, mmengine uses CUDA when "
                            "available")
    if max_parallel is not None and max_parallel < 1:
        raise UserError(f"--max-parallel must be >= 1, got {max_parallel}")
    chosen = _guard(select_with_uses, experiments, obj["experiments"])
    plan = _guard(plan_runs, chosen, profile, engine)
    for item in plan.unsupported:
        click.echo(f"{'skipped' if engine == 'mmdet' else 'not runnable yet'}: {item}", err=True)
    figures = [e for e in chosen if e.kind == "figure"]
    try:
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
    except (DataError, LaunchError) as err:
        raise UserError(str(err)) from None
    except NonFiniteLoss as err:
        raise click.ClickException(str(err)) from None
    if dry_run:
        return
    flags = f"--profile {profile.name}" + (f" --engine {engine}" if engine != "native" else "")
    click.echo(f"status:  gfl-repro status {' '.join(experiments)} {flags}")
    tables = [e.id for e in chosen if e.id in experiments and e.kind == "table"]
    if tables:
        click.echo(f"tables:  gfl-repro collect {' '.join(tables)} {flags}")
    if figures:
        click.echo(f"figures: gfl-repro plot {' '.join(e.id for e in figures)} --profile {profile.name}")


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
              help="Output directory (default: figures/<profile>/ of the checkout).")
@click.option("--data-root", type=click.Path(path_type=Path), default=None,
              help="COCO 2017 root for Fig. 5(c)'s assignment pass (paper profile); default $GFL_REPRO_COCO.")
@click.pass_obj
def plot_command(obj: dict, figures: tuple[str, ...], profile_name: str, out: Path | None,
                 data_root: Path | None) -> int:
    """Draw FIGURES (all figures when none is named) as PNG + PDF + CSV from the runs' files."""
    from .analysis import AnalysisError, NotReady
    from .engines.environment import DataError
    from .report.figures import default_figures_dir, plot_experiment

    profile = _profile(profile_name)
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
@click.pass_obj
def status_command(obj: dict, experiments: tuple[str, ...], profile_name: str, engine: str, fmt: str) -> None:
    """State of every run (missing / pending / running / done / failed), progress, AP, last error."""
    from .report.status import format_status, status_rows

    profile = _profile(profile_name)
    engine = _engine(engine)
    fmt = _format(fmt, ("text", "json"))
    chosen = _guard(select, experiments, obj["experiments"])
    rows = _guard(status_rows, chosen, profile, obj["results"], engine=engine)
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
    else:
        click.echo(format_status(rows))


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
    """Convert an mmdet 3.x/2.x GFL or ATSS checkpoint into the native format (loads with weights_only=True)."""
    from .engines.mmdet.convert import CheckpointImportError, import_checkpoint

    try:
        info = import_checkpoint(checkpoint, out)
    except CheckpointImportError as err:
        raise UserError(str(err)) from None
    click.echo(f"{out}: {info['kind']} head, {info['num_classes']} classes, {info['tensors']} tensors")


@cli.group("data")
def data_group() -> None:
    """Datasets: generate the synthetic COCO-format set."""


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
