"""Settings: environment variables prefixed ``KDQ_`` and a ``.env`` file, nothing else.

Secrets are ``SecretStr``: they print as ``**********`` and must be unwrapped on purpose
(``settings.token.get_secret_value()``) at the one place that sends them.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="KDQ_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    home: Path = Field(Path(".kdq"), description="State folder: database, queue, runs, artifacts.")

    # The course server (see docs/course-server.md). Every path is a setting, never a constant.
    server_url: str = "http://hadi.cs.virginia.edu:9000"
    token: SecretStr | None = Field(None, description="Team token, 32 hex characters. Secret.")
    team: str | None = Field(None, description="Team name as shown on the leaderboard.")
    submit_path: str = "/submit"
    status_path: str = "/submission-status/{token}"
    leaderboard_path: str = "/leaderboard3"
    submit_interval_s: float = Field(900.0, ge=0, description="One submission per this many seconds.")
    status_interval_s: float = Field(15.0, ge=0, description="One status call per this many seconds.")
    connect_timeout_s: float = Field(5.0, gt=0)
    request_timeout_s: float = Field(60.0, gt=0)

    # Hugging Face: HF_TOKEN is what huggingface_hub itself reads, so accept it as is.
    hf_token: SecretStr | None = Field(None, validation_alias=AliasChoices("KDQ_HF_TOKEN", "HF_TOKEN"))

    # Modal
    modal_app: str = "kdq"
    modal_volume: str = "kdq"
    modal_secret: str = "kdq-hf"
    modal_torch: str = Field("2.14.1", description="torch version in the Modal image (it writes model.pt).")

    # Worker
    poll_interval_s: float = Field(5.0, gt=0, description="How often a running step looks again.")
    worker_threads: int = Field(4, ge=1)
    heartbeat_s: float = Field(5.0, gt=0)
    local_max_running: int = Field(1, ge=1, description="Local trainings at once; the rest wait queued.")
    modal_max_running: int = Field(8, ge=1, description="Modal trainings at once; the rest wait queued.")

    log_json: bool | None = Field(None, description="JSON logs; default: JSON unless on a TTY.")

    @cached_property
    def root(self) -> Path:
        return self.home.expanduser().resolve()

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

    def max_running(self, backend: str) -> int:
        """How many trainings of this backend kind may run at once (the launch gate, kdq.gate)."""
        return {"local": self.local_max_running, "modal": self.modal_max_running}[backend]

    def secrets(self) -> list[str]:
        """Every secret value this process knows, for redaction."""
        return [s.get_secret_value() for s in (self.token, self.hf_token) if s and s.get_secret_value()]


def get_settings() -> Settings:
    return Settings()
