"""The model registry (protocol/runtime/models.toml + registry.py) and the SHA-256 cache (digests.py).

Pure logic and real files; no torch, no network.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from protocol.runtime import checkpoints
from protocol.runtime.digests import DigestMismatch, check_pinned, file_sha256
from protocol.runtime.registry import BUILTIN_FILE, RegistryError, builtin, get_entry, load_registry

SAM21 = ["sam2.1_hiera_tiny", "sam2.1_hiera_small", "sam2.1_hiera_base_plus", "sam2.1_hiera_large"]
MICROSAM = ["hvit_t_cells", "hvit_s_cells", "hvit_b_cells", "hvit_l_cells"]


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_shipped_registry_has_the_sam21_microsam_and_standin_entries() -> None:
    models = builtin()
    assert list(models)[:4] == SAM21
    for name in SAM21:
        entry = models[name]
        assert entry.family == "sam2" and entry.preprocessing == "sam2" and entry.licence == "Apache-2.0"
        assert entry.url.endswith(f"/{name}.pt") and entry.size_mib is not None
    for name in MICROSAM:
        entry = models[name]
        assert entry.family == "sam2" and entry.preprocessing == "microsam"
        assert entry.config.startswith("configs/sam2.1/sam2.1_hiera_")
        assert entry.url.startswith("https://owncloud.gwdg.de/") and "micro-sam" in entry.licence
    standin = models["standin-blobs"]
    assert standin.family == "standin" and standin.checkpoint_path() is None
    assert all(entry.description and entry.source == str(BUILTIN_FILE) for entry in models.values())


def test_a_user_file_adds_an_entry_and_overrides_only_the_fields_it_sets(tmp_path: Path) -> None:
    pin = "ab" * 32
    user = write(
        tmp_path / "mine.toml",
        f"""
[models.my_finetune]
family = "sam2"
config = "configs/sam2.1/sam2.1_hiera_t.yaml"
checkpoint = "/data/ft/my.pt"
licence = "CC-BY-4.0"
preprocessing = "microsam"
description = "tiny fine-tuned on our nuclei"
sha256 = "{pin.upper()}"

[models."sam2.1_hiera_tiny"]
device = "cpu"
""",
    )
    models = load_registry([user])
    mine = models["my_finetune"]
    assert mine.checkpoint_path() == Path("/data/ft/my.pt") and mine.sha256 == pin  # lower-cased
    assert mine.source == str(user) and mine.precision == "bf16" and mine.device == "auto"
    tiny = models["sam2.1_hiera_tiny"]
    assert tiny.device == "cpu" and tiny.config == builtin()["sam2.1_hiera_tiny"].config
    assert tiny.source == str(user)
    assert (
        checkpoints.checkpoint_path("sam2.1_hiera_tiny", tmp_path, models)
        == tmp_path / "sam2.1_hiera_tiny.pt"
    )
    with pytest.raises(ValueError, match="known models: sam2.1_hiera_tiny"):
        get_entry("nope", models)


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (
            'family = "sam4"\nlicence = "x"\ndescription = "d"',
            "field 'family' must be one of sam2, sam3, standin",
        ),
        (
            'family = "sam2"\nlicence = "x"\ndescription = "d"',
            "a sam2 model needs field(s) config, checkpoint",
        ),
        (
            'family = "standin"\nlicence = "x"\ndescription = "d"\ncolour = "red"',
            "unknown field(s) ['colour']",
        ),
        ('family = "standin"\nlicence = "x"\ndescription = 3', "field 'description' must be a string"),
        ('family = "standin"\nlicence = "x"\ndescription = "d"\nsha256 = "abc"', "'sha256' must be 64 hex"),
        ('family = "standin"\nlicence = "x"\ndescription = "d"\ndevice = "gpu"', "field 'device' must be"),
        (
            'family = "standin"\nlicence = "x"\ndescription = "d"\nprecision = "fp8"',
            "'precision' must be one of",
        ),
        (
            'family = "standin"\nlicence = "x"\ndescription = "d"\npreprocessing = "cellpose"',
            "'preprocessing'",
        ),
        ('family = "standin"\nlicence = "x"\ndescription = "d"\nsize_mib = [9, 2]', "'size_mib' must be"),
        ('family = "standin"\nlicence = "x"\ndescription = "d"\nurl = "ftp://x"', "'url' must start with"),
        ('family = "standin"\ndescription = "d"', "a standin model needs field(s) licence"),
    ],
)
def test_schema_errors_name_the_file_the_entry_and_the_field(tmp_path: Path, body: str, problem: str) -> None:
    path = write(tmp_path / "bad.toml", f"[models.broken]\n{body}\n")
    with pytest.raises(RegistryError) as info:
        load_registry([path])
    message = str(info.value)
    assert str(path) in message and "model 'broken'" in message and problem in message


def test_unreadable_and_malformed_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match=r"missing\.toml: cannot read"):
        load_registry([tmp_path / "missing.toml"])
    with pytest.raises(RegistryError, match="not valid TOML"):
        load_registry([write(tmp_path / "a.toml", "[models.x\n")])
    with pytest.raises(RegistryError, match=r"unknown top-level key\(s\) \['model'\]"):
        load_registry([write(tmp_path / "b.toml", '[model.x]\nfamily = "standin"\n')])
    with pytest.raises(RegistryError, match="no \\[models.NAME\\] table"):
        load_registry([write(tmp_path / "c.toml", "")])
    with pytest.raises(RegistryError, match="a name is 1-128"):
        load_registry([write(tmp_path / "d.toml", '[models."has space"]\nfamily = "standin"\n')])


def test_download_names_come_from_the_registry(tmp_path: Path) -> None:
    assert checkpoints.resolve("tiny") == ["sam2.1_hiera_tiny"]
    assert checkpoints.resolve("hvit_b_cells") == ["hvit_b_cells"]
    assert checkpoints.resolve("all") == SAM21 + MICROSAM  # every entry with a URL; not the stand-in
    with pytest.raises(ValueError, match="without a download URL"):
        checkpoints.resolve("standin-blobs")
    with pytest.raises(checkpoints.DownloadError, match="no download URL"):
        checkpoints.download("standin-blobs", tmp_path)


def test_download_command_line_rejects_an_unknown_model_without_touching_the_network(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as info:
        checkpoints.main(["--model", "no_such_model"])
    assert info.value.code == 2 and "no_such_model" in capsys.readouterr().err


def test_sha256_is_computed_once_then_cached_by_path_size_and_mtime(tmp_path: Path) -> None:
    cache = tmp_path / "cache" / "sha256.json"
    weights = tmp_path / "weights.pt"
    with open(weights, "wb") as f:  # a sparse 64 MiB file: hashing reads every byte
        f.truncate(64 << 20)
        f.seek(12345)
        f.write(b"micro-sam")
    expected = hashlib.sha256(weights.read_bytes()).hexdigest()
    first = file_sha256(weights, cache)
    assert first.sha256 == expected and not first.cached and cache.is_file()
    second = file_sha256(weights, cache)
    assert second.sha256 == expected and second.cached  # the file was not read again
    os.utime(weights, ns=(0, 10**18))  # same bytes, another mtime: hashed again
    assert not file_sha256(weights, cache).cached
    with open(weights, "r+b") as f:  # other bytes, other size: a new digest
        f.seek(0, 2)
        f.write(b"x")
    third = file_sha256(weights, cache)
    assert not third.cached and third.sha256 != expected
    cache.write_text("{not json")  # a damaged cache is ignored and replaced
    assert file_sha256(weights, cache).sha256 == third.sha256
    assert file_sha256(weights, cache).cached


def test_a_pinned_digest_that_differs_is_refused(tmp_path: Path) -> None:
    check_pinned(tmp_path / "w.pt", "ab" * 32, "", "model m")  # no pin: nothing to check
    check_pinned(tmp_path / "w.pt", "ab" * 32, "AB" * 32, "model m")
    with pytest.raises(DigestMismatch, match=r"model m: checkpoint .*w\.pt has SHA-256 abab.*pins cdcd"):
        check_pinned(tmp_path / "w.pt", "ab" * 32, "cd" * 32, "model m")
