# Copyright: stackrox.prefetch contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The result of the ``manifest`` module without ``dest``: shared by the module and its action plugin, which
computes it on the controller without starting a module process (docs/performance.md)."""

from __future__ import annotations

import typing as t

from ansible_collections.stackrox.prefetch.plugins.module_utils._errors import PrefetchError
from ansible_collections.stackrox.prefetch.plugins.module_utils._imagelist import reference_warning
from ansible_collections.stackrox.prefetch.plugins.module_utils._render import config_hash, render, to_yaml
from ansible_collections.stackrox.prefetch.plugins.module_utils._settings import (
    SETTINGS_ARGUMENT_SPEC,
    validate_settings,
)


def manifest_argument_spec() -> dict[str, dict[str, t.Any]]:
    spec = dict(SETTINGS_ARGUMENT_SPEC)
    spec["dest"] = {"type": "path"}
    return spec


class ManifestError(PrefetchError):
    """The module's failure message (it names the instance)."""


def manifest_result(params: t.Mapping[str, t.Any]) -> tuple[dict[str, t.Any], list[str]]:
    """(the result before ``dest`` is written, the warnings) for validated module parameters."""
    try:
        settings = validate_settings({option: params[option] for option in SETTINGS_ARGUMENT_SPEC})
    except PrefetchError as error:
        raise ManifestError(f"prefetch instance {params['name']!r}: {error}") from None
    warnings = []
    warning = reference_warning(settings.images)
    if warning:
        warnings.append(f"prefetch instance {settings.name!r}: {warning}")
    objects = render(settings)
    result: dict[str, t.Any] = {
        "changed": False,
        "objects": objects,
        "yaml": to_yaml(objects),
        "checksum": config_hash(settings),
    }
    return result, warnings
