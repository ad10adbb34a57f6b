"""Artifact directories: the manifest, and a loader that trusts nothing it reads.

An artifact is what the host compiler writes and a device trains: `manifest.json` plus the files it
lists, each with its sha256 and size. Plain Python (no torch) so every runner can validate before
it touches a backend. Every refusal names the file and the problem.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .backend import backend_names
from .components import ComponentTable
from .errors import UserError

SCHEMA = "rgft-edge/artifact"
SCHEMA_VERSION = 1  # text inputs (token ids); what every text artifact is still written as
IMAGE_SCHEMA_VERSION = 2  # version 1 + image inputs (input_spec kind "image"); older readers refuse it
IMAGE_TASK = "image-classification"
MANIFEST = "manifest.json"
MAX_MANIFEST_BYTES = 16 * 1024 * 1024


class ArtifactError(UserError):
    """An artifact directory that is missing, incomplete, tampered with or of another schema."""


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def safe_relpath(name: str) -> PurePosixPath:
    """A manifest file name must stay inside the artifact directory."""
    p = PurePosixPath(name)
    if not name or p.is_absolute() or ".." in p.parts or "\\" in name or name.startswith("~"):
        raise ArtifactError(f"{MANIFEST}: file name {name!r} escapes the artifact directory")
    return p


@dataclass
class Artifact:
    root: Path
    manifest: dict

    @property
    def backend(self) -> str:
        return self.manifest["backend"]

    @property
    def table(self) -> ComponentTable:
        return ComponentTable.from_dict(self.manifest["components"])

    def path(self, name: str) -> Path:
        if name not in self.manifest["files"]:
            raise ArtifactError(f"{name}: not listed in {MANIFEST}")
        return self.root / safe_relpath(name)

    @property
    def programs(self) -> list[dict]:
        return self.manifest.get("programs", [])


def write_manifest(root: Path, manifest: dict) -> Path:
    """Hash every file under root (except the manifest) into manifest['files'] and write it."""
    files = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != MANIFEST:
            rel = p.relative_to(root).as_posix()
            files[rel] = {"sha256": sha256_file(p), "size": p.stat().st_size}
    version = IMAGE_SCHEMA_VERSION if _is_image(manifest.get("input_spec")) else SCHEMA_VERSION
    manifest = {"schema": SCHEMA, "schema_version": version, **manifest, "files": files}
    tmp = root / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, root / MANIFEST)
    return root / MANIFEST


REQUIRED = ("backend", "components", "trainable", "input_spec", "files", "source_model")


def load_artifact(root: str | os.PathLike, verify_hashes: bool = True,
                  allow_extra_files: bool = False) -> Artifact:
    root = Path(root)
    if not root.is_dir():
        raise ArtifactError(f"{root}: artifact directory not found")
    mpath = root / MANIFEST
    if not mpath.is_file():
        raise ArtifactError(f"{mpath}: missing (not an rgft-edge artifact directory?)")
    if mpath.stat().st_size > MAX_MANIFEST_BYTES:
        raise ArtifactError(f"{mpath}: {mpath.stat().st_size} bytes, larger than any real manifest")
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ArtifactError(f"{mpath}: not valid JSON ({e})") from e
    if not isinstance(manifest, dict) or manifest.get("schema") != SCHEMA:
        raise ArtifactError(f"{mpath}: not an rgft-edge manifest (schema {manifest.get('schema') if isinstance(manifest, dict) else None!r})")
    version = manifest.get("schema_version")
    if version not in (SCHEMA_VERSION, IMAGE_SCHEMA_VERSION):
        raise ArtifactError(f"{mpath}: schema version {version!r}, this rgft-edge reads versions "
                            f"{SCHEMA_VERSION} and {IMAGE_SCHEMA_VERSION}; recompile the artifact with a "
                            "matching rgft-edge")
    missing = [k for k in REQUIRED if k not in manifest]
    if missing:
        raise ArtifactError(f"{mpath}: missing field(s) {missing}")
    _check_input_spec(mpath, manifest["input_spec"], version)
    source = manifest["source_model"]
    if _is_image(manifest["input_spec"]) != (isinstance(source, dict) and source.get("task") == IMAGE_TASK):
        raise ArtifactError(f"{mpath}: input_spec and source_model.task disagree on whether this is an image model")
    if not isinstance(manifest["trainable"], list):
        raise ArtifactError(f"{mpath}: 'trainable' must list parameter names")
    if manifest["backend"] not in backend_names():
        raise ArtifactError(f"{mpath}: unknown backend {manifest['backend']!r}")
    files = manifest["files"]
    if not isinstance(files, dict):
        raise ArtifactError(f"{mpath}: 'files' must map names to sha256 and size")
    for name, meta in files.items():
        rel = safe_relpath(name)
        p = root / rel
        if not p.is_file() or p.is_symlink():
            raise ArtifactError(f"{p}: listed in the manifest but missing (or not a regular file)")
        size = p.stat().st_size
        if not isinstance(meta, dict) or size != meta.get("size"):
            raise ArtifactError(f"{p}: size {size} bytes, manifest says {meta.get('size') if isinstance(meta, dict) else meta} (truncated or replaced)")
        if verify_hashes and sha256_file(p) != meta.get("sha256"):
            raise ArtifactError(f"{p}: sha256 does not match the manifest (corrupted or tampered)")
    if not allow_extra_files:
        for p in sorted(root.rglob("*")):
            rel = p.relative_to(root).as_posix()
            if p.is_file() and rel != MANIFEST and rel not in files:
                raise ArtifactError(f"{p}: unexpected file not listed in the manifest")
    try:
        table = ComponentTable.from_dict(manifest["components"])
    except (KeyError, TypeError, ValueError) as e:
        raise ArtifactError(f"{mpath}: malformed component table ({e})") from e
    for name in files:
        if name.endswith(".safetensors"):
            check_safetensors(root / name)
    trainable_file = root / "weights" / "trainable.safetensors"
    if "weights/trainable.safetensors" in files:
        _check_trainable(trainable_file, table, manifest["trainable"])
    return Artifact(root, manifest)


def _is_image(spec) -> bool:
    return isinstance(spec, dict) and spec.get("kind") == "image"


def _positive_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def _triple(v) -> bool:
    return isinstance(v, list) and len(v) == 3 and all(isinstance(x, (int, float)) for x in v)


def _check_input_spec(mpath: Path, spec, version) -> None:
    if not (isinstance(spec, dict) and isinstance(spec.get("names"), list) and _positive_int(spec.get("batch_size"))):
        raise ArtifactError(f"{mpath}: input_spec must give names and a positive batch_size")
    image = _is_image(spec)
    if image != (version == IMAGE_SCHEMA_VERSION):  # each version has exactly one kind of input
        raise ArtifactError(f"{mpath}: schema version {version} with {'an image' if image else 'a text'} "
                            f"input_spec (version {SCHEMA_VERSION}: text inputs; {IMAGE_SCHEMA_VERSION}: image inputs)")
    if not image:
        if not _positive_int(spec.get("max_length")):
            raise ArtifactError(f"{mpath}: input_spec must give a positive max_length")
        return
    crop = spec.get("crop")
    if not (spec["names"] == ["pixel_values"] and spec.get("dtype") == "float32"
            and _positive_int(spec.get("image_size")) and spec["image_size"] >= 8
            and _triple(spec.get("mean")) and _triple(spec.get("std")) and all(x > 0 for x in spec["std"])
            and isinstance(crop, (int, float)) and 0 < crop <= 1):
        raise ArtifactError(f"{mpath}: an image input_spec must give names ['pixel_values'], dtype float32, "
                            "image_size >= 8, three means, three positive stds and a crop in (0, 1]")


_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
                "U8": 1, "BOOL": 1}
MAX_HEADER_BYTES = 64 * 1024 * 1024


def check_safetensors(path: Path) -> dict:
    """Read a safetensors header without loading tensors; refuse a header or tensor that claims
    more bytes than the file has, overlaps another, or uses an unknown dtype."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ArtifactError(f"{path}: too short to be a safetensors file")
        n = int.from_bytes(head, "little")
        if n <= 0 or n > min(MAX_HEADER_BYTES, size - 8):
            raise ArtifactError(f"{path}: safetensors header of {n} bytes does not fit a {size}-byte file")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ArtifactError(f"{path}: unreadable safetensors header ({e})") from e
    if not isinstance(header, dict):
        raise ArtifactError(f"{path}: safetensors header is not a mapping")
    data = size - 8 - n
    spans = []
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (a, b) = meta["dtype"], meta["shape"], meta["data_offsets"]
            count = 1
            for d in shape:
                if not isinstance(d, int) or d < 0:
                    raise ValueError(f"bad dimension {d!r}")
                count *= d
        except (KeyError, TypeError, ValueError) as e:
            raise ArtifactError(f"{path}: tensor {name!r} has a malformed entry ({e})") from e
        if dtype not in _DTYPE_BYTES:
            raise ArtifactError(f"{path}: tensor {name!r} has unsupported dtype {dtype!r}")
        if not (0 <= a <= b <= data) or b - a != count * _DTYPE_BYTES[dtype]:
            raise ArtifactError(f"{path}: tensor {name!r} claims {count} x {dtype} at bytes {a}..{b}, "
                                f"outside or inconsistent with the {data} data bytes (oversized?)")
        spans.append((a, b, name))
    spans.sort()
    for (a0, b0, n0), (a1, b1, n1) in zip(spans, spans[1:]):
        if a1 < b0:
            raise ArtifactError(f"{path}: tensors {n0!r} and {n1!r} overlap")
    return header


def _check_trainable(path: Path, table: ComponentTable, trainable: list) -> None:
    header = {k: v for k, v in check_safetensors(path).items() if k != "__metadata__"}
    if set(header) != set(trainable):
        extra, missing = sorted(set(header) - set(trainable)), sorted(set(trainable) - set(header))
        raise ArtifactError(f"{path}: tensors do not match the manifest's trainable set "
                            f"(unexpected {extra[:3]}, missing {missing[:3]})")
    expected: dict[str, int] = {}
    for comp in table:
        for ref in comp.params:
            shape = header[ref.name]["shape"] if ref.name in header else []
            expected[ref.name] = expected.get(ref.name, 0) + ref.numel(shape)
    for name, meta in header.items():
        count = 1
        for d in meta["shape"]:
            count *= d
        if expected.get(name, 0) != count:
            raise ArtifactError(f"{path}: tensor {name!r} has {count} elements, the component table "
                                f"covers {expected.get(name, 0)}")
