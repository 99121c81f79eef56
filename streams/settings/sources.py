"""Where settings come from besides the environment: the secret files, refused when exposed."""

from __future__ import annotations

import stat
from pathlib import Path

from pydantic_settings import (
    NestedSecretsSettingsSource,
    PydanticBaseSettingsSource,
)

from warden.streams.exceptions import SettingsError

#: Permission bits a secret file must not have: any access by other users, writes by the group.
_EXPOSED_BITS = stat.S_IRWXO | stat.S_IWGRP


class _SecretFiles(NestedSecretsSettingsSource):
    """Settings from the files of a secrets directory, refused when another user could read or change one."""

    def validate_secrets_path(self, path: Path) -> None:
        super().validate_secrets_path(path)
        if not path.is_dir():
            return
        if path.stat().st_mode & stat.S_IWOTH:
            raise SettingsError(f"secrets directory {path} is writable by every user")
        for file in self._iter_secret_files(path):
            if file.stat().st_mode & _EXPOSED_BITS:  # follows a Kubernetes mount's links to the data
                raise SettingsError(
                    f"secret file {file} is readable or writable by other users: "
                    "mount it with mode 0440 (Kubernetes defaultMode) or chmod 600 it"
                )


def _sources(
    init_settings: PydanticBaseSettingsSource,
    env_settings: PydanticBaseSettingsSource,
    file_secret_settings: PydanticBaseSettingsSource,
) -> tuple[PydanticBaseSettingsSource, ...]:
    """Arguments, then the environment, then the secret files (no ``.env`` file)."""
    secret_files = _SecretFiles(file_secret_settings, secrets_dir_missing="ok", secrets_nested_delimiter="__")
    return (init_settings, env_settings, secret_files)
