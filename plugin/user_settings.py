"""The plugin's settings kept from one run of napari to the next (Qt's QSettings, an INI file).

The file is Qt's per-user INI location for ``napari-sam2-broker/plugin``
(on Linux ``~/.config/napari-sam2-broker/plugin.ini``), or the path in
``SAM2_SETTINGS`` when that is set (tests use it to keep their own file).
"""

from __future__ import annotations

import os
from typing import Any, TypeVar

from qtpy.QtCore import QSettings

ORGANISATION, APPLICATION = "napari-sam2-broker", "plugin"
T = TypeVar("T", int, float, bool, str)


def _store() -> QSettings:
    path = os.environ.get("SAM2_SETTINGS")
    if path:
        return QSettings(path, QSettings.Format.IniFormat)
    return QSettings(QSettings.Format.IniFormat, QSettings.Scope.UserScope, ORGANISATION, APPLICATION)


def load(key: str, default: T) -> T:
    """The stored value of ``key`` as the type of ``default`` (``default`` when missing or unreadable)."""
    raw: Any = _store().value(key, None)
    if raw is None:
        return default
    try:
        if isinstance(default, bool):
            return type(default)(str(raw).lower() in ("1", "true", "yes"))
        return type(default)(raw)
    except (TypeError, ValueError):
        return default


def save(key: str, value: int | float | bool | str) -> None:
    """Store ``value`` under ``key`` (written to disk at once)."""
    store = _store()
    store.setValue(key, value)
    store.sync()
