"""Whether each tenant's data is whole: loaded, not loaded, or split by an import that died in its switch.

A snapshot import switches the tenant's 4,096 hash tags to the new generation one by one (each tag in one
script, so a lookup sees the old or the new generation, never a mix). Killed in the middle, it leaves the
tenant split: numbers in the switched tags are read from the new generation, the others from the old one.
The switch journal (`Switch`) and the import lock tell the two apart cheaply: a journal entry while the
lock is held is a switch under way; one without the lock is an interrupted switch. `gatekeeper serve`
reads that every few seconds (readiness detail, metrics); `gatekeeper status` also counts every tag's
pointer (`Census`), which finds a split however it came about.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from gatekeeper.index.keys import BUILD_SUFFIX, TAGS, Generation
from gatekeeper.index.store import ConsentIndex, Switch, TenantInfo


class TenantCondition(StrEnum):
    LOADED = "loaded"
    NO_DATA = "no-data"  # no generation: every call of the tenant's campaigns finds no facts
    SWITCHING = "switching"  # an import is switching it to a new generation right now (a fraction of a second)
    SPLIT = "split"  # an import died in its switch: tags disagree until the next import of the tenant


@dataclass(frozen=True, slots=True)
class Census:
    """How many hash tags point the tenant at each generation (None: no pointer), and which generations are
    being built in how many tags."""

    current: Mapping[int | None, int]
    building: Mapping[int, int] = field(default_factory=dict)

    @property
    def split(self) -> bool:
        return len(self.current) > 1


@dataclass(frozen=True, slots=True)
class TenantHealth:
    tenant: str
    info: TenantInfo | None  # the summary of its current generation (None: no data loaded)
    switch: Switch | None = None  # a switch under way or interrupted
    importing: bool = False  # an import (or a first write) holds the tenant's lock now
    census: Census | None = None  # every tag's pointer (only `gatekeeper status` counts them)

    @property
    def condition(self) -> TenantCondition:
        if self.switch is not None:
            return TenantCondition.SWITCHING if self.importing else TenantCondition.SPLIT
        if self.census is not None and self.census.split:
            return TenantCondition.SPLIT
        return TenantCondition.LOADED if self.info is not None else TenantCondition.NO_DATA

    @property
    def generation(self) -> int | None:
        return self.info.generation if self.info is not None else None

    def describe(self) -> str:
        """One line for operators: what is the matter and what makes it right."""
        condition = self.condition
        if condition is TenantCondition.LOADED:
            text = f"generation {self.generation}"
        elif condition is TenantCondition.NO_DATA:
            text = "no data loaded"
        else:
            text = self._describe_switch(condition)
        return f"{text}; {self.building}" if self.building else text

    def _describe_switch(self, condition: TenantCondition) -> str:
        tags = self._switched_tags()
        if self.switch is None:  # a split the census found without a journal (written by an older version)
            assert self.census is not None
            gens = sorted(g for g in self.census.current if g is not None)
            return (
                f"split between generations {', '.join(map(str, gens))} ({tags}); "
                f"repair it with `gatekeeper import --replace` of the tenant's full data"
            )
        previous = "no data" if self.switch.previous is None else f"generation {self.switch.previous}"
        new = self.switch.generation.number
        if condition is TenantCondition.SWITCHING:
            return f"an import is switching it from {previous} to generation {new}{tags and f' ({tags})'}"
        return (
            f"split between {previous} and generation {new}{tags and f' ({tags})'}: the import died during its "
            f"switch; the next import of {self.tenant} finishes the switch"
        )

    def _switched_tags(self) -> str:
        if self.census is None:
            return ""
        target = (
            self.switch.generation.number
            if self.switch is not None
            else max((g for g in self.census.current if g is not None), default=None)
        )
        done = self.census.current.get(target, 0)
        return f"{done:,} of {TAGS:,} hash tags switched"

    @property
    def building(self) -> str:
        """What the build markers of the census say, beyond the switch (empty when nothing)."""
        if self.census is None or not self.census.building:
            return ""
        switching = self.switch.generation.number if self.switch is not None else None
        others = sorted(g for g in self.census.building if g != switching)
        if not others:
            return ""
        if self.importing:
            return f"an import is building generation {others[-1]}"
        return (
            f"generation {', '.join(map(str, others))} was left half-built by an import that died before its "
            f"switch (never read; the next import of {self.tenant} removes it)"
        )


def census(pointers: Iterable[Mapping[str, Generation | None]]) -> dict[str, Census]:
    """Per tenant, the generations its pointers name across every tag (from `ConsentIndex.pointer_hashes`)."""
    current: dict[str, Counter[int | None]] = {}
    building: dict[str, Counter[int]] = {}
    for pointer in pointers:
        for name, gen in pointer.items():
            if gen is None:
                continue
            if name.endswith(BUILD_SUFFIX):
                building.setdefault(name.removesuffix(BUILD_SUFFIX), Counter())[gen.number] += 1
            else:
                current.setdefault(name, Counter())[gen.number] += 1
    result = {}
    for tenant in current.keys() | building.keys():
        counts = current.get(tenant, Counter())
        missing = TAGS - sum(counts.values())
        if missing:
            counts[None] += missing
        result[tenant] = Census(dict(counts), dict(building.get(tenant, Counter())))
    return result


async def tenant_health(
    index: ConsentIndex,
    tenants: Iterable[str] = (),
    *,
    infos: Mapping[str, TenantInfo] | None = None,
    count_tags: bool = False,
) -> dict[str, TenantHealth]:
    """The health of the given tenants and of every tenant the index knows (summaries, switch journal, and,
    with `count_tags`, every tag's pointer: 4,096 reads, for `gatekeeper status`). Pass `infos` when the
    tenants' summaries were just read (the service's refresh)."""
    infos = await index.tenants() if infos is None else infos
    switches = await index.switches()
    counted = census(await index.pointer_hashes()) if count_tags else {}
    names = sorted(set(tenants) | set(infos) | set(switches) | set(counted))
    asking = [t for t in names if t in switches or (t in counted and counted[t].building)]
    importing = await index.locked(asking)
    return {
        t: TenantHealth(t, infos.get(t), switches.get(t), t in importing, counted.get(t) if count_tags else None)
        for t in names
    }
