"""Pick a backend by its spec name. The protocol and ``RunStatus`` live in kdq/backends/base.py, which the
backends import: they never import this package, so the choice and the choices import in one direction."""

from __future__ import annotations

from kdq.backends.base import Backend, RunStatus

__all__ = ["Backend", "RunStatus", "get_backend"]


def get_backend(kind: str, settings) -> Backend:
    if kind == "local":
        from kdq.backends.local import LocalBackend

        return LocalBackend(settings)
    if kind == "modal":
        from kdq.backends.modal import ModalBackend

        return ModalBackend(settings)
    raise ValueError(f"unknown backend {kind!r}")
