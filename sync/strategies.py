"""What to fetch for one patient, per provider family: strategies as data (the crawl that
follows them is sync.crawl), and how references and attachments are read out of resources.

A Strategy says whether to try `Patient/$everything`, which types to search category by
category (Epic refuses an Observation search without one), how deep to follow references, and
for VA (Lighthouse patient health, R4) that every search names the patient with `patient`
(`subject` is refused) and asks for pages of 100, its cap.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from fhirserver.registry import r4

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
