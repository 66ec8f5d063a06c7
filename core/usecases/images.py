"""Training images: validated uploads (each image its own status), listing, tagging, deletion."""
from __future__ import annotations

import builtins
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import TypeAlias

from .. import errors
from ..images import TRAINING_MAX_BYTES, validate_image
from ..model import Image
from ..rules import MAX_METADATA_PAIRS, clean_metadata, image_tag_problem
from .base import UseCase

log = logging.getLogger(__name__)


@dataclass
class ImageUpload:
    data: bytes | None
    name: str = ""
    tag_ids: list[str] = field(default_factory=list)
    problem: tuple[str, str] | None = None  # (status, message) when the adapter could not get the bytes
    metadata: dict[str, str] = field(default_factory=dict)  # key/value pairs stored with a new image


@dataclass
class ImageResult:
    source_name: str
    status: str  # Custom Vision's: OK, OKDuplicate, ErrorImageFormat, ErrorImageSize, ...
    message: str = ""
    image: Image | None = None

    @property
    def ok(self) -> bool:
        return self.status in ("OK", "OKDuplicate")


Ids: TypeAlias = list[str]  # module-level names: inside Images, `list` is the use case
ImageList: TypeAlias = list[Image]


class Order(str, Enum):
    Newest = "Newest"
    Oldest = "Oldest"


@dataclass
class TagPairs:
    """What `tag_images` did with (image id, tag id) pairs, in Custom Vision's terms."""

    created: list[tuple[str, str]]
    duplicated: list[tuple[str, str]]


@dataclass
class MetadataResult:
    """One image's outcome of `update_metadata`: Custom Vision's ImageMetadataUpdateEntry."""

    image_id: str
    status: str  # OK | ErrorImageNotFound | ErrorLimitExceed
    metadata: dict[str, str] | None = None


MAX_METADATA_BATCH = 64


class Images(UseCase):
    def add(self, project_id: str, uploads: list[ImageUpload], source: str = "", uploaded_by: str | None = None,
            max_bytes: int = TRAINING_MAX_BYTES) -> list[ImageResult]:
        """Validate and store a batch; every image gets its own status and one bad image fails only itself."""
        self.scope.require_write("add images")
        for up in uploads:
            up.metadata = clean_metadata(up.metadata)
        with self.deps.uow() as uow:
            self.project(uow, project_id)
            tags = {t.id: t for t in uow.tags.list(project_id)}
        results: list[ImageResult | None] = [None] * len(uploads)
        fresh: dict[str, tuple[int, Image]] = {}
        for i, up in enumerate(uploads):
            name = up.name or f"image {i + 1}"
            tag_ids = list(dict.fromkeys(up.tag_ids or []))
            problem = image_tag_problem(tags, tag_ids)
            if up.data is None or up.problem:
                status, message = up.problem or ("ErrorSource", "the image could not be read")
                results[i] = ImageResult(name, status, message)
                continue
            if problem:
                results[i] = ImageResult(name, problem.status, problem.message)
                continue
            try:
                info = validate_image(up.data, max_bytes)
            except errors.ImageRejected as e:
                results[i] = ImageResult(name, e.status, e.message)
                continue
            if info.sha256 in fresh:
                results[i] = ImageResult(name, "OKDuplicate", "same image earlier in this batch", fresh[info.sha256][1])
                continue
            image = Image(project_id=project_id, sha256=info.sha256, width=info.width, height=info.height,
                          original_name=up.name or "", source=source, uploaded_by=uploaded_by, tag_ids=tag_ids,
                          metadata=dict(up.metadata))
            fresh[info.sha256] = (i, image)
        stored = self._store(project_id, uploads, fresh, results)
        added = [r.image.sha256 for r in results if r is not None and r.status == "OK" and r.image is not None]
        self._embed_ahead(project_id, added)
        for r in results:
            if r is not None and r.status == "OKDuplicate" and r.image is not None and r.image.sha256 in stored:
                r.image = stored[r.image.sha256]
        return [r for r in results if r is not None]

    def _embed_ahead(self, project_id: str, sha256s: Ids) -> None:
        """With `deps.embed_chunk` set (workers on a queue), the new images become embedding jobs of that many
        images each, so workers embed a large import in parallel before anyone trains."""
        size = self.deps.embed_chunk
        if size <= 0 or not sha256s:
            return
        with self.deps.uow() as uow:
            domain = self.project(uow, project_id).domain
        try:
            for start in range(0, len(sha256s), size):
                self.deps.submit("embed", domain=domain.value, sha256s=sha256s[start:start + size])
        except Exception:  # noqa: BLE001 - only a head start: the training embeds what is missing
            log.warning("could not queue the embedding of %d new images; the training will embed them",
                        len(sha256s), exc_info=True)

    def _store(self, project_id: str, uploads: list[ImageUpload], fresh: dict[str, tuple[int, Image]],
               results: list[ImageResult | None]) -> dict[str, Image]:
        for attempt in (1, 2):  # a concurrent upload of the same image can win the race: re-check once
            written: list[str] = []
            stored: dict[str, Image] = {}
            try:
                with self.deps.uow() as uow:
                    for sha, (i, image) in fresh.items():
                        name = uploads[i].name or f"image {i + 1}"
                        existing = uow.images.get_by_sha(project_id, sha)
                        if existing:
                            results[i] = ImageResult(name, "OKDuplicate", "this image is already in the project",
                                                     existing)
                            stored[sha] = existing
                            continue
                        self.deps.blobs.put(uploads[i].data)  # type: ignore[arg-type]
                        written.append(sha)
                        uow.images.add(image)
                        results[i] = ImageResult(name, "OK", "", image)
                        stored[sha] = image
                    uow.commit()
                return stored
            except Exception:
                self.collect(written)
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def list(self, project_id: str, tagged: bool | None = None, tag_ids: list[str] | None = None, skip: int = 0,
             take: int | None = None, order: Order | str = Order.Newest) -> ImageList:
        with self.deps.uow() as uow:
            self.project(uow, project_id)
            return uow.images.list(project_id, tagged=tagged, tag_ids=tag_ids, skip=skip, take=take,
                                   oldest=Order(order) == Order.Oldest)

    def count(self, project_id: str, tagged: bool | None = None, tag_ids: Ids | None = None) -> int:
        with self.deps.uow() as uow:
            self.project(uow, project_id)
            return uow.images.count(project_id, tagged=tagged, tag_ids=tag_ids)

    def get_many(self, project_id: str, image_ids: Ids) -> ImageList:
        """The project's images among `image_ids` (others are left out)."""
        with self.deps.uow() as uow:
            self.project(uow, project_id)
            return [i for i in uow.images.get_many(image_ids) if i.project_id == project_id]

    def data(self, project_id: str, image_id: str) -> bytes:
        found = self.get_many(project_id, [image_id])
        if not found:
            raise errors.NotFound(f"no image {image_id} in this project")
        return self.deps.blobs.get(found[0].sha256)

    def set_tags(self, project_id: str, image_ids: Ids, tag_ids: Ids) -> ImageList:
        """Replace the tags of the given images (an empty list untags them)."""
        return self._retag(project_id, image_ids, lambda current: list(dict.fromkeys(tag_ids)))

    def add_tags(self, project_id: str, image_ids: Ids, tag_ids: Ids) -> ImageList:
        return self._retag(project_id, image_ids, lambda current: list(dict.fromkeys(current + tag_ids)))

    def remove_tags(self, project_id: str, image_ids: Ids, tag_ids: Ids | None = None) -> ImageList:
        """Remove `tag_ids` from the images (all their tags when None)."""
        drop = set(tag_ids or [])
        return self._retag(project_id, image_ids,
                           lambda current: [t for t in current if tag_ids is not None and t not in drop])

    def tag_images(self, project_id: str, pairs: builtins.list[tuple[str, str]]) -> TagPairs:
        """Add (image id, tag id) pairs; a pair the image already carries (or repeated) is reported duplicated."""
        current = {i.id: set(i.tag_ids) for i in self.get_many(project_id, [image_id for image_id, _ in pairs])}
        created: builtins.list[tuple[str, str]] = []
        duplicated: builtins.list[tuple[str, str]] = []
        by_image: dict[str, Ids] = {}
        for image_id, tag_id in pairs:
            if tag_id in current.get(image_id, set()) or tag_id in by_image.get(image_id, []):
                duplicated.append((image_id, tag_id))
            else:
                by_image.setdefault(image_id, []).append(tag_id)
                created.append((image_id, tag_id))
        for image_id, tag_ids in by_image.items():
            self.add_tags(project_id, [image_id], tag_ids)
        return TagPairs(created, duplicated)

    def _retag(self, project_id: str, image_ids: Ids, change: Callable[[Ids], Ids]) -> ImageList:
        self.scope.require_write("tag images")
        with self.deps.uow() as uow:
            self.project(uow, project_id)
            tags = {t.id: t for t in uow.tags.list(project_id)}
            images = [i for i in uow.images.get_many(list(dict.fromkeys(image_ids))) if i.project_id == project_id]
            found = {i.id for i in images}
            missing = [i for i in image_ids if i not in found]
            if missing:
                raise errors.NotFound(f"no image {missing[0]} in this project")
            for img in images:
                new = change(list(img.tag_ids))
                problem = image_tag_problem(tags, new)
                if problem:
                    problem.raise_()
                uow.images.set_tags(img.id, new)
                img.tag_ids = new
            uow.commit()
            return images

    def update_metadata(self, project_id: str, image_ids: Ids,
                        metadata: dict[str, str]) -> builtins.list[MetadataResult]:
        """Merge key/value pairs into each image's metadata (a key sent again takes the new value). Each image gets
        its own status: ErrorImageNotFound (not in this project), ErrorLimitExceed (it would hold more than 10
        pairs; it is left unchanged). Bad keys or values refuse the whole batch and change nothing."""
        self.scope.require_write("update image metadata")
        image_ids = list(dict.fromkeys(image_ids))
        if not image_ids:
            raise errors.InvalidInput("give the ids of the images to update", "BadRequestImageBatch")
        if len(image_ids) > MAX_METADATA_BATCH:
            raise errors.InvalidInput(f"at most {MAX_METADATA_BATCH} images in one metadata update",
                                      "BadRequestExceededBatchSize")
        metadata = clean_metadata(metadata)
        with self.deps.uow() as uow:
            self.project(uow, project_id)
            found = {i.id: i for i in uow.images.get_many(image_ids) if i.project_id == project_id}
            results = []
            for image_id in image_ids:
                img = found.get(image_id)
                if img is None:
                    results.append(MetadataResult(image_id, "ErrorImageNotFound"))
                    continue
                merged = img.metadata | metadata
                if len(merged) > MAX_METADATA_PAIRS:
                    results.append(MetadataResult(image_id, "ErrorLimitExceed", img.metadata))
                    continue
                uow.images.set_metadata(image_id, merged)
                results.append(MetadataResult(image_id, "OK", merged))
            uow.commit()
            return results

    def delete(self, project_id: str, image_ids: Ids | None = None, all_images: bool = False) -> int:
        self.scope.require_write("delete images")
        with self.deps.uow() as uow:
            self.project(uow, project_id)
            if all_images:
                images = uow.images.list(project_id)
            else:
                images = [i for i in uow.images.get_many(image_ids or []) if i.project_id == project_id]
            for img in images:
                uow.images.delete(img.id)
            uow.commit()
        self.collect([i.sha256 for i in images])
        return len(images)
