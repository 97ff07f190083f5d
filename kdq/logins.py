"""Does this machine hold the logins its queued Modal specs need? Asked at ``kdq enqueue`` in a process of
its own (``python -m kdq.logins QUESTION``, JSON in and out), started beside the other checks: the Modal SDK
and huggingface_hub, which know where their logins live, are imported there, never in the command."""

from __future__ import annotations

import json
import subprocess
import sys

WAITS = "the worker pauses these experiments until it works (`kdq doctor` checks)"


def missing(modal: bool, hub: list[str], settings) -> list[str]:
    """A warning per login missing: Modal's (``modal``: a Modal spec is queued), a Hugging Face token for
    the Hub teachers ``hub`` of those specs."""
    found = []
    if modal:
        from modal.config import config  # MODAL_TOKEN_* or ~/.modal.toml: what the SDK itself will use

        if not (config.get("token_id") and config.get("token_secret")):
            found.append(f"Modal: not logged in on this machine: run `modal token new`; {WAITS}")
    if hub:
        from kdq import hf

        if not hf.find_token(settings):
            found.append(f"no Hugging Face token for {', '.join(hub)}: {hf.LOGIN}; {WAITS}")
    return found


def start(specs: list) -> subprocess.Popen | None:
    """The check for these specs, started; ``None`` when no Modal spec needs one."""
    from kdq import hf

    modal = [spec for _, spec in specs if spec.backend.kind == "modal"]
    if not modal:
        return None
    ask = {"modal": True, "hub": sorted({s.teacher.model for s in modal if hf.on_the_hub(s.teacher)})}
    cmd = [sys.executable, "-P", "-m", "kdq.logins", json.dumps(ask)]
    return subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def warnings(proc: subprocess.Popen | None) -> list[str]:
    """The check's warnings (waits for it); one line if the check itself failed."""
    if proc is None:
        return []
    out, err = proc.communicate(timeout=120)
    if proc.returncode:
        last = (err.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        return [f"could not check the Modal and Hugging Face logins ({last})"]
    return json.loads(out)


def stop(proc: subprocess.Popen | None) -> None:
    """Left early (another check failed): nothing waits for it."""
    if proc is not None and proc.poll() is None:
        proc.kill()
        proc.wait()


if __name__ == "__main__":
    from kdq.settings import Settings

    asked = json.loads(sys.argv[1])
    print(json.dumps(missing(asked["modal"], asked["hub"], Settings())))
