"""Demands become options: cheapest fitting device first, fastest first with throughput."""

from scheduler.catalog import default_catalog
from scheduler.demand import Kind, Option, OptionsByDemand, resolve_options
from scheduler.model import Demand, Workload

CATALOG = default_catalog()
PRESENT = ("T4", "L40S", "A100-80GB", "H100-80GB")


def options(**demand: object) -> list[tuple[str, Kind, int]]:
    throughput = demand.pop("throughput", {})
    w = Workload(name="w", queue="q", demand=Demand(**demand), throughput=throughput)
    return [(o.flavor, o.kind, o.per_pod) for o in resolve_options(w, CATALOG, PRESENT)]


def test_whole_gpus_in_preference_order_absent_models_dropped():
    assert options(gpus=2, models=("H100", "B200", "A100-80GB")) == [
        ("H100-80GB", Kind.WHOLE, 2),
        ("A100-80GB", Kind.WHOLE, 2),
    ]


def test_any_model_means_cluster_models_cheapest_first():
    assert [f for f, _, _ in options(gpus=1)] == ["T4", "L40S", "A100-80GB", "H100-80GB"]


def test_throughput_orders_fastest_first():
    got = options(
        gpus=1, models=("A100-80GB", "H100-80GB"), throughput={"A100-80GB": 1.0, "H100-80GB": 2.5}
    )
    assert [f for f, _, _ in got] == ["H100-80GB", "A100-80GB"]


def test_memory_need_maps_to_cheapest_fitting_slice_or_gpu():
    # 9 GiB: T4 (16 GiB, $0.35) is cheaper than a 1g.10gb slice of an H100 ($4.92/7).
    assert options(gpu_memory_mib=9 * 1024, models=("H100-80GB", "T4"))[0] == ("T4", Kind.WHOLE, 1)
    # Only MIG models: every profile that holds it, cheapest first (at one price the
    # smaller), the 1g.10gb slice (9.75 GiB usable) first, the whole GPU before a 7g slice.
    assert options(gpu_memory_mib=9 * 1024, models=("H100-80GB",)) == [
        ("mig-1g.10gb", Kind.MIG, 1),
        ("mig-1g.20gb", Kind.MIG, 1),
        ("mig-2g.20gb", Kind.MIG, 1),
        ("mig-3g.40gb", Kind.MIG, 1),
        ("mig-4g.40gb", Kind.MIG, 1),
        ("H100-80GB", Kind.WHOLE, 1),
        ("mig-7g.80gb", Kind.MIG, 1),
    ]
    # 10 GiB does not fit the 9.75 GiB usable in 1g.10gb: next is 1g.20gb.
    assert options(gpu_memory_mib=10 * 1024, models=("H100-80GB",))[0][0] == "mig-1g.20gb"
    # Larger than any GPU: nothing.
    assert options(gpu_memory_mib=200 * 1024) == []


def test_mig_profile_served_by_every_model_that_has_it():
    w = Workload(name="w", queue="q", demand=Demand(mig_profile="3g.40gb"))
    (option,) = resolve_options(w, CATALOG, PRESENT)
    assert option.flavor == "mig-3g.40gb" and option.models == ("A100-80GB", "H100-80GB")
    assert option.quota_per_pod == 1
    assert option.gpu_equivalents_per_pod(CATALOG) == 3 / 7


def test_fraction_counts_milli_against_the_model_flavor():
    w = Workload(name="w", queue="q", demand=Demand(gpu_milli=250, models=("T4",)))
    (option,) = resolve_options(w, CATALOG, PRESENT)
    assert (option.flavor, option.kind, option.quota_per_pod) == ("T4", Kind.FRACTION, 250)
    assert option.cost == CATALOG["T4"].price_per_hour * 250 / 1000  # a quarter of its price


def test_a_memory_need_equal_to_a_gpus_usable_memory_may_take_that_gpu():
    # A T4 "16 GB" holds what a process can use of it: a need of exactly that fits, a MiB
    # more does not.
    usable = CATALOG["T4"].usable_memory_mib
    assert usable < 16 * 1024
    assert options(gpu_memory_mib=usable, models=("T4",)) == [("T4", Kind.WHOLE, 1)]
    assert options(gpu_memory_mib=usable + 1, models=("T4",)) == []


def test_a_memory_need_of_a_gpus_nominal_size_does_not_fit_it():
    # An H100 "80GB" reports 81,559 MiB (79.6 GiB): an 80 GiB need fits neither it nor its
    # 7g.80gb slice (79.25 GiB).
    assert options(gpu_memory_mib=80 * 1024, models=("H100-80GB",)) == []
    assert options(gpu_memory_mib=81559, models=("H100-80GB",)) == [("H100-80GB", Kind.WHOLE, 1)]


def test_a_slice_several_models_serve_costs_what_the_cheapest_asks():
    # 3g.40gb is 3/7 of an A100 ($1.84/h) or of an H100 ($4.92/h): the A100's price ranks
    # it, whichever model comes first in the workload's preference order.
    for models in (("A100-80GB", "H100-80GB"), ("H100-80GB", "A100-80GB")):
        w = Workload(name="w", queue="q", demand=Demand(gpu_memory_mib=30 * 1024, models=models))
        by_flavor = {o.flavor: o for o in resolve_options(w, CATALOG, PRESENT)}
        slice_ = by_flavor["mig-3g.40gb"]
        assert slice_.models == models
        assert slice_.cost == CATALOG["A100-80GB"].price_per_hour * 3 / 7


def test_options_are_shared_by_workloads_that_ask_alike():
    by_demand = OptionsByDemand(CATALOG, PRESENT)

    def ask(
        name: str, throughput: dict[str, float] | None = None, **demand: object
    ) -> tuple[Option, ...]:
        w = Workload(name=name, queue="q", demand=Demand(**demand), throughput=throughput or {})
        got = by_demand(w)
        assert got == resolve_options(w, CATALOG, PRESENT)
        return got

    first = ask("a", gpus=2)
    assert ask("b", gpus=2) is first  # same demand: the same tuple
    assert ask("c", gpus=4) is not first
    fast = ask("d", {"H100-80GB": 9.0}, gpus=2)
    assert fast[0].flavor == "H100-80GB" != first[0].flavor  # throughput reorders: its own
    assert ask("e", gpu_memory_mib=20_000) is ask("f", gpu_memory_mib=20_000)
