"""/openapi.json lists the data-in-and-out operations (#10) and documents image links without listing the keyless
link routes as operations."""
import json
import re

from api import ALIASES, PREFIXES, REGISTRY
from api.openapi import document
from core.links import DATASET_LINK

TRAIN = "/customvision/v3.4-preview/training"


def _spec() -> dict:
    return document(REGISTRY.operations, PREFIXES, ALIASES)


def test_transfer_metadata_and_artifact_operations_are_documented():
    spec = _spec()
    ops = {op["operationId"]: (method, path) for path, item in spec["paths"].items() for method, op in item.items()}
    assert ops["export_project"] == ("get", f"{TRAIN}/projects/{{projectId}}/export")
    assert ops["import_project"] == ("post", f"{TRAIN}/projects/import")
    assert ops["update_image_metadata"] == ("post", f"{TRAIN}/projects/{{projectId}}/images/metadata")
    assert ops["create_images_from_predictions"] == ("post", f"{TRAIN}/projects/{{projectId}}/images/predictions")
    assert ops["get_artifact"] == ("get", f"{TRAIN}/projects/{{projectId}}/artifacts")
    importing = spec["paths"][f"{TRAIN}/projects/import"]["post"]
    assert {p["name"] for p in importing["parameters"]} == {"token", "name"}
    refs = set(re.findall(r"#/components/schemas/(\w+)", json.dumps(spec)))
    assert refs <= set(spec["components"]["schemas"]), refs - set(spec["components"]["schemas"])


def test_image_links_are_fields_not_operations():
    spec = _spec()
    schemas = spec["components"]["schemas"]
    for field in ("originalImageUri", "resizedImageUri", "thumbnailUri"):
        assert schemas["Image"]["properties"][field]["nullable"] is True
        assert field in schemas["ImagePerformance"]["properties"]
    assert not any(p.startswith(("/customvision/images/", DATASET_LINK.split("{")[0])) for p in spec["paths"])
    assert "signed, expiring links" in spec["info"]["description"]
