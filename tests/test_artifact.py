"""Artifacts from elsewhere: every kind of damage is refused with the file and the problem named."""

import json

import pytest


from rgft_edge.artifact import ArtifactError, load_artifact


@pytest.fixture
def artifact(compile_tiny):
    out, _ = compile_tiny("torch")
    return out


def edit_manifest(root, fn):
    m = json.loads((root / "manifest.json").read_text())
    fn(m)
    (root / "manifest.json").write_text(json.dumps(m))


def test_valid_artifact_loads(artifact):
    art = load_artifact(artifact)
    assert art.backend == "torch" and len(art.table) > 0


def test_tampered_file(artifact):
    p = artifact / "weights/trainable.safetensors"
    data = bytearray(p.read_bytes())
    data[-1] ^= 0xFF
    p.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"trainable.safetensors: sha256 does not match"):
        load_artifact(artifact)


def test_truncated_file(artifact):
    p = artifact / "weights/frozen.safetensors"
    p.write_bytes(p.read_bytes()[:100])
    with pytest.raises(ArtifactError, match=r"frozen.safetensors: size 100 bytes"):
        load_artifact(artifact)


def test_missing_file_and_missing_manifest(artifact):
    (artifact / "tokenizer/tokenizer.json").unlink()
    with pytest.raises(ArtifactError, match=r"tokenizer.json: listed in the manifest but missing"):
        load_artifact(artifact)
    (artifact / "manifest.json").unlink()
    with pytest.raises(ArtifactError, match="manifest.json: missing"):
        load_artifact(artifact)


def test_other_schema_version(artifact):
    edit_manifest(artifact, lambda m: m.update(schema_version=2))
    with pytest.raises(ArtifactError, match="schema version 2"):
        load_artifact(artifact)


def test_not_json_and_not_ours(artifact):
    (artifact / "manifest.json").write_text("{oops")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        load_artifact(artifact)
    (artifact / "manifest.json").write_text(json.dumps({"schema": "something-else"}))
    with pytest.raises(ArtifactError, match="not an rgft-edge manifest"):
        load_artifact(artifact)


def test_extra_unexpected_file(artifact):
    (artifact / "weights" / "payload.bin").write_bytes(b"\x00" * 10)
    with pytest.raises(ArtifactError, match=r"payload.bin: unexpected file"):
        load_artifact(artifact)


@pytest.mark.parametrize("name", ["../outside.txt", "/etc/passwd", "weights/../../x", "~/x"])
def test_path_traversal_in_manifest(artifact, name):
    edit_manifest(artifact, lambda m: m["files"].update({name: {"sha256": "0", "size": 1}}))
    with pytest.raises(ArtifactError, match="escapes the artifact directory"):
        load_artifact(artifact)


def test_missing_directory(tmp_path):
    with pytest.raises(ArtifactError, match="artifact directory not found"):
        load_artifact(tmp_path / "nope")


def rehash(root):
    """What an attacker who also rewrites the manifest's hashes would do."""
    from rgft_edge.artifact import sha256_file

    m = json.loads((root / "manifest.json").read_text())
    for name in m["files"]:
        p = root / name
        m["files"][name] = {"sha256": sha256_file(p), "size": p.stat().st_size}
    (root / "manifest.json").write_text(json.dumps(m))


def test_oversized_tensor_claim_is_refused_even_with_matching_hashes(artifact):
    p = artifact / "weights/trainable.safetensors"
    raw = p.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    name = next(k for k in header if k != "__metadata__")
    header[name]["shape"] = [10 ** 9, 10 ** 3]  # claims a terabyte
    new = json.dumps(header).encode()
    p.write_bytes(len(new).to_bytes(8, "little") + new + raw[8 + n:])
    rehash(artifact)
    with pytest.raises(ArtifactError, match=r"trainable.safetensors: tensor .* outside or inconsistent"):
        load_artifact(artifact)


def test_header_larger_than_file_is_refused(artifact):
    p = artifact / "weights/frozen.safetensors"
    raw = p.read_bytes()
    p.write_bytes((10 ** 12).to_bytes(8, "little") + raw[8:])
    rehash(artifact)
    with pytest.raises(ArtifactError, match="frozen.safetensors: safetensors header"):
        load_artifact(artifact)


def test_trainable_tensors_must_match_the_manifest(artifact):
    from safetensors.numpy import load_file, save_file

    p = artifact / "weights/trainable.safetensors"
    tensors = load_file(str(p))
    tensors["evil.extra.weight"] = tensors[next(iter(tensors))]
    save_file(tensors, str(p))
    rehash(artifact)
    with pytest.raises(ArtifactError, match="do not match the manifest's trainable set"):
        load_artifact(artifact)
