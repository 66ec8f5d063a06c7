"""The OpenAPI 3 document of the implemented subset, generated from the same operation table as the routes."""
from __future__ import annotations

import re

from .http import KEY_HEADERS, PREDICTION, TRAINING, Operation, Param

S, INT, N, B = {"type": "string"}, {"type": "integer"}, {"type": "number"}, {"type": "boolean"}
UUID = {"type": "string", "format": "uuid"}
TIME = {"type": "string", "format": "date-time"}


def _obj(props: dict, required: tuple[str, ...] = ()) -> dict:
    out = {"type": "object", "properties": props}
    if required:
        out["required"] = list(required)
    return out


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _arr(item: dict) -> dict:
    return {"type": "array", "items": item}


def _nullable(schema: dict) -> dict:
    return {**schema, "nullable": True}


METADATA = {"type": "object", "additionalProperties": {"type": "string", "maxLength": 256}, "maxProperties": 10}
IMAGE_TAG = _obj({"tagId": UUID, "tagName": S, "created": _nullable(TIME)})
# originalImageUri, resizedImageUri, thumbnailUri: signed, expiring links (api/links.py), null where none is stored
IMAGE_URIS = {k: _nullable({"type": "string", "format": "uri"})
              for k in ("originalImageUri", "resizedImageUri", "thumbnailUri")}
PREDICTION_ITEM = _obj({"probability": N, "tagId": UUID, "tagName": S, "tagType": S, "boundingBox": {"nullable": True}})

SCHEMAS: dict[str, dict] = {
    "CustomVisionError": _obj({"code": S, "message": S}, ("code", "message")),
    "Domain": _obj({"id": UUID, "name": S, "type": S, "exportable": B, "enabled": B,
                    "exportablePlatforms": _arr(S), "modelInformation": _obj({"description": S})}),
    "ProjectSettings": _obj({"domainId": UUID,
                             "classificationType": {"type": "string", "enum": ["Multiclass", "Multilabel"]},
                             "targetExportPlatforms": _arr(S),
                             "cvbot": _obj({"retrain": {"type": "string", "enum": ["nightly", "off"]},
                                            "predictionRetentionDays": {"type": "integer", "nullable": True}})}),
    "Project": _obj({"id": UUID, "name": S, "description": S, "settings": _ref("ProjectSettings"), "created": TIME,
                     "lastModified": TIME, "status": S}),
    "Tag": _obj({"id": UUID, "name": S, "description": S, "type": {"type": "string", "enum": ["Regular", "Negative"]},
                 "imageCount": INT}),
    "Image": _obj({"id": UUID, "created": TIME, "width": INT, "height": INT, "originalName": S,
                   "tags": _arr(IMAGE_TAG), "metadata": METADATA, **IMAGE_URIS}),
    "ImageCreateSummary": _obj({"isBatchSuccessful": B, "images": _arr(_obj({
        "sourceUrl": S, "status": {"type": "string", "enum": [
            "OK", "OKDuplicate", "ErrorSource", "ErrorImageFormat", "ErrorImageSize", "ErrorStorage",
            "ErrorLimitExceed", "ErrorTagLimitExceed", "ErrorRegionLimitExceed", "ErrorUnknown",
            "ErrorNegativeAndRegularTagOnSameImage", "ErrorImageDimensions", "ErrorInvalidTag"]},
        "message": S, "image": {"nullable": True, "allOf": [_ref("Image")]}}))}),
    "ImageFileCreateBatch": _obj({"images": _arr(_obj({"name": S, "contents": {"type": "string", "format": "byte"},
                                                       "tagIds": _arr(UUID)}, ("contents",))),
                                  "tagIds": _arr(UUID), "metadata": METADATA}, ("images",)),
    "ImageUrlCreateBatch": _obj({"images": _arr(_obj({"url": S, "tagIds": _arr(UUID)}, ("url",))),
                                 "tagIds": _arr(UUID), "metadata": METADATA}, ("images",)),
    "ImageIdCreateBatch": _obj({"images": _arr(_obj({"id": UUID, "tagIds": _arr(UUID)}, ("id",))),
                                "tagIds": _arr(UUID), "metadata": METADATA}, ("images",)),
    "ImageMetadata": METADATA,
    "ImageMetadataUpdateSummary": _obj({"isBatchSuccessful": B, "images": _arr(_obj({
        "imageId": UUID, "status": {"type": "string", "enum": ["OK", "ErrorImageNotFound", "ErrorLimitExceed"]},
        "metadata": _nullable(METADATA)}))}),
    "ImageTagCreateBatch": _obj({"tags": _arr(_obj({"imageId": UUID, "tagId": UUID}, ("imageId", "tagId")))},
                                ("tags",)),
    "ImageTagCreateSummary": _obj({k: _arr(_obj({"imageId": UUID, "tagId": UUID}))
                                   for k in ("created", "duplicated", "exceeded")}),
    "Iteration": _obj({"id": UUID, "name": S, "status": {"type": "string", "enum": ["Training", "Completed", "Failed"]},
                       "created": TIME, "lastModified": TIME, "trainedAt": _nullable(TIME), "projectId": UUID,
                       "exportable": B, "exportableTo": _arr(S), "domainId": UUID, "classificationType": S,
                       "trainingType": S, "trainingTimeInMinutes": INT, "publishName": _nullable(S),
                       "originalPublishResourceId": _nullable(S),
                       "trainingErrorDetails": _nullable(S), "isDefault": B}, ("name",)),
    "TrainingParameters": _obj({"selectedTags": _arr(UUID)}),
    "IterationPerformance": _obj({
        "perTagPerformance": _arr(_obj({"id": UUID, "name": S, "precision": N, "precisionStdDeviation": N, "recall": N,
                                        "recallStdDeviation": N, "averagePrecision": N})),
        "precision": N, "precisionStdDeviation": N, "recall": N, "recallStdDeviation": N, "averagePrecision": N}),
    "ImagePerformance": _obj({"id": UUID, "created": TIME, "width": INT, "height": INT, "tags": _arr(IMAGE_TAG),
                              "predictions": _arr(PREDICTION_ITEM), "imageUri": _nullable(S), **IMAGE_URIS}),
    "ImagePrediction": _obj({"id": UUID, "project": UUID, "iteration": UUID, "created": TIME,
                             "predictions": _arr(PREDICTION_ITEM),
                             # cvbot's own (docs/unknown.md); absent for iterations trained before the score
                             "unknownScore": {"type": "number", "minimum": 0, "maximum": 1},
                             "unknownThreshold": {"type": "number", "minimum": 0, "maximum": 1},
                             "unknown": {"type": "boolean"}}),
    "ImageUrl": _obj({"url": S}, ("url",)),
    "PredictionQueryToken": _obj({
        "session": _nullable(S), "continuation": _nullable(S),
        "maxCount": {"type": "integer", "minimum": 1, "maximum": 256},
        "orderBy": {"type": "string", "enum": ["Newest", "Oldest", "Suggested"]},
        "tags": _arr(_obj({"id": UUID, "minThreshold": N, "maxThreshold": N})), "iterationId": _nullable(UUID),
        "startTime": _nullable(TIME), "endTime": _nullable(TIME), "application": _nullable(S)}),
    "PredictionQueryResult": _obj({"token": _ref("PredictionQueryToken"), "results": _arr(_obj({
        "id": UUID, "project": UUID, "iteration": UUID, "created": TIME, "domain": S,
        "predictions": _arr(PREDICTION_ITEM), **IMAGE_URIS}))}),
    "SuggestedTagAndRegion": _obj({"id": UUID, "project": UUID, "iteration": UUID, "created": TIME,
                                   "predictions": _arr(PREDICTION_ITEM), "predictionUncertainty": N}),
    "SuggestedTagAndRegionQueryToken": _obj({
        "tagIds": _arr(UUID), "threshold": N, "session": _nullable(S), "continuation": _nullable(S),
        "maxCount": {"type": "integer", "minimum": 1, "maximum": 256},
        "sortBy": _nullable({"type": "string", "enum": ["UncertaintyAscending", "UncertaintyDescending"]})}),
    "SuggestedTagAndRegionQuery": _obj({"token": _ref("SuggestedTagAndRegionQueryToken"), "results": _arr(_obj({
        "id": UUID, "project": UUID, "iteration": UUID, "created": TIME, "domain": S, "width": INT, "height": INT,
        "predictions": _arr(PREDICTION_ITEM), "predictionUncertainty": N, **IMAGE_URIS}))}),
    "TagFilter": _obj({"tagIds": _arr(UUID), "threshold": N}),
    "SuggestedImageCounts": {"type": "object", "additionalProperties": INT},
    "Export": _obj({"platform": S, "status": {"type": "string", "enum": ["Exporting", "Failed", "Done"]},
                    "downloadUri": _nullable(S), "flavor": _nullable(S), "newerVersionAvailable": B}),
    "ProjectExport": _obj({"iterationCount": INT, "imageCount": INT, "tagCount": INT, "regionCount": INT,
                           "estimatedImportTimeInMS": INT, "token": S}),
}
# cvbot's own: an answer from the tag names before any training (core.zero_shot) has no iteration and says so
SCHEMAS["ImagePrediction"]["properties"].update({"iteration": _nullable(UUID), "zeroShot": B})


def _param_schema(p: Param) -> dict:
    if p.type == "array":
        item = {"type": "string", "format": "uuid"} if p.name.lower().endswith("ids") else {"type": "string"}
        schema = {"type": "array", "items": item}
        if p.max_items is not None:
            schema["maxItems"] = p.max_items
        return schema
    schema: dict = {"type": p.type}
    if p.format:
        schema["format"] = p.format
    if p.enum:
        schema["enum"] = list(p.enum)
    if p.minimum is not None:
        schema["minimum"] = p.minimum
    if p.maximum is not None:
        schema["maximum"] = p.maximum
    return schema


def _result_schema(result: str) -> dict:
    if result in ("integer", "boolean"):
        return {"type": result}
    if result.startswith("["):
        return _arr(_ref(result[1:-1]))
    return _ref(result)


def _operation(op: Operation) -> dict:
    params = []
    for name in re.findall(r"{(\w+)}", op.path):
        schema = {"type": "string"} if name == "publishedName" else dict(UUID)
        params.append({"name": name, "in": "path", "required": True, "schema": schema})
    for p in op.query:
        q = {"name": p.name, "in": "query", "required": p.required, "schema": _param_schema(p)}
        if p.type == "array":
            q.update({"style": "form", "explode": False})
        if p.description:
            q["description"] = p.description
        params.append(q)
    out: dict = {"operationId": op.name, "summary": op.summary, "tags": [op.api.capitalize()], "parameters": params,
                 "security": [{KEY_HEADERS[op.api]: []}] if op.api == TRAINING else
                 [{KEY_HEADERS[PREDICTION]: []}, {KEY_HEADERS[TRAINING]: []}]}
    if op.body == "images":
        out["requestBody"] = {"required": True, "content": {
            "multipart/form-data": {
                "schema": _obj({"imageData": {"type": "string", "format": "binary"}}, ("imageData",))},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}
    elif op.body:
        out["requestBody"] = {"required": op.body not in ("TrainingParameters", "PredictionQueryToken", "TagFilter"),
                              "content": {"application/json": {"schema": _ref(op.body)}}}
    error = {"description": "Custom Vision error",
             "content": {"application/json": {"schema": _ref("CustomVisionError")}}}
    responses: dict = {}
    for status in op.statuses:
        if op.result == "binary":
            responses[str(status)] = {"description": "the stored file", "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}
        elif status == 204 or op.result is None:
            responses[str(status)] = {"description": "done"}
        else:
            responses[str(status)] = {"description": "OK" if status == 200 else "some items failed (see each status)",
                                      "content": {"application/json": {"schema": _result_schema(op.result)}}}
    for status in ("400", "401", "404"):
        responses[status] = error
    out["responses"] = responses
    return out


def document(operations: list[Operation], prefixes: dict[str, str], aliases: dict[str, list[str]]) -> dict:
    """Every Custom Vision operation cvbot implements. The signed link routes (api/links.py: an image's
    originalImageUri/resizedImageUri/thumbnailUri, `/cv export dataset`'s download link) are left out on purpose:
    they are not API operations (no key, no SDK method; a client follows the URL it was given, as with Azure's SAS
    links), and listing them would invite clients to build such URLs themselves. The description says so."""
    paths: dict[str, dict] = {}
    for op in operations:
        paths.setdefault(prefixes[op.api] + op.path, {})[op.method.lower()] = _operation(op)
    note = "; ".join(f"{api} also under {', '.join(v)}" for api, v in aliases.items())
    return {
        "openapi": "3.0.3",
        "info": {"title": "cvbot: Custom Vision-compatible API", "version": "3.4-preview",
                 "description": "The subset of Azure Custom Vision's Training (v3.4-preview) and Prediction (v3.1) "
                                f"APIs that cvbot implements (image classification). Same operations {note}. "
                                "Image URIs in responses (originalImageUri, resizedImageUri, thumbnailUri) are "
                                "signed, expiring links fetched without a key, like Azure's SAS links."},
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {h: {"type": "apiKey", "in": "header", "name": h} for h in KEY_HEADERS.values()},
        },
    }
