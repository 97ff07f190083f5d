"""``kdq data ...``: datasets. ``kdq data synth OUT`` writes a synthetic stand-in for the course dataset."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

app = typer.Typer(help="Datasets", no_args_is_help=True)
console = Console()


@app.command()
def synth(
    out: Path = typer.Argument(..., help="Folder to write (gets train_dataset/train_dataset/<class>/)."),
    per_class: int = typer.Option(
        30, "--per-class", min=2, help="Mean images per class (real imbalance kept)."
    ),
    seed: int = typer.Option(0, "--seed", help="Same seed, same bytes."),
    balanced: bool = typer.Option(False, "--balanced", help="Exactly --per-class images in every class."),
    min_size: int = typer.Option(48, "--min-size", min=8, help="Smallest image side in pixels."),
    max_size: int = typer.Option(128, "--max-size", min=8, help="Largest image side in pixels."),
    duplicates: int = typer.Option(0, "--duplicates", min=0, help="Exact duplicates to plant."),
    near_duplicates: int = typer.Option(0, "--near-duplicates", min=0, help="Resized/recompressed copies."),
    cross_class: int = typer.Option(0, "--cross-class", min=0, help="Same picture under two classes."),
    corrupt: int = typer.Option(0, "--corrupt", min=0, help="Truncated or non-image files."),
    overlays: float = typer.Option(
        0.0, "--overlays", min=0.0, max=1.0, help="Fraction with text/axes/frame."
    ),
) -> None:
    """Write a synthetic 10-class skin dataset (class names, layout and quirks of the real one)."""
    from kdq.synth import MANIFEST
    from kdq.synth import synth as make

    if min_size > max_size:
        raise typer.BadParameter(f"--min-size {min_size} is larger than --max-size {max_size}")
    man = make(
        out,
        per_class,
        seed,
        size_range=(min_size, max_size),
        balanced=balanced,
        exact_duplicates=duplicates,
        near_duplicates=near_duplicates,
        cross_class=cross_class,
        corrupt=corrupt,
        overlays=overlays,
    )
    planted = {
        "exact duplicates": len(man.exact_duplicates),
        "near duplicates": len(man.near_duplicates),
        "cross-class": len(man.cross_class),
        "corrupt": len(man.corrupt),
        "overlays": len(man.overlays),
    }
    console.print(f"{len(man.images)} images in {len(man.classes)} classes under {out}")
    console.print(", ".join(f"{k}: {v}" for k, v in planted.items()))
    console.print(f"manifest: {Path(out) / MANIFEST}")


@app.command()
def upload(
    path: Path = typer.Argument(
        ..., exists=True, file_okay=False, help="Dataset folder (the unzipped course dataset)."
    ),
    name: str = typer.Option("hw3", "--name", help="Name specs use as data.dataset."),
) -> None:
    """Upload a dataset to the Modal Volume once (skipped when the same fingerprint is already there)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from kdq.backends.modal import preparing, upload_dataset
    from kdq.backends.modal_gateway import ModalGateway, guarded
    from kdq.settings import get_settings
    from kdq.spec import DataSpec

    try:
        DataSpec(dataset=name)
    except ValueError:
        raise typer.BadParameter(f"--name {name!r}: use letters, digits, '.', '_' or '-'") from None
    settings = get_settings()
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console) as bar:
        task = bar.add_task(f"upload {name}", total=None)
        try:
            with guarded(live_run=False), preparing(settings):  # not beside the worker's own upload
                mark = upload_dataset(
                    ModalGateway(settings),
                    path,
                    name,
                    lambda done, total: bar.update(task, completed=done, total=total),
                )
        except Exception as exc:  # noqa: BLE001 — TransientError / PermanentError say what to do
            console.print(f"[red]error:[/red] {exc}", highlight=False)
            raise typer.Exit(1) from None
    verb = "uploaded" if mark["uploaded"] else "already on the Volume (same fingerprint), skipped"
    console.print(f"{name}: {mark['files']} files, fingerprint {mark['fingerprint']}: {verb}")


@app.command()
def inspect(
    path: Path = typer.Argument(
        ..., help="Dataset folder (<class>/<image> or train_dataset/train_dataset/<class>/)."
    ),
    out: Path = typer.Option(
        None, "--out", help="Report folder (default: $KDQ_HOME/reports/inspect-<folder name>)."
    ),
    workers: int = typer.Option(
        0, "--workers", min=0, help="Processes reading images (0: one per CPU core)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the findings as JSON instead of the summary."),
) -> None:
    """Look at a dataset: class balance, sizes, formats, broken files, duplicates, overlays; writes an HTML report."""
    from rich.progress import Progress

    from kdq.cli.report import inspect_summary
    from kdq.datainspect import inspect_dataset, write_report
    from kdq.settings import get_settings
    from kdq.train.data import DataError

    try:
        with Progress(console=console, transient=True, disable=as_json) as bar:
            task = bar.add_task("reading images", total=None)
            findings, infos = inspect_dataset(
                path,
                workers or None,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
    except DataError as exc:
        from rich.text import Text

        console.print(Text("error: ", style="red") + Text(str(exc)), highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    out = out or get_settings().root / "reports" / f"inspect-{Path(path).resolve().name}"
    page = write_report(findings, infos, out)
    if as_json:
        import json

        print(json.dumps({**findings.to_dict(), "report": str(page)}, indent=1))
        return
    console.print(inspect_summary(findings))
    console.print(f"report: {page}", highlight=False)
