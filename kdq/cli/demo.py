"""``kdq demo``: the README's main job (see kdq/demo.py)."""

from pathlib import Path
from typing import Annotated

import typer

from kdq.cli.common import settings


def demo(
    home: Annotated[
        Path | None, typer.Option(help="Where the demo keeps its state (default: $KDQ_HOME/demo).")
    ] = None,
    configs: Annotated[
        list[str] | None, typer.Option("--config", help="Spec files to run (default: configs/demo/*.toml).")
    ] = None,
    per_class: Annotated[int, typer.Option(help="Generated training images per class (on average).")] = 30,
    timeout: Annotated[float, typer.Option(help="Give up after this many seconds.")] = 600.0,
    watch: Annotated[bool, typer.Option("--watch/--no-watch", help="Live status table.")] = True,
) -> None:
    """Run the whole journey locally: generated data, local training, a stand-in course server.

    Examples:

    \b
      kdq demo
      kdq demo --home /tmp/kdq-demo --no-watch
    """
    import glob

    from rich.console import Console

    from kdq.cli import tables, views
    from kdq.demo import DEMO_CONFIGS, DemoOptions, Views, run

    paths = [
        Path(p) for pattern in (configs or [str(DEMO_CONFIGS / "*.toml")]) for p in sorted(glob.glob(pattern))
    ]
    if not paths:
        raise typer.BadParameter("no demo spec files found", param_hint="--config")
    import logging

    from kdq import log as kdqlog

    kdqlog.configure(False, level=logging.WARNING, settings=settings())  # the demo says what it does itself
    opts = DemoOptions(
        home=home or settings().root / "demo",
        configs=paths,
        per_class=per_class,
        timeout_s=timeout,
        watch=watch,
    )
    drawn = Views(  # the settings read as it draws: the demo's own, once it has set them
        status=lambda store: views.status_view(store, settings(), True), leaderboard=tables.leaderboard_table
    )
    raise typer.Exit(run(opts, Console(), drawn))
