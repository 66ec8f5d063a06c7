"""Domain errors. Each carries a Custom Vision error code so adapters can map it unchanged."""
from __future__ import annotations


class CvError(Exception):
    code = "BadRequest"
    http_status = 400

    def __init__(self, message: str, code: str | None = None):
        super().__init__(message)
        self.message = message
        if code:
            self.code = code


class NotFound(CvError):
    code = "NotFound"
    http_status = 404


class Conflict(CvError):
    code = "BadRequestNameNotUnique"
    http_status = 400


class InvalidInput(CvError):
    code = "BadRequestInvalidArgument"


class TrainingValidationFailed(CvError):
    code = "BadRequestTrainingValidationFailed"


class TrainingNotNeeded(CvError):
    code = "BadRequestTrainingNotNeeded"


class TrainingInProgress(CvError):
    code = "BadRequestTrainingAlreadyInProgress"


class NegativeAndRegularTag(CvError):
    code = "BadRequestNegativeAndRegularTagOnSameImage"


class IterationNotCompleted(CvError):
    code = "BadRequestIterationNotCompleted"


class CannotDeleteDefault(CvError):
    code = "BadRequestCannotDeleteDefaultIteration"


class NoDefaultIteration(CvError):
    code = "BadRequestNoIteration"


class BackboneUnavailable(CvError):
    code = "BadRequestModelUnavailable"
    http_status = 503


class StorageFull(CvError):
    """The disk (or the database) has no room for a write: nothing was stored, and the operator must free space.
    507 Insufficient Storage with a code of its own, so clients and logs tell it from an unknown error."""

    code = "ErrorStorageFull"
    http_status = 507


class StoreBusy(CvError):
    """Another cvbot process holds the store where this one needs it alone (`cvbot doctor --repair`), or it is
    being repaired."""

    code = "StoreBusy"
    http_status = 503


class Forbidden(CvError):
    code = "Forbidden"
    http_status = 403


class ImageRejected(CvError):
    """A single image failed validation; `status` is Custom Vision's per-image status."""

    def __init__(self, status: str, message: str, code: str = "BadRequestImageFormat"):
        super().__init__(message, code)
        self.status = status


class Busy(CvError):
    """The server is at capacity for this work right now (e.g. the process-wide image decode budget); nothing was
    changed, and the same request may succeed after `retry_after` seconds."""

    code = "ErrorFeaturizationQueueTimeout"
    http_status = 503

    def __init__(self, message: str, retry_after: int = 1, code: str | None = None):
        super().__init__(message, code)
        self.retry_after = retry_after
