"""The model registry: which services exist, what each one is, as data (TOML).

Standard library only (no torch), so clients (``sam2-batch --list-models``,
``checkpoints/download.py``, the plugin's embedded backend) read it too. The
built-in entries live in ``protocol/runtime/models.toml`` (shipped in the
package); a user adds or overrides entries with a file of the same layout
(``python -m workers --model-file my_models.toml``). Each entry is one TOML
table ``[models.NAME]``; NAME is the MDP service name.

Fields (all strings unless said otherwise):

``family``         ``sam2`` | ``sam3`` | ``standin``: the worker code that serves it.
``config``         family sam2: Hydra config inside the ``sam2`` package (required); family sam3:
                   optional TOML file with a ``[sam3]`` table of sizes for a variant other than
                   Meta's released model (``workers/sam3_model.py``; relative to the model file).
``checkpoint``     weights file; a relative name resolves in the checkpoint folder
                   (:func:`protocol.runtime.checkpoints.checkpoint_dir`), ``~`` expands
                   (families sam2 and sam3: required).
``url``            where ``checkpoints/download.py --model NAME`` fetches it (optional).
``licence``        the licence of the weights, as a user should read it (required).
``device``         default ``--device``: ``auto`` (default), ``cpu``, ``cuda``, ``cuda:N``, ``mps``.
``precision``      ``bf16`` (default: bfloat16 autocast on CUDA, float32 elsewhere) or ``fp32``.
``preprocessing``  ``sam2`` (SAM2's square resize + ImageNet normalisation), ``microsam``
                   (micro-sam's per-channel min-max, resize-longest-side + pad; see
                   ``workers/microsam_prep.py``), ``sam3`` (SAM 3's square resize to 1008 and
                   mean/std 0.5) or ``none`` (the stand-in). Default ``sam2``.
``description``    one line shown in the plugin's model box and ``--list-models`` (required).
``sha256``         optional pin: 64 hex digits; a worker refuses a checkpoint with another digest.
``size_mib``       optional ``[min, max]`` MiB window a download must fall in.

An entry in a user file whose name is already known overrides only the
fields it sets. Every entry is checked (:class:`RegistryError` names the file,
the entry and the field); unknown fields are errors, not silently ignored.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import Any

from protocol.runtime.paths import checkpoint_dir

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

BUILTIN_FILE = Path(__file__).with_name("models.toml")
FAMILIES = ("sam2", "sam3", "standin")
PREPROCESSINGS = ("sam2", "microsam", "sam3", "none")
PRECISIONS = ("bf16", "fp32")
DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
SHA256_PATTERN = re.compile(r"[0-9a-f]{64}")
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")
STRING_FIELDS = (
    "family",
    "config",
    "checkpoint",
    "url",
    "licence",
    "device",
    "precision",
    "preprocessing",
    "description",
    "sha256",
)
FIELDS = (*STRING_FIELDS, "size_mib")
DESCRIBED_FIELDS = ("family", "description", "licence", "preprocessing")
"""What a client is told about a model (:meth:`ModelEntry.describe`; ``mmi.services`` adds ``ops``)."""
# Fields an entry of each family must have.
REQUIRED = {
    "sam2": ("config", "checkpoint", "licence", "description"),
    "sam3": ("checkpoint", "licence", "description"),
    "standin": ("licence", "description"),
}


class RegistryError(ValueError):
    """A model file that cannot be read or breaks the schema (the message names file, entry, field)."""


@dataclass(frozen=True)
class ModelEntry:
    """One service of the registry (see the module docstring for each field's meaning).

    Attributes:
        name: the MDP service name, e.g. ``"sam2.1_hiera_tiny"``.
        source: the file the entry (or its last override) came from.
    """

    name: str
    family: str
    description: str
    licence: str
    config: str = ""
    checkpoint: str = ""
    url: str = ""
    device: str = "auto"
    precision: str = "bf16"
    preprocessing: str = "sam2"
    sha256: str = ""
    size_mib: tuple[int, int] | None = None
    source: str = ""

    def checkpoint_path(self, directory: Path | None = None) -> Path | None:
        """Where the weights are: ``checkpoint`` if absolute, else under ``directory``
        (default: the checkpoint folder); ``None`` for an entry without weights (the stand-in)."""
        if not self.checkpoint:
            return None
        path = Path(self.checkpoint).expanduser()
        if path.is_absolute():
            return path
        return (directory if directory is not None else checkpoint_dir()) / path

    def describe(self) -> dict[str, str]:
        """The fields a client shows about a service: family, description, licence, preprocessing."""
        return {name: getattr(self, name) for name in DESCRIBED_FIELDS}


def _check_entry(name: str, fields: Mapping[str, Any], where: str) -> ModelEntry:
    """A :class:`ModelEntry` from a merged table, or :class:`RegistryError` naming what is wrong."""

    def fail(problem: str) -> RegistryError:
        return RegistryError(f"{where}: model {name!r}: {problem}")

    if not NAME_PATTERN.fullmatch(name):
        raise fail("a name is 1-128 letters, digits or . _ + - (it is the MDP service name)")
    unknown = sorted(set(fields) - set(FIELDS))
    if unknown:
        raise fail(f"unknown field(s) {unknown}; known fields: {', '.join(FIELDS)}")
    for key in STRING_FIELDS:
        if key in fields and not isinstance(fields[key], str):
            raise fail(f"field {key!r} must be a string, got {fields[key]!r}")
    family = fields.get("family")
    if family not in FAMILIES:
        raise fail(f"field 'family' must be one of {', '.join(FAMILIES)}, got {family!r}")
    missing = [key for key in REQUIRED[family] if not str(fields.get(key, "")).strip()]
    if missing:
        raise fail(f"a {family} model needs field(s) {', '.join(missing)}")
    choices = {"precision": PRECISIONS, "preprocessing": PREPROCESSINGS}
    for key, allowed in choices.items():
        if key in fields and fields[key] not in allowed:
            raise fail(f"field {key!r} must be one of {', '.join(allowed)}, got {fields[key]!r}")
    if "device" in fields and not DEVICE_PATTERN.fullmatch(fields["device"]):
        raise fail(f"field 'device' must be auto, cpu, mps, cuda or cuda:N, got {fields['device']!r}")
    sha256 = fields.get("sha256", "").lower()
    if sha256 and not SHA256_PATTERN.fullmatch(sha256):
        raise fail(f"field 'sha256' must be 64 hex digits, got {fields['sha256']!r}")
    url = fields.get("url", "")
    if url and not url.startswith(("https://", "http://")):
        raise fail(f"field 'url' must start with https:// or http://, got {url!r}")
    size_mib = fields.get("size_mib")
    if size_mib is not None:
        ok = (
            isinstance(size_mib, list)
            and len(size_mib) == 2
            and all(type(v) is int and v >= 0 for v in size_mib)
            and size_mib[0] <= size_mib[1]
        )
        if not ok:
            raise fail(f"field 'size_mib' must be [min, max] whole MiB with min <= max, got {size_mib!r}")
    values = {key: fields[key] for key in STRING_FIELDS if key in fields}
    values["sha256"] = sha256
    return ModelEntry(
        name=name,
        size_mib=None if size_mib is None else (size_mib[0], size_mib[1]),
        source=where,
        **values,
    )


def _read_tables(path: Path) -> dict[str, dict[str, Any]]:
    """The ``[models.NAME]`` tables of one file."""
    try:
        with open(path, "rb") as f:
            document = tomllib.load(f)
    except OSError as e:
        raise RegistryError(f"{path}: cannot read the model file: {e}") from e
    except tomllib.TOMLDecodeError as e:
        raise RegistryError(f"{path}: not valid TOML: {e}") from e
    extra = sorted(set(document) - {"models"})
    if extra:
        raise RegistryError(f"{path}: unknown top-level key(s) {extra}; entries go in [models.NAME] tables")
    models = document.get("models", {})
    if not isinstance(models, dict) or not models:
        raise RegistryError(f"{path}: no [models.NAME] table")
    for name, table in models.items():
        if not isinstance(table, dict):
            raise RegistryError(f"{path}: model {name!r}: must be a table of fields, got {table!r}")
    return models


def load_registry(extra_files: Iterable[Path | str] = ()) -> Mapping[str, ModelEntry]:
    """The built-in entries, then each of ``extra_files`` in order (adding or overriding fields).

    Returns:
        name -> :class:`ModelEntry`, read-only, in file order.

    Raises:
        RegistryError: an unreadable file or an entry that breaks the schema.
    """
    merged: dict[str, dict[str, Any]] = {}
    sources: dict[str, str] = {}
    for path in (BUILTIN_FILE, *(Path(p) for p in extra_files)):
        for name, table in _read_tables(path).items():
            merged[name] = {**merged.get(name, {}), **table}
            sources[name] = str(path)
    entries = {name: _check_entry(name, fields, sources[name]) for name, fields in merged.items()}
    return MappingProxyType(entries)


@lru_cache(maxsize=1)
def builtin() -> Mapping[str, ModelEntry]:
    """The shipped registry (read once per process)."""
    return load_registry()


def get_entry(name: str, registry: Mapping[str, ModelEntry] | None = None) -> ModelEntry:
    """Entry ``name`` of ``registry`` (default: the shipped one).

    Raises:
        ValueError: unknown name; the message lists the known ones.
    """
    models = builtin() if registry is None else registry
    try:
        return models[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(models)}") from None
