"""Input rules shared by every use case: names, settings values, and the tags an image may carry."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from . import errors
from .model import ClassificationType, Domain, Tag, TagType

MAX_NAME = 256
MAX_TAGS_PER_PROJECT = 500
MAX_TAGS_PER_IMAGE = 20
# Project and tag descriptions: Azure documents no number; 4,000 characters holds any description a person writes
# and keeps every project listing small (a description is returned with each GET of its project).
MAX_DESCRIPTION = 4000


def clean_name(name: str | None, what: str) -> str:
    name = (name or "").strip()
    if not name:
        raise errors.InvalidInput(f"the {what} name is empty")
    if len(name) > MAX_NAME:
        raise errors.InvalidInput(f"the {what} name is longer than {MAX_NAME} characters")
    return name


def clean_description(value: str | None, what: str) -> str:
    """A project's or tag's description, refused with Azure's code (BadRequestProjectDescription,
    BadRequestTagDescription) when longer than MAX_DESCRIPTION characters."""
    value = value or ""
    if len(value) > MAX_DESCRIPTION:
        raise errors.InvalidInput(f"the {what} description is {len(value):,} characters long; at most "
                                  f"{MAX_DESCRIPTION:,} are allowed", f"BadRequest{what.capitalize()}Description")
    return value


def parse_domain(value: Domain | str) -> Domain:
    if isinstance(value, Domain):
        return value
    try:
        return Domain.parse(value)
    except ValueError as e:
        raise errors.InvalidInput(str(e), "BadRequestDomainInvalid") from None


def parse_classification_type(value: ClassificationType | str) -> ClassificationType:
    if isinstance(value, ClassificationType):
        return value
    try:
        return ClassificationType.parse(value)
    except ValueError as e:
        raise errors.InvalidInput(str(e)) from None


def parse_tag_type(value: TagType | str) -> TagType:
    if isinstance(value, TagType):
        return value
    for t in TagType:
        if t.value.lower() == str(value).strip().lower():
            return t
    raise errors.InvalidInput(f"unknown tag type {value!r}; use Regular or Negative")


def parse_threshold(value: float | str) -> float:
    try:
        t = float(value)
    except (TypeError, ValueError):
        raise errors.InvalidInput(f"threshold {value!r} is not a number") from None
    if not 0.0 <= t <= 1.0:
        raise errors.InvalidInput(f"threshold {t} is outside [0, 1]")
    return t


@dataclass(frozen=True)
class TagProblem:
    """Why an image cannot carry a set of tags: Custom Vision's per-image status and the matching error."""

    status: str
    message: str
    error: type[errors.CvError]

    def raise_(self) -> None:
        raise self.error(self.message)


def image_tag_problem(tags: Mapping[str, Tag], tag_ids: list[str]) -> TagProblem | None:
    """Check the tags one image would carry (unknown ids, how many, Negative exclusivity); None when fine.

    A Multiclass project's one-tag-per-image rule is checked when training starts (`plan_training`), not here:
    a project's type can change after its images are tagged, and Custom Vision accepts such uploads too."""
    unknown = [t for t in tag_ids if t not in tags]
    if unknown:
        return TagProblem("ErrorInvalidTag", f"no tag {unknown[0]} in this project", errors.NotFound)
    if len(tag_ids) > MAX_TAGS_PER_IMAGE:
        return TagProblem("ErrorTagLimitExceed", f"an image can carry at most {MAX_TAGS_PER_IMAGE} tags",
                          errors.InvalidInput)
    if len(tag_ids) > 1 and any(tags[t].type == TagType.Negative for t in tag_ids):
        return TagProblem("ErrorNegativeAndRegularTagOnSameImage",
                          "the Negative tag cannot be combined with other tags on an image",
                          errors.NegativeAndRegularTag)
    return None


# Custom Vision's image metadata: at most 10 key/value pairs per image, keys up to 128 characters, values up to 256.
MAX_METADATA_PAIRS = 10
MAX_METADATA_KEY = 128
MAX_METADATA_VALUE = 256


def clean_metadata(metadata: object) -> dict[str, str]:
    """Image metadata as sent: string keys and values within Custom Vision's limits, else InvalidInput with its
    codes (BadRequestImageMetadataKey / BadRequestImageMetadataValue). The pair limit is per image, once merged."""
    if not isinstance(metadata, dict):
        raise errors.InvalidInput("the metadata must be an object of string keys and values",
                                  "BadRequestImageMetadataKey")
    for key, value in metadata.items():
        if not isinstance(key, str) or not key.strip() or len(key) > MAX_METADATA_KEY:
            raise errors.InvalidInput(f"a metadata key must be 1 to {MAX_METADATA_KEY} characters",
                                      "BadRequestImageMetadataKey")
        if not isinstance(value, str) or len(value) > MAX_METADATA_VALUE:
            raise errors.InvalidInput(f"the metadata value of {key[:40]!r} must be a string of at most "
                                      f"{MAX_METADATA_VALUE} characters", "BadRequestImageMetadataValue")
    if len(metadata) > MAX_METADATA_PAIRS:
        raise errors.InvalidInput(f"at most {MAX_METADATA_PAIRS} metadata pairs per image",
                                  "BadRequestImageMetadataKey")
    return dict(metadata)


# cvbot's own project settings (scheduled jobs, core/usecases/schedule.py)
RETRAIN_NIGHTLY = "nightly"
RETRAIN_OFF = ("off", "none", "never", "no")
RETENTION_KEEP = ("keep", "forever", "off", "never", "none")
RETENTION_DEFAULT = ("default", "")
MAX_RETENTION_DAYS = 36500


def parse_retrain(value: str) -> str | None:
    """A project's scheduled retraining: "nightly", or None for off ("off", "none", "never", "no")."""
    v = str(value).strip().lower()
    if v == RETRAIN_NIGHTLY:
        return RETRAIN_NIGHTLY
    if v in RETRAIN_OFF:
        return None
    raise errors.InvalidInput(f"retrain must be nightly or off, not {value!r}")


def parse_retention(value: str | int) -> int | None:
    """A project's prediction retention: a number of days (1 to 36500), 0 or "keep" to keep stored predictions for
    ever, or "default" (None) to follow the install's CVBOT_PREDICTION_RETENTION_DAYS."""
    if isinstance(value, bool):
        raise errors.InvalidInput(f"retention must be a number of days, keep or default, not {value!r}")
    v = str(value).strip().lower()
    if v in RETENTION_DEFAULT:
        return None
    if v in RETENTION_KEEP:
        return 0
    v = v.removesuffix("days").removesuffix("d").strip()
    if not v.isdigit() or int(v) > MAX_RETENTION_DAYS:
        raise errors.InvalidInput(f"retention must be a number of days (up to {MAX_RETENTION_DAYS}), keep or "
                                  f"default, not {value!r}")
    return int(v)
