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
    """Base class. ``str(err)`` is the message; ``err.hint`` says what to do next."""

    http_status = 400
    code = "quantgrid_error"
    exit_code = 1  # runtime error

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def to_dict(self) -> dict:
        return {"error": {"code": self.code, "message": self.message, "hint": self.hint}}


class ConfigError(QuantGridError):
    """An invalid setting: a recipe value, a CLI flag, a value in a config file."""

    code = "config_error"
    exit_code = 2  # usage error


class ConfigFileError(ConfigError):
    """A settings file that cannot be read: missing, not YAML, not a mapping."""

    code = "config_file_error"
    exit_code = 1


class DataError(QuantGridError):
    """A dataset that can't be read or has bad records; the message names file and line."""

    code = "data_error"


class ModelError(QuantGridError):
    """A base model or adapter that can't be loaded or doesn't fit."""

    code = "model_error"


class AdapterMismatchError(ModelError):
    """An adapter trained for another base model; the message names both bases."""

    code = "adapter_mismatch"


class OutOfMemoryError(QuantGridError):
    code = "out_of_memory"


class ValidationError(QuantGridError):
    """A submission rejected by a static check; ``check`` names which."""

    code = "validation_error"
    http_status = 422

    def __init__(self, message: str, hint: str | None = None, check: str = "static"):
        super().__init__(message, hint)
        self.check = check


class ExportError(QuantGridError):
    code = "export_error"


class EvalError(QuantGridError):
    code = "eval_error"


# ---- errors that travel over HTTP (hub and serving) ----


class HubError(QuantGridError):
    """Something the hub refused or could not do."""

    code = "hub_error"


class AuthError(HubError):
    http_status = 401
    code = "unauthorized"


class PermissionDenied(HubError):
    http_status = 403
    code = "forbidden"


class NotFound(HubError):
    http_status = 404
    code = "not_found"


class Conflict(HubError):
    http_status = 409
    code = "conflict"


class PayloadTooLarge(HubError):
    http_status = 413
    code = "payload_too_large"


class Unprocessable(HubError):
    http_status = 422
    code = "unprocessable"


class RateLimited(HubError):
    http_status = 429
    code = "rate_limited"

    def __init__(self, message: str, hint: str | None = None, retry_after: float | None = None):
        super().__init__(message, hint)
        self.retry_after = retry_after


class ServerError(HubError):
    http_status = 500
    code = "server_error"


class NetworkError(HubError):
    """The hub (or an upstream) could not be reached at all."""

    http_status = 503
    code = "network_error"


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
