"""The catalog must be the facts sheet, loaded, never retyped."""

import json
from importlib import resources

import pytest

from scheduler.catalog import catalog_with, default_catalog, mig_resource_name

ISSUE_MODELS = [
    "T4",
    "L4",
    "A10G",
    "L40S",
    "A30",
    "A100-40GB",
    "A100-80GB",
    "H100-80GB",
    "H100-NVL",
    "H200",
    "B200",
]


def _facts() -> dict[str, dict[str, object]]:
    text = resources.files("scheduler").joinpath("data/mig-profiles.json").read_text()
    return json.loads(text)


def test_catalog_has_every_model_the_product_supports():
    assert default_catalog().names() == ISSUE_MODELS


@pytest.mark.parametrize(
    ("model", "key"),
    [
        ("A30", "A30-24GB"),
        ("A100-40GB", "A100-SXM4-40GB"),
        ("A100-80GB", "A100-80GB"),
        ("H100-80GB", "H100-80GB"),
        ("H100-NVL", "H100-94GB-NVL"),
        ("H200", "H200-141GB"),
        ("B200", "B200-180GB"),
    ],
)
def test_mig_profiles_match_the_facts_data(model, key):
    entry = _facts()[key]
    gpu = default_catalog()[model]
    assert gpu.mig_compute_slices == entry["compute_slices"]
    assert gpu.mig_memory_slices == entry["memory_slices"]
    assert [
        (
            p.name,
            p.compute_slices,
            p.memory_slices,
            p.max_count,
            [(x.start, x.size) for x in p.placements],
            p.inferred,
        )
        for p in gpu.mig_profiles
    ] == [
        (
            r["name"],
            r["compute_slices"],
            r["memory_slices"],
            r["max_count"],
            [(x["start"], x["size"]) for x in r["placements"]],
            bool(r.get("inferred", False)),
        )
        for r in entry["profiles"]
    ]
    assert gpu.mig_inferred == any(r.get("inferred", False) for r in entry["profiles"])


def test_inferred_models_are_flagged_and_observed_ones_are_not():
    catalog = default_catalog()
    assert catalog["A100-80GB"].mig_inferred and catalog["B200"].mig_inferred
    assert not catalog["H100-80GB"].mig_inferred and not catalog["A30"].mig_inferred
    assert not catalog["L40S"].mig_capable and not catalog["T4"].mig_profiles


def test_usable_memory_comes_from_real_captures():
    h100 = default_catalog()["H100-80GB"]
    assert h100.mig_profile("1g.10gb").usable_memory_mib == int(9.75 * 1024)
    assert h100.mig_profile("7g.80gb").usable_memory_mib == int(79.25 * 1024)
    # A +me variant is the same slice as its plain profile.
    a100 = default_catalog()["A100-40GB"]
    assert (
        a100.mig_profile("1g.5gb+me").usable_memory_mib
        == a100.mig_profile("1g.5gb").usable_memory_mib
    )


def test_a_whole_gpus_usable_memory_is_what_a_node_reports_else_a_little_under_its_name():
    catalog = default_catalog()
    assert catalog["H100-80GB"].usable_memory_mib == 81559  # GFD's nvidia.com/gpu.memory
    assert catalog["L40S"].usable_memory_mib == 48 * 1024 * 975 // 1000
    extra = catalog_with((("P100", 16384, 0.1, 0.5, ("Tesla-P100-PCIE-16GB",)),), {})
    assert extra["P100"].usable_memory_mib == 16384 * 975 // 1000
    assert catalog.with_prices({"H100": 9.0})["H100"].usable_memory_mib == 81559
    assert catalog["T4"].usable_memory_mib == 15360  # as nvidia-smi reports a T4: under 2.5 %
    # Never less than its largest MIG profile, which is the whole GPU: 2.5 % under 40 GB
    # (39,936 MiB) left a 40,200 MiB need only the 7g.40gb slice of an A100-40GB, so it
    # could never run on one with MIG off.
    for name in ("A100-40GB", "A30"):
        largest = max(p.usable_memory_mib for p in catalog[name].mig_profiles)
        assert catalog[name].usable_memory_mib == largest > catalog[name].memory_mib * 975 // 1000


def test_lookup_by_alias_and_gfd_product_label():
    catalog = default_catalog()
    assert catalog["H100"].name == "H100-80GB"
    assert catalog["NVIDIA-H100-80GB-HBM3"].name == "H100-80GB"
    assert catalog["tesla-t4"].name == "T4"
    assert catalog.get("A10") is None  # an A10 is not an A10G
    with pytest.raises(KeyError, match="unknown GPU model 'H900'"):
        catalog["H900"]


def test_resource_names_follow_the_device_plugin():
    assert mig_resource_name("1g.10gb") == "nvidia.com/mig-1g.10gb"
    assert mig_resource_name("1g.10gb+me") == "nvidia.com/mig-1g.10gb.me"


def test_prices_are_overridable_and_extra_models_added():
    catalog = catalog_with((("P100", 16384, 0.3, 0.2, ("P100",)),), {"H100": 3.5})
    assert catalog["H100-80GB"].price_per_hour == 3.5
    assert default_catalog()["H100-80GB"].price_per_hour != 3.5
    assert catalog["P100"].memory_mib == 16384 and not catalog["P100"].mig_capable
