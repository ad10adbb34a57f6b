import pytest

from rgft_edge.device_profiles import ProfileError, detect, list_profiles, load_profile, parse_bytes

REQUIRED = {"raspberry-pi-4", "raspberry-pi-5", "jetson-nano", "jetson-orin-nano", "android-phone", "laptop-x86"}


def test_every_shipped_profile_loads_and_cites_sources():
    assert REQUIRED <= set(list_profiles())
    for name in list_profiles():
        p = load_profile(name)
        assert p.name == name and p.idle_power_w < p.max_power_w
        text = open(p.source).read()
        assert text.count("source:") >= 4, f"{name}: hardware numbers must cite a source"


def fake_root(tmp_path, files):
    for rel, content in files.items():
        f = tmp_path / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(content.encode() + b"\x00")
    return tmp_path


@pytest.mark.parametrize("files,expected", [
    ({"proc/device-tree/model": "Raspberry Pi 4 Model B Rev 1.5"}, "raspberry-pi-4"),
    ({"proc/device-tree/model": "Raspberry Pi 5 Model B Rev 1.0"}, "raspberry-pi-5"),
    ({"proc/device-tree/model": "NVIDIA Jetson Nano Developer Kit", "etc/nv_tegra_release": "# R32"}, "jetson-nano"),
    ({"proc/device-tree/model": "NVIDIA Jetson Orin Nano Developer Kit",
      "proc/device-tree/compatible": "nvidia,p3768-0000+p3767-0005nvidia,tegra234"}, "jetson-orin-nano"),
    ({"system/build.prop": "ro.product.model=Pixel"}, "android-phone"),
    ({}, "laptop-x86"),
])
def test_detect_on_fake_machines(tmp_path, files, expected):
    prof, why = detect(fake_root(tmp_path, files), machine="x86_64")
    assert prof.name == expected and why


def test_detect_on_this_machine_or_says_why():
    try:
        prof, _ = detect()
        assert prof.name in list_profiles()
    except ProfileError as e:
        assert "no profile fits" in str(e)


def test_unknown_arch_says_why(tmp_path):
    with pytest.raises(ProfileError, match="no profile fits"):
        detect(tmp_path, machine="riscv64")


@pytest.mark.parametrize("edit,field", [
    (lambda t: t.replace("cores: 4 ", "cores: four "), "'cores'"),
    (lambda t: t.replace("max_power_w: 6.4", "max_power_w: -1"), "'max_power_w'"),
    (lambda t: t.replace("kind: none", "kind: multimeter"), "'power_sensor.kind'"),
    (lambda t: t.replace("preferred_backend: executorch", "preferred_backend: tflite"), "'preferred_backend'"),
    (lambda t: t.replace("memory_budget: 2.5GB", "memory_budget: lots"), "'defaults.memory_budget'"),
    (lambda t: t.replace("policy: budget", "policy: greedy"), "'defaults.policy'"),
    (lambda t: t.replace("budget: 0.4", "budget: 4"), "--budget must be"),
    (lambda t: "\n".join(l for l in t.splitlines() if not l.startswith("ram_gb")), "missing field 'ram_gb'"),
    (lambda t: t + "\n  - [unclosed", "not valid YAML"),
])
def test_malformed_profile_names_the_field(tmp_path, edit, field):
    text = open(load_profile("raspberry-pi-4").source).read()
    bad = tmp_path / "bad.yaml"
    bad.write_text(edit(text))
    with pytest.raises(ProfileError, match=field.replace("(", r"\(")):
        load_profile(str(bad))


def test_unknown_profile_and_sizes():
    with pytest.raises(ProfileError, match="unknown profile"):
        load_profile("cray-1")
    assert parse_bytes("1.5GB") == 1_500_000_000 and parse_bytes("2GiB") == 2 * 2 ** 30
    with pytest.raises(Exception):
        parse_bytes("lots")
