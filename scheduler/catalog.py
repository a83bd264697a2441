"""GPU catalog: the models Apportion knows, their MIG profiles and valid placements.

MIG geometry is loaded from ``data/mig-profiles.json`` (the checked facts sheet, copied
verbatim) and never retyped here; this module only adds what the facts sheet does not hold:
short names, GPU Feature Discovery product names, relative throughput and a default price.
Prices are configuration, not facts (NVIDIA publishes none): override them per cluster.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from functools import cache
from importlib import resources

__all__ = [
    "Catalog",
    "GpuModel",
    "MigPlacement",
    "MigProfile",
    "catalog_with",
    "default_catalog",
    "mig_resource_name",
]

MILLI_PER_GPU = 1000
"""A whole GPU is 1000 milli-GPU; fractions (time-slicing) are counted in milli."""


@dataclass(frozen=True, slots=True)
class MigPlacement:
    """A valid slot for a profile, in memory-slice units (``nvidia-smi mig -lgipp``)."""

    start: int
    size: int

    @property
    def mask(self) -> int:
        """Bit mask of the memory slices this placement occupies."""
        return ((1 << self.size) - 1) << self.start


_USABLE_SHARE = 975
"""Per mille of a nominal memory size a process can use where no capture says: the captured
MIG profiles report about 2.5 % under their name's GB."""


@dataclass(frozen=True, slots=True)
class MigProfile:
    name: str
    compute_slices: int
    memory_slices: int
    memory_gb: int
    max_count: int
    placements: tuple[MigPlacement, ...]
    usable_memory_mib: int
    """Memory a process can use: the reported size where a real capture exists, otherwise
    the nominal size less the same 2.5% the captures show (``_USABLE_SHARE``)."""
    inferred: bool
    """True when the facts sheet marks this profile's placements as not seen on hardware."""

    @property
    def resource(self) -> str:
        return mig_resource_name(self.name)


@dataclass(frozen=True, slots=True)
class GpuModel:
    name: str
    """Short catalog name used in quotas and constraints, e.g. ``H100-80GB``."""
    memory_mib: int
    relative_throughput: float
    """Dense FP16/BF16 tensor throughput relative to an A100 (A100 = 1.0)."""
    price_per_hour: float
    products: tuple[str, ...]
    """``nvidia.com/gpu.product`` values GPU Feature Discovery reports for this model."""
    aliases: tuple[str, ...] = ()
    mig_compute_slices: int = 0
    mig_memory_slices: int = 0
    mig_profiles: tuple[MigProfile, ...] = field(default=())
    mig_inferred: bool = False
    """True when any of this model's MIG placements are inferred rather than observed."""
    usable_memory_mib: int = 0
    """Memory a process can use on one whole GPU: what a real node reports (GFD's
    ``nvidia.com/gpu.memory``) where a capture exists, else the nominal size less 2.5 %, as
    for MIG profiles, and never less than its largest MIG profile holds, which is the whole
    GPU's memory (0 given: that). Memory needs are fitted to it, never to the name's GB: an
    H100 "80GB" holds 79.6 GiB."""

    def __post_init__(self) -> None:
        if not self.usable_memory_mib:
            usable = self.memory_mib * _USABLE_SHARE // 1000
            largest = max((p.usable_memory_mib for p in self.mig_profiles), default=0)
            object.__setattr__(self, "usable_memory_mib", max(usable, largest))

    @property
    def mig_capable(self) -> bool:
        return bool(self.mig_profiles)

    def mig_profile(self, name: str) -> MigProfile | None:
        for profile in self.mig_profiles:
            if profile.name == name:
                return profile
        return None


def mig_resource_name(profile: str) -> str:
    """Kubernetes resource of a MIG profile (device plugin, mixed strategy: '+' → '.')."""
    return "nvidia.com/mig-" + profile.replace("+", ".")


# name, memory GiB, relative throughput (A100 = 1.0, dense FP16 tensor), $/h, GFD products,
# aliases, key in mig-profiles.json. Throughputs from facts/gpu-facts.md §4; where the sheet
# has no sourced figure (A10G, L4 fp16 relative, H100 NVL) we use the nearest sourced part.
_MODELS: tuple[tuple[str, int, float, float, tuple[str, ...], tuple[str, ...], str], ...] = (
    ("T4", 16, 0.21, 0.35, ("Tesla-T4", "NVIDIA-T4"), (), ""),
    ("L4", 24, 0.39, 0.80, ("NVIDIA-L4",), (), ""),
    ("A10G", 24, 0.40, 1.01, ("NVIDIA-A10G",), (), ""),
    ("L40S", 48, 1.16, 1.60, ("NVIDIA-L40S",), (), ""),
    ("A30", 24, 0.53, 0.90, ("NVIDIA-A30",), (), "A30-24GB"),
    (
        "A100-40GB",
        40,
        1.00,
        1.50,
        ("NVIDIA-A100-SXM4-40GB", "NVIDIA-A100-PCIE-40GB"),
        ("A100",),
        "A100-SXM4-40GB",
    ),
    (
        "A100-80GB",
        80,
        1.00,
        1.84,
        ("NVIDIA-A100-SXM4-80GB", "NVIDIA-A100-80GB-PCIe"),
        (),
        "A100-80GB",
    ),
    (
        "H100-80GB",
        80,
        3.17,
        4.92,
        ("NVIDIA-H100-80GB-HBM3", "NVIDIA-H100-PCIe", "NVIDIA-H100-SXM5-80GB"),
        ("H100",),
        "H100-80GB",
    ),
    ("H100-NVL", 94, 3.00, 4.50, ("NVIDIA-H100-NVL",), (), "H100-94GB-NVL"),
    ("H200", 141, 3.17, 5.41, ("NVIDIA-H200", "NVIDIA-H200-NVL"), (), "H200-141GB"),
    ("B200", 180, 7.21, 9.00, ("NVIDIA-B200",), (), "B200-180GB"),
)


_USABLE_MIB = {"H100-80GB": 81559, "T4": 15360}
"""Whole-GPU memory a real node reports (``nvidia.com/gpu.memory``): an H100's in
tests/fixtures/objects, a T4's as nvidia-smi reports it (the facts sheet's label example)."""


def _load_mig_facts() -> dict[str, dict[str, object]]:
    text = resources.files("scheduler").joinpath("data/mig-profiles.json").read_text()
    data: dict[str, dict[str, object]] = json.loads(text)
    return data


def _profiles_from_facts(entry: dict[str, object]) -> tuple[MigProfile, ...]:
    raw_profiles = entry["profiles"]
    assert isinstance(raw_profiles, list)
    profiles = []
    captured = {str(r["name"]): r.get("reported_memory_gib") for r in raw_profiles}
    for raw in raw_profiles:
        nominal_mib = int(raw["memory_gb"]) * 1024
        # A "+me" variant is the same slice as its plain profile: same usable memory.
        reported = raw.get("reported_memory_gib") or captured.get(str(raw["name"]).split("+")[0])
        usable = (
            int(float(reported) * 1024)
            if reported is not None
            else nominal_mib * _USABLE_SHARE // 1000
        )
        profiles.append(
            MigProfile(
                name=str(raw["name"]),
                compute_slices=int(raw["compute_slices"]),
                memory_slices=int(raw["memory_slices"]),
                memory_gb=int(raw["memory_gb"]),
                max_count=int(raw["max_count"]),
                placements=tuple(
                    MigPlacement(int(p["start"]), int(p["size"])) for p in raw["placements"]
                ),
                usable_memory_mib=usable,
                inferred=bool(raw.get("inferred", False)),
            )
        )
    return tuple(profiles)


class Catalog:
    """Lookup of GPU models by short name, alias or GFD product label."""

    def __init__(self, models: tuple[GpuModel, ...]) -> None:
        self.models = models
        self._profiles = frozenset(p.name for m in models for p in m.mig_profiles)
        self._by_key: dict[str, GpuModel] = {}
        for model in models:
            for key in (model.name, *model.aliases, *model.products):
                known = self._by_key.setdefault(key.lower(), model)
                if known is not model:
                    raise ValueError(
                        f"GPU model {model.name}: name {key!r} already means {known.name}"
                    )

    def get(self, name: str) -> GpuModel | None:
        """The model for a catalog name, alias or GFD product (case-insensitive)."""
        return self._by_key.get(name.lower())

    def __getitem__(self, name: str) -> GpuModel:
        model = self.get(name)
        if model is None:
            known = ", ".join(m.name for m in self.models)
            raise KeyError(f"unknown GPU model {name!r}; known models: {known}")
        return model

    def names(self) -> list[str]:
        return [m.name for m in self.models]

    def flavor(self, name: str) -> str | None:
        """The quota flavor ``name`` means, as the core keys quotas: a model's catalog name
        for any of its names (``H100``, ``NVIDIA-H100-80GB-HBM3`` → ``H100-80GB``), or
        ``mig-<profile>`` for a profile some model has; None when it means none."""
        if name.startswith("mig-"):
            return name if name[4:] in self._profiles else None
        model = self.get(name)
        return None if model is None else model.name

    def mig_profile_names(self) -> set[str]:
        return set(self._profiles)

    def with_prices(self, prices: dict[str, float]) -> Catalog:
        """A copy with some prices overridden (keys: any name the catalog resolves)."""
        overrides = {self[name].name: price for name, price in prices.items()}
        return Catalog(
            tuple(
                replace(m, price_per_hour=overrides[m.name]) if m.name in overrides else m
                for m in self.models
            )
        )


@cache
def default_catalog() -> Catalog:
    facts = _load_mig_facts()
    models = []
    for name, mem_gib, throughput, price, products, aliases, mig_key in _MODELS:
        if mig_key:
            entry = facts[mig_key]
            profiles = _profiles_from_facts(entry)
            models.append(
                GpuModel(
                    name=name,
                    memory_mib=mem_gib * 1024,
                    relative_throughput=throughput,
                    price_per_hour=price,
                    products=products,
                    aliases=aliases,
                    mig_compute_slices=int(str(entry["compute_slices"])),
                    mig_memory_slices=int(str(entry["memory_slices"])),
                    mig_profiles=profiles,
                    mig_inferred=any(p.inferred for p in profiles),
                    usable_memory_mib=_USABLE_MIB.get(name, 0),
                )
            )
        else:
            models.append(
                GpuModel(
                    name,
                    mem_gib * 1024,
                    throughput,
                    price,
                    products,
                    aliases,
                    usable_memory_mib=_USABLE_MIB.get(name, 0),
                )
            )
    return Catalog(tuple(models))


def catalog_with(
    extra: tuple[tuple[str, int, float, float, tuple[str, ...]], ...],
    prices: dict[str, float],
) -> Catalog:
    """The default catalog plus extra (non-MIG) models and price overrides.

    ``extra`` rows are (name, memory MiB, relative throughput, $/h, GFD products); an extra
    model with a built-in name replaces the built-in entry.
    """
    base = default_catalog()
    if not extra and not prices:
        return base
    added = {
        name.lower(): GpuModel(name, mem, tput, price, products)
        for name, mem, tput, price, products in extra
    }
    models = tuple(m for m in base.models if m.name.lower() not in added) + tuple(added.values())
    return Catalog(models).with_prices(prices)
