"""Settings: environment variables prefixed ``KDQ_`` and ``.env`` files, nothing else.

The home is found the way git finds a repository: ``KDQ_HOME`` if set, else the nearest folder, from
the current one upwards, that holds a ``.kdq/`` folder or a ``.env`` file (its ``.kdq/`` is the home,
its ``.env`` is read), else ``./.kdq``. A ``KDQ_HOME`` with a ``.env`` of its own reads that too.
Nothing is created here: the store makes the home when a command first writes.

Secrets are ``SecretStr``: they print as ``**********`` and must be unwrapped on purpose
(``settings.token.get_secret_value()``) at the one place that sends them.
"""

from __future__ import annotations

import os
from datetime import datetime
from functools import cached_property
from pathlib import Path
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

HOME_DIR = ".kdq"
EASTERN = ZoneInfo("America/New_York")  # the course server's clock
ENV_FILE = ".env"


DEFAULT_PRIOR = "1:0,25:1"  # KDQ_SIZE_FACTOR: linear from 0 points at 1 MiB to 1 point at 25 MiB


def parse_prior(text: str) -> tuple[tuple[float, float], ...]:
    """``"1:0,25:1"`` (MiB:points pairs) as sorted points; ``ValueError`` saying what is wrong."""
    points = []
    for part in text.replace(" ", "").split(","):
        size, sep, value = part.partition(":")
        try:
            if not sep:
                raise ValueError
            points.append((float(size), float(value)))
        except ValueError:
            raise ValueError(
                f"{part!r} is not MiB:points; write pairs like {DEFAULT_PRIOR!r} (0 points at 1 MiB, 1 at 25)"
            ) from None
    points.sort()
    if len(points) < 2 or len({s for s, _ in points}) != len(points):
        raise ValueError(f"{text!r}: give at least two different sizes, e.g. {DEFAULT_PRIOR!r}")
    if any(b[1] < a[1] for a, b in zip(points, points[1:])):
        raise ValueError(f"{text!r}: points must not fall as size grows (a bigger model never scores more)")
    return tuple(points)


WORKER_SILENT_BEATS = 6  # heartbeats missed before the worker counts as not running (30 s by default)


class SettingsError(ValueError):
    """A bad ``KDQ_*`` value: one line naming the variable, where it came from and the fix."""


def find_project(start: Path | None = None) -> Path | None:
    """The nearest folder from ``start`` upwards with a ``.kdq/`` folder or a ``.env`` file."""
    start = (start or Path.cwd()).resolve()
    for folder in (start, *start.parents):
        if (folder / HOME_DIR).is_dir() or (folder / ENV_FILE).is_file():
            return folder
    return None


def _default_home() -> Path:
    return (find_project() or Path.cwd()) / HOME_DIR


def _env_file() -> tuple[Path, ...]:
    """The project's ``.env``, then the home's own (``$KDQ_HOME/.env``: the demo's stand-in), which wins."""
    project = find_project()
    home = Path(os.environ["KDQ_HOME"]).expanduser() if os.environ.get("KDQ_HOME") else None
    found = [folder / ENV_FILE for folder in (project, home) if folder and (folder / ENV_FILE).is_file()]
    return tuple(dict.fromkeys(found))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KDQ_", env_file_encoding="utf-8", extra="ignore")

    home: Path = Field(default_factory=_default_home, description="State folder: database, queue, runs.")

    # The course server (docs/getting-started.md). Every path is a setting, never a constant.
    server_url: str = Field(
        "http://hadi.cs.virginia.edu:9000", description="The course server (on the UVA VPN)."
    )
    token: SecretStr | None = Field(None, description="Team token, 32 hex characters. Secret.")
    team: str | None = Field(None, description="Team name as shown on the leaderboard.")
    submit_path: str = Field("/submit", description="The server's upload path.")
    status_path: str = Field(
        "/submission-status/{token}", description="The server's path listing the team's attempts."
    )
    leaderboard_path: str = Field("/leaderboard3", description="The server's leaderboard path.")
    submit_interval_s: float = Field(
        900.0, ge=0, le=86400, allow_inf_nan=False, description="One submission per this many seconds."
    )
    status_interval_s: float = Field(
        15.0, ge=0, le=86400, allow_inf_nan=False, description="One status call per this many seconds."
    )
    connect_timeout_s: float = Field(5.0, gt=0, description="Seconds to reach the course server.")
    request_timeout_s: float = Field(60.0, gt=0, description="Seconds for one answer of the course server.")

    # Hugging Face: HF_TOKEN is what huggingface_hub itself reads, so accept it as is.
    hf_token: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("KDQ_HF_TOKEN", "HF_TOKEN"),
        description="Hugging Face token for a gated teacher (MedSigLIP); HF_TOKEN works too. Secret.",
    )

    # Modal
    modal_app: str = Field("kdq", description="The Modal app kdq deploys and calls.")
    modal_volume: str = Field("kdq", description="The Modal Volume with the datasets and run folders.")
    modal_secret: str = Field("kdq-hf", description="The Modal secret holding the Hugging Face token.")
    modal_torch: str = Field(
        "2.14.1",
        description="torch in the Modal image: it writes model.pt, checked against torch 2.4.1's operators.",
    )

    # Worker
    poll_interval_s: float = Field(5.0, gt=0, description="How often a running step looks again.")
    worker_threads: int = Field(
        4, ge=1, description="Worker threads: steps of different experiments at once."
    )
    heartbeat_s: float = Field(
        5.0,
        gt=0,
        description="How often the worker says it is alive; after 6 missed beats it counts as not running.",
    )
    student_cache: Path | None = Field(
        None,
        description="The file where enqueue's student check keeps its verdicts; default: cache/students.json "
        "in the home. One file for several homes checks each student once.",
    )
    local_max_running: int = Field(1, ge=1, description="Local trainings at once; the rest wait queued.")
    modal_max_running: int = Field(8, ge=1, description="Modal trainings at once; the rest wait queued.")

    log_json: bool | None = Field(
        None, description="JSON logs; default: worker and fake-server unless on a TTY, other commands never."
    )

    # Playing for the score (docs/submission-policy.md)
    size_factor: str = Field(
        DEFAULT_PRIOR,
        description="The size factor assumed until the leaderboard shows one: MiB:points pairs.",
    )
    submit_confidence: float = Field(
        0.8, gt=0, lt=1, description="if_better submits when the chance it beats the live one is this."
    )
    deadline: datetime | None = Field(None, description="The homework deadline; without a zone, US Eastern.")

    # The night: cost, notifications, keep-awake (docs/overnight.md)
    gpu_price_per_hour: str | None = Field(
        None, description="Dollars per GPU-hour: one number, or GPU:price pairs over Modal's list prices."
    )
    notify: SecretStr | None = Field(
        None, description="Apprise URLs (space or comma separated) the worker notifies. Secret."
    )
    allow_sleep: bool = Field(False, description="Let the machine sleep while experiments are live.")

    @field_validator("gpu_price_per_hour")
    @classmethod
    def _prices(cls, text: str | None) -> str | None:
        from kdq.cost import parse_prices

        parse_prices(text)  # a ValueError says what is wrong and gives an example
        return text

    @field_validator("size_factor")
    @classmethod
    def _size_factor_pairs(cls, text: str) -> str:
        parse_prior(text)  # a ValueError says what is wrong and gives an example
        return text

    @field_validator("deadline")
    @classmethod
    def _deadline_eastern(cls, when: datetime | None) -> datetime | None:
        return when.replace(tzinfo=EASTERN) if when is not None and when.tzinfo is None else when

    def __init__(self, **values) -> None:
        values.setdefault("_env_file", _env_file())
        super().__init__(**values)

    @field_validator("home")
    @classmethod
    def _home_is_a_folder(cls, home: Path) -> Path:
        if home.expanduser().exists() and not home.expanduser().is_dir():
            raise ValueError(f"{home} is a file, not a folder: point it at a folder (made when first needed)")
        return home

    @field_validator("token", mode="before")
    @classmethod
    def _strip_token(cls, token):
        return token.strip() if isinstance(token, str) else token

    @field_validator("server_url")
    @classmethod
    def _url_is_http(cls, url: str) -> str:
        try:
            parts = urlsplit(url.strip())
            parts.port  # noqa: B018 (reading it validates the port)
        except ValueError as exc:
            raise ValueError(f"{url!r} is not a URL ({exc}); e.g. http://hadi.cs.virginia.edu:9000") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{url!r} needs http:// or https:// and a host, e.g. http://127.0.0.1:18777")
        return url.strip()

    @cached_property
    def root(self) -> Path:
        return self.home.expanduser().resolve()

    def where(self) -> str:
        """Where this home came from, for messages that say where kdq looked."""
        if os.environ.get("KDQ_HOME"):
            return f"KDQ_HOME={self.root}"
        if find_project():
            return f"home {self.root} (the nearest .kdq/ or .env above {Path.cwd()})"
        return f"no .kdq/ or .env in {Path.cwd()} or above it; looked for {self.root}; KDQ_HOME picks one"

    @property
    def db_path(self) -> Path:
        return self.root / "kdq.db"

    @property
    def queue_path(self) -> Path:
        return self.root / "queue.db"

    @property
    def runs_dir(self) -> Path:
        """Run folders of the local backend (the Modal backend keeps its own on the Volume)."""
        return self.root / "runs"

    @property
    def artifacts_dir(self) -> Path:
        return self.root / "artifacts"

    @property
    def datasets_dir(self) -> Path:
        """Datasets by name: a spec's ``data.dataset = "hw3"`` is ``datasets_dir / "hw3"``."""
        return self.root / "datasets"

    @property
    def cache_dir(self) -> Path:
        """Decoded-image and teacher caches, shared by every experiment."""
        return self.root / "cache"

    @property
    def student_verdicts(self) -> Path:
        """The student check's verdicts (they depend on the library versions only, not on the home)."""
        return self.student_cache or self.cache_dir / "students.json"

    def worker_alive(self, heartbeat_age: float | None) -> bool:
        """The one rule (status, cancel, doctor): the worker was heard within WORKER_SILENT_BEATS beats."""
        return heartbeat_age is not None and heartbeat_age < WORKER_SILENT_BEATS * self.heartbeat_s

    def max_running(self, backend: str) -> int:
        """How many trainings of this backend kind may run at once (the launch gate, kdq.gate)."""
        return {"local": self.local_max_running, "modal": self.modal_max_running}[backend]

    def secrets(self) -> list[str]:
        """Every secret value this process knows, for redaction."""
        values = [s.get_secret_value() for s in (self.token, self.hf_token, self.notify) if s]
        return [v for v in values + self.notify_urls() if v]

    def notify_urls(self) -> list[str]:
        """``KDQ_NOTIFY``'s Apprise URLs, one by one (each is a secret: it holds the webhook's key)."""
        text = self.notify.get_secret_value() if self.notify else ""
        return [u for u in text.replace(",", " ").split() if u]


def _one_line(exc: ValidationError) -> str:
    problems = []
    for e in exc.errors(include_url=False):
        field = str(e["loc"][0]) if e["loc"] else "?"
        var = "HF_TOKEN or KDQ_HF_TOKEN" if field == "hf_token" else f"KDQ_{field.upper()}"
        shown = "" if "token" in field else f"={str(e.get('input'))[:80]!r}"
        problems.append(f"{var}{shown}: {e['msg'].removeprefix('Value error, ')}")
    source = f"the environment or {_env_file()}" if _env_file() else "the environment"
    return f"bad setting in {source}: " + "; ".join(problems)


def get_settings() -> Settings:
    """The settings; a bad value raises ``SettingsError`` with one line saying which and how to fix it."""
    try:
        return Settings()
    except ValidationError as exc:
        raise SettingsError(_one_line(exc)) from None
