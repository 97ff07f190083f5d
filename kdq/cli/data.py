"""``kdq data ...``: datasets. ``kdq data synth OUT`` writes a synthetic stand-in for the course dataset."""

from pathlib import Path
from typing import Annotated

import typer

from kdq.cli.common import console, fail, settings

app = typer.Typer(
    help="Datasets: make a synthetic one, add one to this home, upload one to Modal, inspect one.",
    no_args_is_help=True,
)


@app.command()
def synth(
    out: Annotated[Path, typer.Argument(help="Folder to write (gets train_dataset/train_dataset/<class>/).")],
    per_class: Annotated[
        int, typer.Option("--per-class", min=2, help="Mean images per class (real imbalance kept).")
    ] = 30,
    seed: Annotated[int, typer.Option("--seed", help="Same seed, same bytes.")] = 0,
    balanced: Annotated[
        bool, typer.Option("--balanced", help="Exactly --per-class images in every class.")
    ] = False,
    min_size: Annotated[int, typer.Option("--min-size", min=8, help="Smallest image side in pixels.")] = 48,
    max_size: Annotated[int, typer.Option("--max-size", min=8, help="Largest image side in pixels.")] = 128,
    duplicates: Annotated[int, typer.Option("--duplicates", min=0, help="Exact duplicates to plant.")] = 0,
    near_duplicates: Annotated[
        int, typer.Option("--near-duplicates", min=0, help="Resized or recompressed copies.")
    ] = 0,
    cross_class: Annotated[
        int, typer.Option("--cross-class", min=0, help="Same picture under two classes.")
    ] = 0,
    corrupt: Annotated[int, typer.Option("--corrupt", min=0, help="Truncated or non-image files.")] = 0,
    overlays: Annotated[
        float, typer.Option("--overlays", min=0.0, max=1.0, help="Fraction with text/axes/frame.")
    ] = 0.0,
    force: Annotated[bool, typer.Option("--force", help="Write into a folder that is not empty.")] = False,
) -> None:
    """Write a synthetic 10-class skin dataset (class names, layout and quirks of the real one).

    Examples:

    \b
      kdq data synth /tmp/synth --per-class 20
      kdq data synth data/dupes --duplicates 5 --cross-class 2 --corrupt 3
    """
    from kdq.synth import MANIFEST
    from kdq.synth import synth as make

    if min_size > max_size:
        raise typer.BadParameter(f"--min-size {min_size} is larger than --max-size {max_size}")
    if out.exists() and not out.is_dir():
        raise fail(f"{out} is a file: pass a folder to write the dataset into")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise fail(
            f"{out} is not empty: its files would be mixed with the new ones; pick a new folder or --force"
        )
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
    console().print(f"{len(man.images)} images in {len(man.classes)} classes under {out}")
    console().print(", ".join(f"{k}: {v}" for k, v in planted.items()))
    console().print(f"manifest: {Path(out) / MANIFEST}")


@app.command()
def add(
    path: Annotated[
        Path,
        typer.Argument(help="The dataset: a folder (<class>/<image>, or the course's nesting) or its .zip."),
    ],
    name: Annotated[str, typer.Option("--name", help="Name specs use as data.dataset.")] = "hw3",
    link: Annotated[bool, typer.Option("--link", help="Link to the folder instead of copying it.")] = False,
) -> None:
    """Put a dataset into this home ($KDQ_HOME/datasets/NAME) for local training and verification.

    Examples:

    \b
      kdq data add ~/Downloads/training_dataset.zip --name hw3
      kdq data add ~/Downloads/training_dataset --name hw3 --link
    """
    from kdq.localdata import add as add_dataset
    from kdq.train.layout import DataError

    dest = settings().datasets_dir / _checked_name(name)
    try:
        ds = add_dataset(path, dest, link=link)
    except (DataError, OSError) as exc:
        raise fail(str(exc)) from None
    how = f"linked to {dest.resolve()}" if link else "copied"
    console().print(f"{name}: {len(ds.files)} images in {len(ds.classes)} classes at {dest} ({how})")


def _checked_name(name: str) -> str:
    from kdq.spec import DataSpec

    try:
        DataSpec(dataset=name)
    except ValueError:
        raise typer.BadParameter(f"--name {name!r}: use letters, digits, '.', '_' or '-'") from None
    return name


def _keep_local(path: Path, dest: Path) -> None:
    """``upload`` keeps a copy in the home too: local training and the holdout check read it there."""
    from kdq.localdata import add as add_dataset
    from kdq.train.layout import DataError

    if dest.exists():
        return
    try:
        add_dataset(path, dest)
    except (DataError, OSError) as exc:
        raise fail(str(exc)) from None
    console().print(f"{dest.name}: local copy at {dest} (local training and the holdout check read it)")


@app.command()
def upload(
    path: Annotated[
        Path,
        typer.Argument(exists=True, file_okay=False, help="Dataset folder (the unzipped course dataset)."),
    ],
    name: Annotated[str, typer.Option("--name", help="Name specs use as data.dataset.")] = "hw3",
) -> None:
    """Upload a dataset to the Modal Volume once (skipped when the same fingerprint is already there),
    and keep a copy in this home ($KDQ_HOME/datasets/NAME) unless one is there.

    Examples:

    \b
      kdq data upload ~/Downloads/train_dataset --name hw3
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from kdq.backends.modal import preparing
    from kdq.backends.modal_data import upload_dataset
    from kdq.backends.modal_errors import guarded
    from kdq.backends.modal_gateway import ModalGateway

    _checked_name(name)
    s = settings()
    _keep_local(path, s.datasets_dir / name)
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console()) as bar:
        task = bar.add_task(f"upload {name}", total=None)
        try:
            with guarded(live_run=False), preparing(s):  # not beside the worker's own upload
                mark = upload_dataset(
                    ModalGateway(s),
                    path,
                    name,
                    lambda done, total: bar.update(task, completed=done, total=total),
                )
        except Exception as exc:  # noqa: BLE001 — TransientError / PermanentError say what to do
            raise fail(str(exc)) from None
    verb = "uploaded" if mark["uploaded"] else "already on the Volume (same fingerprint), skipped"
    console().print(f"{name}: {mark['files']} files, fingerprint {mark['fingerprint']}: {verb}")


@app.command()
def inspect(
    path: Annotated[
        Path,
        typer.Argument(help="Dataset folder (<class>/<image> or the course's nesting) or the course's .zip."),
    ],
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Report folder (default: $KDQ_HOME/reports/inspect-<folder name>)."),
    ] = None,
    workers: Annotated[
        int, typer.Option("--workers", min=0, help="Processes reading images (0: one per CPU core).")
    ] = 0,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the findings as JSON instead of the summary.")
    ] = False,
) -> None:
    """Look at a dataset: class balance, sizes, formats, broken files, duplicates, overlays; an HTML report.

    Examples:

    \b
      kdq data inspect ~/Downloads/train_dataset
      kdq data inspect ~/Downloads/training_dataset.zip
      kdq data inspect .kdq/datasets/hw3 --json | jq .counts
    """
    from rich.progress import Progress

    from kdq.cli.report import inspect_summary
    from kdq.datainspect import inspect_dataset, write_report
    from kdq.localdata import unzipped
    from kdq.train.layout import DataError

    out = out or settings().root / "reports" / f"inspect-{Path(path).resolve().name.removesuffix('.zip')}"
    with unzipped(path) as folder:  # the course's zip as downloaded, too
        try:
            with Progress(console=console(), transient=True, disable=as_json) as bar:
                task = bar.add_task("reading images", total=None)
                findings, infos = inspect_dataset(
                    folder,
                    workers or None,
                    progress=lambda done, total: bar.update(task, completed=done, total=total),
                )
        except DataError as exc:
            raise fail(str(exc)) from None
        page = write_report(findings, infos, out)
    if as_json:
        import json

        print(json.dumps({**findings.to_dict(), "report": str(page)}, indent=1))
        return
    console().print(inspect_summary(findings))
    console().print(f"report: {page}", highlight=False)
