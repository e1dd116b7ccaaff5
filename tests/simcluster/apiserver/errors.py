"""Status objects with the reasons and message forms of the real API server."""

from __future__ import annotations

from typing import Any, Optional

from .resources import ResourceDef


class ApiError(Exception):
    """An error answered as a ``Status`` object (or plain text when ``text`` is set)."""

    def __init__(self, code: int, reason: str, message: str, details: Optional[dict[str, Any]] = None,
                 text: Optional[str] = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details
        self.text = text

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                "message": self.message, "reason": self.reason}
        if self.details is not None:
            body["details"] = self.details
        body["code"] = self.code
        return body


def _details(rd: Optional[ResourceDef], name: Optional[str], kind: Optional[str] = None) -> dict[str, Any]:
    d: dict[str, Any] = {}
    if name:
        d["name"] = name
    if rd is not None and rd.group:
        d["group"] = rd.group
    if kind is not None:
        d["kind"] = kind
    elif rd is not None:
        d["kind"] = rd.plural
    return d


def qualified(rd: ResourceDef) -> str:
    return rd.key


def not_found(rd: ResourceDef, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{qualified(rd)} "{name}" not found', _details(rd, name))


def namespace_not_found(ns: str) -> ApiError:
    return ApiError(404, "NotFound", f'namespaces "{ns}" not found', {"name": ns, "kind": "namespaces"})


def resource_not_found() -> ApiError:
    """Unknown resource in a known group/version (the real server answers a Status, not plain text)."""
    return ApiError(404, "NotFound", "the server could not find the requested resource", {})


def page_not_found() -> ApiError:
    """Unknown paths (unknown API groups among them) get the Go mux's plain-text 404."""
    return ApiError(404, "NotFound", "404 page not found", text="404 page not found\n")


def already_exists(rd: ResourceDef, name: str) -> ApiError:
    return ApiError(409, "AlreadyExists", f'{qualified(rd)} "{name}" already exists', _details(rd, name))


def conflict(rd: ResourceDef, name: str) -> ApiError:
    return ApiError(409, "Conflict",
                    f'Operation cannot be fulfilled on {qualified(rd)} "{name}": the object has been modified; '
                    "please apply your changes to the latest version and try again", _details(rd, name))


def conflict_message(rd: ResourceDef, name: str, why: str) -> ApiError:
    return ApiError(409, "Conflict", f'Operation cannot be fulfilled on {qualified(rd)} "{name}": {why}',
                    _details(rd, name))


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def method_not_allowed() -> ApiError:
    return ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource", {})


def unauthorized() -> ApiError:
    return ApiError(401, "Unauthorized", "Unauthorized")


def unsupported_media_type(content_type: str, accepted: list[str]) -> ApiError:
    return ApiError(415, "UnsupportedMediaType",
                    f"the body of the request was in an unknown format - accepted media types include: "
                    f"{', '.join(accepted)}", {})


def forbidden(rd: Optional[ResourceDef], name: str, reason_text: str) -> ApiError:
    target = qualified(rd) if rd is not None else ""
    prefix = f'{target} "{name}"' if name else target
    return ApiError(403, "Forbidden", f"{prefix} is forbidden: {reason_text}", _details(rd, name))


class FieldError:
    """One validation failure, rendered like field.Error.Error() in apimachinery."""

    def __init__(self, kind: str, path: str, detail: str = "", value: Any = None, has_value: bool = False) -> None:
        self.kind = kind  # Required | Invalid | Forbidden | Unsupported | Duplicate | TooLong
        self.path = path
        self.detail = detail
        self.value = value
        self.has_value = has_value

    @property
    def reason(self) -> str:
        return {"Required": "FieldValueRequired", "Invalid": "FieldValueInvalid", "Forbidden": "FieldValueForbidden",
                "Unsupported": "FieldValueNotSupported", "Duplicate": "FieldValueDuplicate",
                "TooLong": "FieldValueTooLong", "NotFound": "FieldValueNotFound"}.get(self.kind, "FieldValueInvalid")

    def body(self) -> str:
        label = {"Required": "Required value", "Invalid": "Invalid value", "Forbidden": "Forbidden",
                 "Unsupported": "Unsupported value", "Duplicate": "Duplicate value", "TooLong": "Too long",
                 "NotFound": "Not found"}[self.kind]
        text = label
        if self.has_value:
            text += ": " + go_value(self.value)
        if self.detail:
            text += ": " + self.detail
        return text

    def __str__(self) -> str:
        return f"{self.path}: {self.body()}"


class GoRaw(str):
    """A value already rendered the way Go prints it (struct literals such as v1.LabelSelector{...})."""


def go_value(value: Any) -> str:
    """Approximates how Go's %#v / %q prints the offending value in field errors."""
    if isinstance(value, GoRaw):
        return str(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        inner = ", ".join(f"{go_value(k)}:{go_value(v)}" for k, v in sorted(value.items()))
        return "map[string]string{" + inner + "}"
    if value is None:
        return "null"
    return str(value)


def invalid(rd: ResourceDef, name: str, errs: list[FieldError]) -> ApiError:
    """422 Invalid: ``DaemonSet.apps "x" is invalid: <field>: <detail>`` (several errors in brackets)."""
    kind_q = f"{rd.kind}.{rd.group}" if rd.group else rd.kind
    summary = str(errs[0]) if len(errs) == 1 else "[" + ", ".join(str(e) for e in errs) + "]"
    details: dict[str, Any] = {"name": name}
    if rd.group:
        details["group"] = rd.group
    details["kind"] = rd.kind
    details["causes"] = [{"reason": e.reason, "message": e.body(), "field": e.path} for e in errs]
    return ApiError(422, "Invalid", f'{kind_q} "{name}" is invalid: {summary}', details)


def expired(message: str) -> ApiError:
    return ApiError(410, "Expired", message)


def service_unavailable(message: str) -> ApiError:
    return ApiError(503, "ServiceUnavailable", message, {})


def internal(message: str) -> ApiError:
    return ApiError(500, "InternalError", f"Internal error occurred: {message}", {"causes": [{"message": message}]})
