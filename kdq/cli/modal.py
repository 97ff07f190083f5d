"""``kdq modal ...``: the Modal app. ``deploy`` pushes kdq's code when it changed (or always, ``--force``);
``secret`` copies the Hugging Face token the user already has into the Modal secret."""

from typing import Annotated

import typer

from kdq import log as kdqlog
from kdq.cli.common import console, err
from kdq.cli.common import settings as get_settings  # a bad KDQ_* value: one line, not a traceback

app = typer.Typer(help="The Modal app: deploy, secret.", no_args_is_help=True)


def _fail(exc: Exception) -> typer.Exit:
    err().print(f"[red]error:[/red] {kdqlog.redact(str(exc))}", highlight=False, soft_wrap=True)
    return typer.Exit(1)


@app.command()
def deploy(
    force: Annotated[bool, typer.Option("--force", help="Deploy even if the code did not change.")] = False,
) -> None:
    """Deploy jobs/modal_app.py (kdq's code, the image, the Volume) when the code changed since last time."""
    from kdq.backends.modal import code_fingerprint, ensure_deployed
    from kdq.backends.modal_errors import guarded
    from kdq.backends.modal_gateway import ModalGateway

    settings = get_settings()
    kdqlog.configure(bool(settings.log_json), settings=settings)
    try:
        with guarded(live_run=False):
            done = ensure_deployed(settings, ModalGateway(settings), force=force, show_output=True)
    except Exception as exc:  # noqa: BLE001 — TransientError / PermanentError carry what to do
        raise _fail(exc) from None
    fp = code_fingerprint(settings)
    console().print(
        f"deployed app {settings.modal_app!r} (code {fp})"
        if done
        else f"app {settings.modal_app!r} is current (code {fp}); --force deploys anyway"
    )


@app.command()
def secret() -> None:
    """Check the Hugging Face token can read the teacher and write it into the Modal secret (always)."""
    from kdq import hf
    from kdq.backends.modal_errors import guarded
    from kdq.backends.modal_gateway import ModalGateway

    settings = get_settings()
    kdqlog.configure(bool(settings.log_json), settings=settings)
    try:
        with guarded(live_run=False):
            hf.ensure_access(settings, hf.TEACHER, gateway=ModalGateway(settings), force=True)
    except Exception as exc:  # noqa: BLE001
        raise _fail(exc) from None
    console().print(
        f"the Hugging Face token reads {hf.TEACHER} and is in Modal secret {settings.modal_secret!r}"
    )
