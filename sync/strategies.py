"""What to fetch for one patient, per provider family: strategies as data, plus the crawl.

A Strategy says whether to try `Patient/$everything` and which types to search category by
category (Epic refuses an Observation search without one). The crawl (Crawl.run):

1. reads the CapabilityStatement: the Patient-compartment types the provider searches, and
   whether it declares `$everything`;
2. with `$everything` (unless the provider is known to lack it or to leave things out), pages
   through it, then checks every claimed type with a `_summary=count` search: a type with more
   than `$everything` gave is searched in full (capability statements and `$everything` lie);
   the outcome is remembered per provider (Provider.learned, with the time it was learned) for
   the next runs; a failure or an incomplete answer is tried again after
   `everything_retry_days` (7; providers fix things, and a transient outage also fails it);
3. otherwise searches each type by patient, in parallel up to the provider's concurrency; a
   category type runs one search per category plus a plain one, whose refusal is expected;
4. follows references found in what it fetched (Encounter -> Practitioner/Location/
   Organization, DiagnosticReport -> Observation, ...) to `reference_depth`, each target read
   once (duplicates and cycles are skipped; other patients are never followed);
5. fetches the Binaries that attachments of what it fetched point to by URL (any `url` element,
   Attachment.url in DocumentReference.content, DiagnosticReport.presentedForm, ..., that is
   `Binary/<id>` relative or absolute on the provider's base), each once, whatever the
   reference depth: an attachment is part of its resource. URLs elsewhere are left alone.

Every search follows `next` links to the end (sync.client). VA (Lighthouse patient health,
R4): no `$everything`, every search names the patient with `patient` (`subject` is refused) and
asks for pages of 100, its cap; its `page=` links are followed like any.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from fhirserver.registry import r4
from sync.client import Client, FetchFailed

# Every code of http://terminology.hl7.org/CodeSystem/observation-category (R4) ...
OBSERVATION_CATEGORIES = (
    "social-history", "vital-signs", "imaging", "laboratory", "procedure", "survey", "exam", "therapy",
    "activity",
)  # fmt: skip
# ... and Epic's own Observation categories (Epic on FHIR, Observation search by category).
EPIC_OBSERVATION_CATEGORIES = (
    "core-characteristics", "functional-mental-status", "genomics", "labor-delivery", "lda",
    "obstetrics-gynecology", "smartdata",
)  # fmt: skip
DIAGNOSTIC_REPORT_CATEGORIES = ("LAB", "RAD", "Cardiology", "Radiology", "Pathology", "34117-2", "51847-2")
MEDICATION_REQUEST_CATEGORIES = ("inpatient", "outpatient", "community", "discharge")


@dataclass(frozen=True)
class Strategy:
    everything: bool
    categories: dict[str, tuple[str, ...]] = field(default_factory=dict)
    reference_depth: int = 2
    everything_retry_days: float = 7.0  # a remembered `failed`/`incomplete` $everything expires
    patient_param: str = ""  # the search parameter naming the patient; "": the compartment's
    count: int = 0  # `_count` each search asks for; 0: the provider's default page


STRATEGIES = {
    "generic": Strategy(everything=True),
    "va": Strategy(everything=False, patient_param="patient", count=100),
    "cerner": Strategy(everything=False),  # its concurrency is higher (add_provider) and tokens short
    "epic": Strategy(
        everything=False,
        categories={
            "Observation": OBSERVATION_CATEGORIES + EPIC_OBSERVATION_CATEGORIES,
            "DiagnosticReport": DIAGNOSTIC_REPORT_CATEGORIES,
            "MedicationRequest": MEDICATION_REQUEST_CATEGORIES,
        },
    ),
}


def strategy_for(kind: str, options: dict) -> Strategy:
    """The family's strategy with the provider's overrides (Provider.options): `everything`
    (bool), `categories` ({type: [codes]}), `reference_depth` (int), `everything_retry_days`
    (number)."""
    strategy = STRATEGIES.get(kind, STRATEGIES["generic"])
    categories = {**strategy.categories, **{k: tuple(v) for k, v in options.get("categories", {}).items()}}
    return replace(
        strategy,
        everything=bool(options.get("everything", strategy.everything)),
        categories=categories,
        reference_depth=int(options.get("reference_depth", strategy.reference_depth)),
        everything_retry_days=float(options.get("everything_retry_days", strategy.everything_retry_days)),
    )


Key = tuple[str, str]
_RELATIVE = re.compile(r"^([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?$")


class Crawl:
    def __init__(
        self, client: Client, strategy: Strategy, patient_id: str, concurrency: int, learned: dict,
        progress: Callable[[], None] = lambda: None,
    ) -> None:  # fmt: skip
        self.client, self.strategy, self.patient_id = client, strategy, patient_id
        self.concurrency = max(1, concurrency)
        self.learned = learned  # updated in place: the runner stores it with the provider
        self.progress = progress
        self.found: dict[Key, dict] = {}
        self.missing: set[Key] = set()

    def run(self) -> dict[Key, dict]:
        capability = self.client.json("metadata", kind="capability statement") or {}
        types, declared = searchable_types(capability)
        patient = self.client.json(f"Patient/{self.patient_id}", kind="patient read")
        if patient is None:
            raise FetchFailed("the linked patient is not known at the provider", 404)
        self._add([patient])
        remaining = [kind for kind in types if kind != "Patient"]
        if self.strategy.everything and declared and not self._everything_known_to_fail():
            remaining = self._everything(remaining)
        self._parallel([task for kind in remaining for task in self._searches(kind)])
        self._follow_references()
        self._fetch_attachments()
        return self.found

    def _everything_known_to_fail(self) -> bool:
        """$everything failed or left things out less than `everything_retry_days` ago. An
        outcome without its time (remembered before times were) is stale: try again."""
        if self.learned.get("everything") not in ("failed", "incomplete"):
            return False
        try:
            learned_at = datetime.fromisoformat(self.learned["everything_at"])
        except (KeyError, TypeError, ValueError):
            return False
        return datetime.now(UTC) - learned_at < timedelta(days=self.strategy.everything_retry_days)

    def _learn_everything(self, outcome: str) -> None:
        self.learned["everything"] = outcome
        self.learned["everything_at"] = datetime.now(UTC).isoformat(timespec="seconds")

    def _everything(self, types: list[str]) -> list[str]:
        """Fetch through $everything; the types it left out (which still need searching)."""
        try:
            self._add(self.client.search(f"Patient/{self.patient_id}/$everything", kind="$everything"))
        except FetchFailed:
            self._learn_everything("failed")
            return types
        got: dict[str, int] = {}
        for kind, _ in self.found:
            got[kind] = got.get(kind, 0) + 1
        counts: dict[str, int] = {}

        def count(kind: str) -> Callable[[], None]:
            def task() -> None:
                bundle = self.client.json(kind, {**self._patient_param(kind), "_summary": "count"}, "count")
                counts[kind] = int((bundle or {}).get("total") or 0)

            return task

        self._parallel([count(kind) for kind in types])
        short = [kind for kind in types if counts.get(kind, 0) > got.get(kind, 0)]
        self._learn_everything("incomplete" if short else "works")
        return short

    def _searches(self, kind: str) -> list[Callable[[], None]]:
        params = self._patient_param(kind)
        if self.strategy.count:
            params["_count"] = str(self.strategy.count)
        categories = self.strategy.categories.get(kind, ())
        tasks = [self._search_task(kind, {**params, "category": code}, False) for code in categories]
        return [*tasks, self._search_task(kind, params, tolerate_refusal=bool(categories))]

    def _search_task(self, kind: str, params: dict, tolerate_refusal: bool) -> Callable[[], None]:
        def task() -> None:
            try:
                self._add(self.client.search(kind, params, kind=f"{kind} search"))
            except FetchFailed as failure:
                if not (tolerate_refusal and failure.status in (400, 403, 422)):
                    raise

        return task

    def _patient_param(self, kind: str) -> dict:
        if self.strategy.patient_param:
            return {self.strategy.patient_param: self.patient_id}
        params = r4().patient_compartment.get(kind, ())
        name = next((p for p in ("patient", "subject") if p in params), params[0] if params else "patient")
        return {name: f"Patient/{self.patient_id}" if name != "patient" else self.patient_id}

    def _follow_references(self) -> None:
        frontier = list(self.found.values())
        for _ in range(self.strategy.reference_depth):
            targets = {key for resource in frontier for key in self._references(resource)}
            targets -= self.found.keys() | self.missing
            if not targets:
                return
            before = set(self.found)
            self._parallel([self._read_task(key) for key in sorted(targets)])
            frontier = [self.found[key] for key in self.found.keys() - before]

    def _read_task(self, key: Key) -> Callable[[], None]:
        def task() -> None:
            resource = self.client.json(f"{key[0]}/{key[1]}", kind=f"{key[0]} read")
            if resource is None or resource.get("resourceType") != key[0]:
                self.missing.add(key)
            else:
                self.client.stats.add(fetched=1)
                self._add([resource])

        return task

    def _fetch_attachments(self) -> None:
        base = self.client.base_url
        targets = {key for resource in self.found.values() for key in attachment_binaries(resource, base)}
        self._parallel([self._binary_task(key) for key in sorted(targets - self.found.keys() - self.missing)])

    def _binary_task(self, key: Key) -> Callable[[], None]:
        def task() -> None:
            resource = self.client.binary(f"Binary/{key[1]}")
            if resource is None:
                self.missing.add(key)
            else:
                self.client.stats.add(fetched=1)
                self._add([{**resource, "resourceType": "Binary", "id": key[1]}])

        return task

    def _references(self, resource: dict) -> Iterable[Key]:
        for reference in references_in(resource):
            key = local_key(reference, self.client.base_url)
            if key and not (key[0] == "Patient" and key[1] != self.patient_id):
                yield key

    def _add(self, resources: Iterable[dict]) -> None:
        for resource in resources:
            kind, ident = resource.get("resourceType"), resource.get("id")
            if isinstance(kind, str) and isinstance(ident, str) and r4().is_resource_type(kind):
                self.found[(kind, ident)] = resource
            self.progress()  # at most once a second (the runner's), also while paging $everything

    def _parallel(self, tasks: list[Callable[[], None]]) -> None:
        """Run tasks on `concurrency` threads; the first failure fails the crawl (the rest are
        cancelled or finish). Progress is reported about every second meanwhile."""
        if not tasks:
            return
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            pending: set[Future] = {pool.submit(task) for task in tasks}
            while pending:
                done, pending = wait(pending, timeout=1.0, return_when=FIRST_EXCEPTION)
                self.progress()
                for future in done:
                    if future.exception() is not None:
                        for other in pending:
                            other.cancel()
                        raise future.exception()


def searchable_types(capability: dict) -> tuple[list[str], bool]:
    """Patient-compartment types the provider says it searches (all of them when it says
    nothing), and whether it declares Patient $everything."""
    compartment = [kind for kind, params in r4().patient_compartment.items() if params]
    resources = [
        entry for rest in capability.get("rest") or [] for entry in rest.get("resource") or []
        if isinstance(entry, dict)
    ]  # fmt: skip
    if not resources:
        return compartment, False
    claimed = {entry.get("type") for entry in resources}
    declared = any(
        entry.get("type") == "Patient"
        and any(op.get("name") == "everything" for op in entry.get("operation") or [])
        for entry in resources
    ) or any(
        op.get("name") == "everything" for rest in capability["rest"] for op in rest.get("operation") or []
    )
    return [kind for kind in compartment if kind in claimed], declared


def references_in(value: object) -> Iterable[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "reference" and isinstance(item, str):
                yield item
            elif key != "contained":
                yield from references_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from references_in(item)


def attachment_binaries(value: object, base_url: str) -> Iterable[Key]:
    """("Binary", id) of every `url` element (Attachment.url) naming a Binary at the provider."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "url" and isinstance(item, str):
                target = local_key(item, base_url)
                if target is not None and target[0] == "Binary":
                    yield target
            elif isinstance(item, dict | list):
                yield from attachment_binaries(item, base_url)
    elif isinstance(value, list):
        for item in value:
            yield from attachment_binaries(item, base_url)


def local_key(reference: str, base_url: str) -> Key | None:
    """(type, id) of a reference to a resource at this provider: relative, or absolute on its
    base; None for contained, urn: and foreign references."""
    if reference.startswith(base_url + "/"):
        reference = reference[len(base_url) + 1 :]
    match = _RELATIVE.match(reference)
    if match and r4().is_resource_type(match.group(1)):
        return match.group(1), match.group(2)
    return None
