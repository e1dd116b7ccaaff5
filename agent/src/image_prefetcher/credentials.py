"""Credential sources for pulls.

Seam for the credential-provider plugins (issue 5): anything with `async def credentials_for(image) -> list[Credential]`
is a `CredentialSource`. `ChainedCredentials` concatenates sources in order: plugin credentials first, then the pull
secret's (BEHAVIOR.md §2.2). The engine tries an image's credentials one after another in that order; an empty list
means one anonymous attempt stream. `credentials_for` may be called concurrently for different images (bounded by
`--max-parallel-pulls`); a source that must serialise (e.g. plugin execs) keeps its own lock.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from image_prefetcher.errors import CommandError
from image_prefetcher.imagelist import os_error_text
from image_prefetcher.keyring import ConfigError, Credential, DockerKeyring, decode_docker_config, keyring_from_entries
from image_prefetcher.logs import Logger


class CredentialSource(Protocol):
    async def credentials_for(self, image: str) -> list[Credential]: ...


class KeyringCredentials:
    """Credentials from a keyring (the `--docker-config` pull secret)."""

    def __init__(self, keyring: DockerKeyring) -> None:
        self.keyring = keyring

    async def credentials_for(self, image: str) -> list[Credential]:
        return self.keyring.lookup(image)[0]


class ChainedCredentials:
    def __init__(self, sources: Sequence[CredentialSource]) -> None:
        self.sources = list(sources)

    async def credentials_for(self, image: str) -> list[Credential]:
        found: list[Credential] = []
        for source in self.sources:
            found.extend(await source.credentials_for(image))
        return found


def load_docker_config(path: str, log: Logger) -> KeyringCredentials:
    """Read a `.dockerconfigjson` file; read or decode errors are fatal with upstream's texts (no secrets in them)."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as err:
        raise CommandError(
            f'failed to load image pull secrets: failed read "{path}": {os_error_text("open", path, err)}'
        ) from None
    try:
        entries = decode_docker_config(data)
    except ConfigError as err:
        raise CommandError(f"failed to load image pull secrets: unmarshalling docker config failed: {err}") from None

    def on_invalid(key: str, error: str) -> None:
        log.warn(f'Entry "{key}" in dockercfg invalid ({error}), ignoring')

    keyring = keyring_from_entries(entries, on_invalid)
    log.info("loaded image pull secrets", entries=len(keyring), keys=len(keyring.index))
    return KeyringCredentials(keyring)
