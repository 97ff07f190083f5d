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
