"""Fetching one patient's record from a provider, following a Strategy (sync.strategies).

Crawl.run:

1. reads the CapabilityStatement: the Patient-compartment types the provider searches, and
   whether it declares `$everything`;
2. with `$everything` (unless the provider is known to lack it or to leave things out), pages
   through it, then checks every claimed type with a `_summary=count` search: a type with more
   than `$everything` gave is searched in full (capability statements and `$everything` lie);
   the outcome is remembered per provider (Provider.learned, with the time it was learned) for
   the next runs; a failure or an incomplete answer is tried again after
   `everything_retry_days` (7; providers fix things, and a transient outage also fails it);
3. otherwise searches each type by patient; a category type runs one search per category plus a
   plain one, whose refusal is expected;
4. follows references found in what it fetched (Encounter -> Practitioner/Location/
   Organization, DiagnosticReport -> Observation, ...) to `reference_depth`, each target read
   once (duplicates and cycles are skipped; other patients are never followed);
5. fetches the Binaries that attachments point to by URL (any `url` element that is
   `Binary/<id>` relative or absolute on the provider's base), each once, whatever the
   reference depth: an attachment is part of its resource. URLs elsewhere are left alone.

Every request is a task on one pool of `concurrency` threads, and tasks add tasks: a reference
or attachment is read as soon as the resource naming it arrives, so that the importer
(sync.importer.Import), which stores a resource once everything it references has arrived, can
store while the crawl goes on. Two exceptions keep the requests those of a crawl in phases:
while `$everything` pages, nothing is followed (its later pages hold what earlier ones
reference), and targets of a type the searches will return (a compartment type) wait until the
searches end, then are read only if they did not come. Each resource is handed to `sink` once,
from the thread that fetched it. Every search follows `next` links to the end (sync.client).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from datetime import UTC, datetime, timedelta

from fhirserver.registry import r4
from sync.client import Client, FetchFailed
from sync.strategies import Key, Strategy, attachment_binaries, local_key, references_in


class Crawl:
    def __init__(
        self, client: Client, strategy: Strategy, patient_id: str, concurrency: int, learned: dict,
        progress: Callable[[], None] = lambda: None, sink: Callable[[Key, dict], None] = lambda k, r: None,
    ) -> None:  # fmt: skip
        self.client, self.strategy, self.patient_id = client, strategy, patient_id
        self.concurrency = max(1, concurrency)
        self.learned = learned  # updated in place: the runner stores it with the provider
        self.progress, self.sink = progress, sink
        self.found: dict[Key, dict] = {}
        self.missing: set[Key] = set()
        self._depth: dict[Key, int] = {}  # the shallowest depth each resource was reached at
        self._held: set[Key] = set()  # targets waiting for the searches to end (depth: _depth)
        self._holding: set[str] | None = None  # types whose targets wait; None: everything waits
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._futures: set[Future] = set()

    def run(self) -> dict[Key, dict]:
        capability = self.client.json("metadata", kind="capability statement") or {}
        types, declared = searchable_types(capability)
        patient = self.client.json(f"Patient/{self.patient_id}", kind="patient read")
        if patient is None:
            raise FetchFailed("the linked patient is not known at the provider", 404)
        remaining = [kind for kind in types if kind != "Patient"]
        with ThreadPoolExecutor(max_workers=self.concurrency) as self._pool:
            try:
                self._add([patient], 0)
                if self.strategy.everything and declared and not self._everything_known_to_fail():
                    remaining = self._everything(remaining)
                self._release({kind for kind, params in r4().patient_compartment.items() if params})
                for task in (task for kind in remaining for task in self._searches(kind)):
                    self._submit(task)
                self._finish()
                self._release(set())
                self._finish()
            finally:
                for future in self._futures:
                    future.cancel()
        return self.found

    # ----- $everything ---------------------------------------------------------------------
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
            self._add(self.client.search(f"Patient/{self.patient_id}/$everything", kind="$everything"), 0)
        except FetchFailed:
            self._learn_everything("failed")
            return types
        got: dict[str, int] = {}
        for kind, _ in list(self.found):
            got[kind] = got.get(kind, 0) + 1
        counts: dict[str, int] = {}

        def count(kind: str) -> Callable[[], None]:
            def task() -> None:
                bundle = self.client.json(kind, {**self._patient_param(kind), "_summary": "count"}, "count")
                counts[kind] = int((bundle or {}).get("total") or 0)

            return task

        for kind in types:
            self._submit(count(kind))
        self._finish()
        short = [kind for kind in types if counts.get(kind, 0) > got.get(kind, 0)]
        self._learn_everything("incomplete" if short else "works")
        return short

    # ----- searches ------------------------------------------------------------------------
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
                self._add(self.client.search(kind, params, kind=f"{kind} search"), 0)
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

    # ----- references and attachments -----------------------------------------------------
    def _add(self, resources: Iterable[dict], depth: int) -> None:
        """Take fetched resources in: each new one to the sink, and what each references (from
        the shallowest depth it was reached at) to be read."""
        for resource in resources:
            kind, ident = resource.get("resourceType"), resource.get("id")
            if isinstance(kind, str) and isinstance(ident, str) and r4().is_resource_type(kind):
                key = (kind, ident)
                with self._lock:
                    new = key not in self.found
                    if new:
                        self.found[key] = resource
                    shallower = depth < self._depth.get(key, depth + 1)
                    if shallower:
                        self._depth[key] = depth
                if new:
                    self.sink(key, resource)
                if shallower:
                    self._follow(resource, depth)
            self.progress()  # at most once a second (the runner's), also while paging $everything

    def _follow(self, resource: dict, depth: int) -> None:
        base = self.client.base_url
        for key in attachment_binaries(resource, base):
            self._want(key, depth, self._binary_task)
        if depth < self.strategy.reference_depth:
            for reference in references_in(resource):
                key = local_key(reference, base)
                if key and not (key[0] == "Patient" and key[1] != self.patient_id):
                    self._want(key, depth + 1, self._read_task)

    def _want(self, key: Key, depth: int, read: Callable[[Key], Callable[[], None]]) -> None:
        """Read `key` (reached at `depth`) unless it is here, coming, missing or held back; a
        resource already here reached again at a shallower depth has its references followed
        from there."""
        with self._lock:
            if key in self.missing or depth >= self._depth.get(key, depth + 1):
                return
            known, self._depth[key] = key in self._depth, depth
            present = self.found.get(key)
            held = self._holding is None or key[0] in self._holding
            if held and present is None:
                self._held.add(key)
                return
        if present is not None:
            self._follow(present, depth)
        elif not known:
            self._submit(read(key))

    def _release(self, holding: set[str]) -> None:
        """Hold back only targets of `holding` types from now on; read the others held so far."""
        with self._lock:
            self._holding = holding
            released = {key for key in self._held if key[0] not in holding}
            self._held -= released
            released -= self.found.keys()
        for key in sorted(released):
            self._submit((self._binary_task if key[0] == "Binary" else self._read_task)(key))

    def _read_task(self, key: Key) -> Callable[[], None]:
        def task() -> None:
            resource = self.client.json(f"{key[0]}/{key[1]}", kind=f"{key[0]} read")
            if resource is None or resource.get("resourceType") != key[0]:
                with self._lock:
                    self.missing.add(key)
            else:
                self.client.stats.add(fetched=1)
                self._add([resource], self._depth[key])

        return task

    def _binary_task(self, key: Key) -> Callable[[], None]:
        def task() -> None:
            resource = self.client.binary(f"Binary/{key[1]}")
            if resource is None:
                with self._lock:
                    self.missing.add(key)
            else:
                self.client.stats.add(fetched=1)
                self._add([{**resource, "resourceType": "Binary", "id": key[1]}], self._depth[key])

        return task

    # ----- the pool ------------------------------------------------------------------------
    def _submit(self, task: Callable[[], None]) -> None:
        with self._lock:
            self._futures.add(self._pool.submit(task))

    def _finish(self) -> None:
        """Wait until every task, and every task those added, has run; the first failure fails
        the crawl (the finally of `run` cancels what has not started). Progress is reported
        about every second meanwhile."""
        while True:
            with self._lock:
                self._futures = {future for future in self._futures if not future.done()}
                pending = set(self._futures)
            if not pending:
                return
            done, _ = wait(pending, timeout=1.0, return_when=FIRST_EXCEPTION)
            self.progress()
            for future in done:
                if future.exception() is not None:
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
