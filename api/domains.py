"""Custom Vision domain GUIDs: the SDK sends and expects `domainId`s, cvbot names its domains.

The ids are Azure's own, so scripts that hard-code them (the compact one above all) keep working.
"""
from __future__ import annotations

from core import errors
from core.export import platform_names
from core.model import Domain

DOMAIN_IDS: dict[Domain, str] = {
    Domain.General: "ee85a74c-405e-4adc-bb47-ffa8ca0c9f31",
    Domain.Food: "c151d5b5-dd07-472a-acc8-15d29dea8518",
    Domain.Landmarks: "ca455789-012d-4b50-9fec-5bb63841c793",
    Domain.Retail: "b30a91ae-e3c1-4f73-a81e-c270bff27c39",
    Domain.Adult: "45badf75-3591-4f26-a705-45678d3e9f5f",
    Domain.Compact: "0732100f-1a38-4e49-a514-c9b44c697ab5",
}
# The names Azure shows for these ids (scripts look domains up by name, e.g. "General (compact)").
DOMAIN_NAMES: dict[Domain, str] = {d: d.value for d in Domain} | {Domain.Compact: "General (compact)"}
EXPORT_PLATFORMS = platform_names()  # the registered platforms, as Azure names them
# Azure's object-detection domains (ids and names as Azure lists them). cvbot classifies only: they are listed with
# `enabled: false`, so a client that looks one up (the SDK's object-detection quickstart does, by type and name)
# finds it and is refused clearly when it creates a project with it, instead of failing on a missing domain.
OBJECT_DETECTION_DOMAINS: dict[str, str] = {
    "da2e3a8a-40a5-4171-82f4-58522f70fbc1": "General",
    "9c616dff-2e7d-ea11-af59-1866da359ce6": "General [A1]",
    "1d8ffafe-ec40-4fb2-8f90-72b3b6cecea4": "Logo",
    "3780a898-81c3-4516-81ae-3a139614e1f3": "Products on Shelves",
    "a27d5ca5-bb19-49d8-a70a-fec086c47f5b": "General (compact)",
}

_BY_ID = {v: d for d, v in DOMAIN_IDS.items()}


def domain_id(domain: Domain) -> str:
    return DOMAIN_IDS[domain]


def parse_domain(value: str, not_found: bool = False) -> Domain:
    """A domain from its GUID (any case) or, leniently, from its cvbot or Azure name.

    Unknown: NotFound (GET /domains/{id}) or, by default, Custom Vision's BadRequestProjectUnknownDomain."""
    key = (value or "").strip().lower()
    if key in _BY_ID:
        return _BY_ID[key]
    if key in OBJECT_DETECTION_DOMAINS and not not_found:
        raise errors.InvalidInput(f"the domain {OBJECT_DETECTION_DOMAINS[key]} [object detection] is not supported: "
                                  "this server trains classification projects only (GET /domains lists the "
                                  "object-detection domains with enabled=false)", "BadRequestUnsupportedDomain")
    for d in Domain:
        if key in (d.value.lower(), DOMAIN_NAMES[d].lower()):
            return d
    message = f"no domain {value!r}; GET /domains lists the {len(DOMAIN_IDS)} classification domains"
    if not_found:
        raise errors.NotFound(message, "NotFoundDomain")
    raise errors.InvalidInput(message, "BadRequestProjectUnknownDomain")


def domain_json(domain: Domain, entry: dict) -> dict:
    exportable = bool(entry.get("exportable"))
    return {
        "id": DOMAIN_IDS[domain], "name": DOMAIN_NAMES[domain], "type": "Classification",
        "exportable": exportable, "enabled": True,
        "exportablePlatforms": EXPORT_PLATFORMS if exportable else [],
        "modelInformation": {"description": entry.get("description", "")},
    }


def object_detection_domain_json(domain_id: str) -> dict:
    """An object-detection domain as Azure lists it, disabled."""
    return {"id": domain_id, "name": OBJECT_DETECTION_DOMAINS[domain_id], "type": "ObjectDetection",
            "exportable": False, "enabled": False, "exportablePlatforms": [],
            "modelInformation": {"description": "object detection is not supported by this server"}}


def lookup_domain_json(value: str, catalogue: list[dict]) -> dict:
    """GET /domains/{id}: a classification domain, a disabled object-detection one, or NotFoundDomain."""
    key = (value or "").strip().lower()
    if key in OBJECT_DETECTION_DOMAINS:
        return object_detection_domain_json(key)
    domain = parse_domain(value, not_found=True)
    return domain_json(domain, next(d for d in catalogue if d["name"] == domain.value))
