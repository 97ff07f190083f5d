"""The night's own commands: ``kdq notify test``, ``kdq logs``, ``kdq export``."""

import json
from typing import Annotated

import typer

from kdq.cli.common import USAGE, fail, say, settings

notify_app = typer.Typer(
    help="Notifications (KDQ_NOTIFY: Apprise URLs): send a test message.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@notify_app.command("test")
def notify_test(
    as_json: Annotated[bool, typer.Option("--json", help="What was sent, as JSON.")] = False,
) -> None:
    """Send one test message to every KDQ_NOTIFY URL (ntfy, Slack, Discord, mail, desktop, ...).

    Examples:

    \b
      KDQ_NOTIFY=ntfys://ntfy.sh/my-kdq-topic kdq notify test
      kdq notify test --json
    """
    import socket

    from kdq.notify import Message, send

    s = settings()
    urls = s.notify_urls()
    if not urls:
        raise fail(
            "KDQ_NOTIFY is not set: put one or more Apprise URLs in .env, e.g. "
            "KDQ_NOTIFY=ntfys://ntfy.sh/my-kdq-topic (https://github.com/caronc/apprise/wiki)",
            USAGE,
        )
    message = Message("kdq: test notification", f"The kdq worker of {s.root} will tell you here.")
    problems = send(s, [message])
    if as_json:
        print(json.dumps({"sent": not problems, "urls": len(urls), "problems": problems}, indent=2))
    if problems:
        raise fail("; ".join(problems))
    if not as_json:
        say(f"sent to {len(urls)} notifier{'s' if len(urls) > 1 else ''} from {socket.gethostname()}")


def logs(
    exp_id: Annotated[int, typer.Argument(help="The experiment's id (kdq status shows it).")],
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new lines until the training ends.")
    ] = False,
    lines: Annotated[
        int | None, typer.Option("--tail", "-n", min=0, help="Only the last N lines (then follow).")
    ] = None,
) -> None:
    """A training's log (log.txt of its current run), local or on the Modal Volume.

    Examples:

    \b
      kdq logs 12
      kdq logs 12 -f              # follow it, like `modal app logs -f`; ends when the training does
      kdq logs 12 --tail 20 -f
    """
    import sys
    import time

    from kdq import runlog
    from kdq.cli.common import get_or_exit, open_store
    from kdq.stages import Stage

    s = settings()
    waiting = {Stage.QUEUED, Stage.LAUNCHING}
    with open_store(look=True, s=s) as store:
        exp = get_or_exit(store, exp_id)
        while follow and exp.run_id is None and exp.stage in waiting:  # -f on a queued one: wait
            time.sleep(runlog.POLL_S)
            exp = store.get(exp_id)
        if exp.run_id is None:
            raise fail(
                f"experiment {exp_id} has no run yet ({exp.stage}): `kdq logs {exp_id} -f` waits for it"
            )

        def running() -> bool:
            return store.get(exp_id).stage in waiting | {Stage.TRAINING}

        def write(text: str) -> None:
            sys.stdout.write(text)
            sys.stdout.flush()

        try:
            read = runlog.reader(exp, s)
            text = read()
            if text is None and not follow:
                raise fail(f"experiment {exp_id}'s run {exp.run_id} has no log.txt (yet)")
            write(runlog.tail(text or "", lines))
            if follow:
                runlog.follow(read, running, write, shown=text or "")
        except KeyboardInterrupt:
            pass
        except (OSError, RuntimeError) as exc:  # Modal without credentials or network: one line
            raise fail(f"cannot read the log of run {exp.run_id}: {exc}") from None


def export(
    exp_id: Annotated[int | None, typer.Argument(help="The experiment's id (or --best, --live).")] = None,
    out: Annotated[
        str, typer.Option("--output", "-o", metavar="PATH", help="The model file to write (or a folder).")
    ] = "model.pt",
    best: Annotated[bool, typer.Option("--best", help="The best model by expected score.")] = False,
    live: Annotated[bool, typer.Option("--live", help="The model live on the server (last graded).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="What was written, as JSON.")] = False,
) -> None:
    """Copy a verified model file out, with its spec and metrics beside it, and its sha256.

    Examples:

    \b
      kdq export 12 -o model.pt        # model.pt, model.spec.json, model.metrics.json
      kdq export --best -o best/       # the best by expected score, into best/model.pt
      kdq export --live --json         # what the server grades now; sha256 = the uploaded one?
    """
    from pathlib import Path

    from kdq.cli.common import open_store
    from kdq.export_file import ExportError, choose, write

    s = settings()
    with open_store(look=True, s=s) as store:
        try:
            exp = choose(store, s, exp_id, best, live)
            done = write(exp, store, Path(out))
        except ExportError as exc:
            raise fail(str(exc), USAGE if "name one experiment" in str(exc) else 1) from None
    if as_json:
        print(json.dumps(done, indent=2))
        return
    say(f"{done['path']}: experiment {done['id']} {done['name']} ({done['model_mb']:.2f} MiB)")
    say(f"sha256 {done['sha256']}")
    for u in done["uploads"]:
        same = "the same file" if u["same_file"] else f"a DIFFERENT file (uploaded {u['sha256']})"
        say(f"uploaded as attempt #{u['attempt']}: {same}")
    if not done["uploads"]:
        say("never uploaded")
    say(f"beside it: {Path(done['spec']).name}, {Path(done['metrics']).name}")
