"""One exception hierarchy for everything a user can get wrong.

Every error carries a ``hint``: the next thing the user should do. The CLI prints
``error: <message>`` and ``hint: <hint>``, never a traceback, and exits with the class's
``exit_code``: 2 for a usage error (a flag or setting that is wrong: :class:`ConfigError`,
and every flag the command line parser refuses), 1 for a runtime error (everything else:
a missing or corrupt file, an unreachable hub, a model that does not load).
The hub maps each class to an HTTP status (``http_status``) so the same error is
typed on both sides of the wire.
"""

from __future__ import annotations


class QuantGridError(Exception):
    """Base class. ``str(err)`` is the message; ``err.hint`` says what to do next.

    A subclass states its wire ``code`` (and, where they differ from its parent's, its
    ``http_status`` and ``exit_code``) in its class line:
    ``class NotFound(HubError, code="not_found", http_status=404)``.
    """

    http_status = 400
    code = "quantgrid_error"
    exit_code = 1  # runtime error

    def __init_subclass__(cls, *, code: str | None = None, http_status: int | None = None,
                          exit_code: int | None = None, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        for attr, value in (("code", code), ("http_status", http_status), ("exit_code", exit_code)):
            if value is not None:
                setattr(cls, attr, value)

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def to_dict(self) -> dict:
        return {"error": {"code": self.code, "message": self.message, "hint": self.hint}}


class RetryLater(QuantGridError):
    """An error that may carry ``retry_after``: the seconds after which the same request can succeed
    (sent as the ``Retry-After`` header)."""

    def __init__(self, message: str, hint: str | None = None, retry_after: float | None = None):
        super().__init__(message, hint)
        self.retry_after = retry_after


class ConfigError(QuantGridError, code="config_error", exit_code=2):  # usage error
    """An invalid setting: a recipe value, a CLI flag, a value in a config file."""


class ConfigFileError(ConfigError, code="config_file_error", exit_code=1):
    """A settings file that cannot be read: missing, not YAML, not a mapping."""


class DataError(QuantGridError, code="data_error"):
    """A dataset that can't be read or has bad records; the message names file and line."""


class ModelError(QuantGridError, code="model_error"):
    """A base model or adapter that can't be loaded or doesn't fit."""


class AdapterMismatchError(ModelError, code="adapter_mismatch"):
    """An adapter trained for another base model; the message names both bases."""


class OutOfMemoryError(QuantGridError, code="out_of_memory"):
    """Training or inference ran out of (GPU) memory."""


class ValidationError(QuantGridError, code="validation_error", http_status=422):
    """A submission rejected by a static check; ``check`` names which."""

    def __init__(self, message: str, hint: str | None = None, check: str = "static"):
        super().__init__(message, hint)
        self.check = check


class ExportError(QuantGridError, code="export_error"):
    """An adapter or model that cannot be exported to the asked format."""


class EvalError(QuantGridError, code="eval_error"):
    """An evaluation that cannot run: no benchmark, a bad metric, a model that does not answer."""


# ---- errors that travel over HTTP (hub and serving) ----


class HubError(QuantGridError, code="hub_error"):
    """Something the hub refused or could not do."""


class AuthError(HubError, code="unauthorized", http_status=401):
    """No token, or one the hub does not accept."""


class PermissionDenied(HubError, code="forbidden", http_status=403):
    """A valid token that may not do this."""


class NotFound(HubError, code="not_found", http_status=404):
    """No such adapter, version, job or file."""


class Conflict(HubError, code="conflict", http_status=409):
    """The request clashes with what exists (a name or version that is taken)."""


class PayloadTooLarge(HubError, code="payload_too_large", http_status=413):
    """An upload larger than the hub accepts."""


class Unprocessable(HubError, code="unprocessable", http_status=422):
    """A well-formed request whose content the hub cannot use."""


class RateLimited(HubError, RetryLater, code="rate_limited", http_status=429):
    """Too many requests; ``retry_after`` says when to try again."""


class ServerError(HubError, code="server_error", http_status=500):
    """The hub failed on its side."""


class NetworkError(HubError, code="network_error", http_status=503):
    """The hub (or an upstream) could not be reached at all."""


HTTP_ERRORS: dict[int, type[HubError]] = {
    cls.http_status: cls
    for cls in (AuthError, PermissionDenied, NotFound, Conflict, PayloadTooLarge, Unprocessable, RateLimited)
}


def error_for_status(status: int, message: str, hint: str | None = None) -> HubError:
    """Map an HTTP status from the hub to the typed exception the client raises."""
    cls = HTTP_ERRORS.get(status)
    if cls is None:
        cls = ServerError if status >= 500 else HubError
    return cls(message, hint)
