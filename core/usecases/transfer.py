"""Projects in and out: Custom Vision's export token → import copy, and dataset archives (zip + manifest).

Export tokens. `export` answers a token that lets `import_token` copy the project, as Azure's ProjectExport does.
No row stores it: the token is `cvx1.<payload>.<mac>`, the payload (workspace, project id, expiry, a random nonce)
signed with HMAC-SHA256 under a key derived from the exporting workspace's training key (stored in the database,
shared by every process). So a token is unguessable, works only in the workspace that exported it (another
workspace's key gives another MAC, and the payload's workspace must be the importer's), expires after
`TOKEN_TTL_SECONDS`, and regenerating the workspace's keys revokes every token handed out before.

A copy (`copy`, `import_token`) and a dataset import each write their rows in one unit of work: an interrupted copy
leaves nothing behind. Images are content-addressed, so a copy references the same blobs; an archive import writes
its blobs first and removes those no row references when it fails.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import secrets
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO

from .. import archive, errors
from ..images import TRAINING_MAX_BYTES, sha256_of, validate_image
from ..model import ClassificationType, Image, Project, Tag, TagType, WorkspaceKeys
from ..ports import UnitOfWork
from ..rules import (
    MAX_TAGS_PER_PROJECT,
    clean_description,
    clean_metadata,
    clean_name,
    image_tag_problem,
    parse_classification_type,
    parse_domain,
    parse_threshold,
)
from .base import Deps, UseCase

TOKEN_PREFIX = "cvx1"
TOKEN_TTL_SECONDS = 7 * 24 * 3600
INVALID_TOKEN = "BadRequestInvalidImportToken"
Progress = Callable[[int, int], None]  # (done, total)


@dataclass
class ProjectExport:
    """Azure's ProjectExport: what an import of `token` will copy."""

    project_id: str
    image_count: int
    tag_count: int
    iteration_count: int
    token: str
    expires_at: int  # unix seconds


@dataclass
class ArchiveSummary:
    project: Project
    images: int
    bytes: int


class ArchiveTooLarge(errors.CvError):
    code = "BadRequestArchiveTooLarge"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(keys: WorkspaceKeys, payload: str) -> str:
    key = hashlib.sha256(b"cvbot project export token\0" + keys.training_key.encode()).digest()
    return _b64(hmac.new(key, payload.encode(), hashlib.sha256).digest())


def _invalid(message: str = "the import token is not valid here (wrong, altered, or from another workspace)") \
        -> errors.InvalidInput:
    return errors.InvalidInput(message, INVALID_TOKEN)


class Transfer(UseCase):
    # ------------------------------------------------------------ export token / import
    def export(self, project_id: str, now: float | None = None) -> ProjectExport:
        self.scope.require_write("export projects")
        with self.deps.uow() as uow:
            p = self.project(uow, project_id)
            tags, images = uow.tags.list(p.id), uow.images.count(p.id)
            iterations = len(uow.iterations.list(p.id))
            keys = uow.keys.get(p.workspace)
            if keys is None:  # first use of the workspace's keys, as Channels.keys makes them
                keys = uow.keys.add_if_absent(WorkspaceKeys(p.workspace, secrets.token_hex(16),
                                                            secrets.token_hex(16)))
                uow.commit()
        expires = int((now or time.time()) + TOKEN_TTL_SECONDS)
        payload = _b64(json.dumps({"w": p.workspace, "p": p.id, "e": expires, "n": secrets.token_hex(8)},
                                  separators=(",", ":")).encode())
        token = f"{TOKEN_PREFIX}.{payload}.{_mac(keys, payload)}"
        return ProjectExport(p.id, images, len(tags), iterations, token, expires)

    def import_token(self, token: str, name: str | None = None, now: float | None = None) -> Project:
        """A copy of the project a token from `export` names, in the same workspace."""
        self.scope.require_write("import projects")
        parts = (token or "").strip().split(".")
        if len(parts) != 3 or parts[0] != TOKEN_PREFIX:
            raise _invalid()
        try:
            claims = json.loads(_unb64(parts[1]))
        except ValueError:
            raise _invalid() from None
        if not isinstance(claims, dict) or not all(isinstance(claims.get(k), t) for k, t in
                                                   (("w", str), ("p", str), ("e", int))):
            raise _invalid()
        if self.scope.workspace is not None and claims["w"] != self.scope.workspace:
            raise _invalid()
        with self.deps.uow() as uow:
            keys = uow.keys.get(claims["w"])
        if keys is None or not hmac.compare_digest(_mac(keys, parts[1]), parts[2]):
            raise _invalid()
        if claims["e"] < (now or time.time()):
            raise _invalid("the import token has expired; export the project again")
        try:
            return self.copy(claims["p"], name)
        except errors.NotFound:
            raise _invalid("the exported project no longer exists") from None

    def copy(self, project_id: str, name: str | None = None, created_by: str | None = None) -> Project:
        """A full copy of a project in its workspace: settings, tags, images with their tags and metadata (the same
        blobs).
        Without `name`: '<name> (copy)', or '(copy 2)'... when taken. Iterations and predictions are not copied.

        With in-process jobs everything is written in one unit of work before this returns. With a durable queue
        (workers), the project and its tags are written here and the images by a "copy" job (`copy_images`, in
        one unit of work of its own), so a request never waits on a large project's rows."""
        self.scope.require_write("copy projects")
        queued = getattr(self.deps.runner, "durable", False)
        with self.deps.uow() as uow:
            src = self.project(uow, project_id)
            new = Project(name=self._free_name(uow, src, name), domain=src.domain,
                          classification_type=src.classification_type, description=src.description,
                          threshold=src.threshold, workspace=src.workspace, created_by=created_by or src.created_by,
                          unknown_threshold=src.unknown_threshold)
            if uow.projects.add_if_absent(new).id != new.id:
                raise errors.Conflict(f"a project named '{new.name}' already exists")
            for t in uow.tags.list(src.id):
                uow.tags.add(Tag(project_id=new.id, name=t.name, type=t.type, description=t.description,
                                 created_at=t.created_at))
            if not queued:
                _copy_images(uow, src.id, new.id)
            uow.commit()
        if queued:
            try:
                self.deps.submit("copy", source_id=src.id, target_id=new.id)
            except Exception:  # the queue is unreachable: no copy without its images
                with self.deps.uow() as uow:
                    uow.projects.delete(new.id)
                    uow.commit()
                raise
        return new

    @staticmethod
    def _free_name(uow: UnitOfWork, src: Project, name: str | None) -> str:
        if name is not None:
            name = clean_name(name, "project")
            if uow.projects.get_by_name(src.workspace, name):
                raise errors.Conflict(f"a project named '{name}' already exists")
            return name
        for n in range(1, 1000):
            candidate = clean_name(f"{src.name[:80]} (copy{'' if n == 1 else f' {n}'})", "project")
            if not uow.projects.get_by_name(src.workspace, candidate):
                return candidate
        raise errors.Conflict(f"too many copies of '{src.name}'; give the copy a name")

    # ------------------------------------------------------------ dataset archives
    def export_dataset(self, project_id: str, out: IO[bytes], progress: Progress | None = None,
                       max_bytes: int | None = None) -> ArchiveSummary:
        """Write the project as a dataset zip to `out`, one image at a time (never the whole archive in memory).
        Raises ArchiveTooLarge as soon as the archive passes `max_bytes` (what was written is then useless)."""
        with self.deps.uow() as uow:
            p = self.project(uow, project_id)
            tags = uow.tags.list(p.id)
            images = uow.images.list(p.id, oldest=True)
        names = {t.id: t.name for t in tags}
        folders = archive.tag_folders(tags) if p.classification_type == ClassificationType.Multiclass else {}
        settings = archive.ArchiveSettings(p.name, p.description, p.domain.value, p.classification_type.value,
                                           p.threshold, [archive.ArchiveTag(t.name, t.type, t.description)
                                                         for t in tags])
        lines: list[str] = []
        used: set[str] = set()
        written = 0
        with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            for n, img in enumerate(images, 1):
                data = self.deps.blobs.get(img.sha256)
                folder = archive.image_folder(p.classification_type, img.tag_ids, folders)
                path = archive.image_file(folder, img.original_name, img.sha256, archive.sniff_format(data))
                if path.lower() in used:  # two stems and hash prefixes alike: the full hash tells them apart
                    path = archive.image_file(folder, "", img.sha256 * 2, archive.sniff_format(data))
                used.add(path.lower())
                entry = zipfile.ZipInfo(path, img.created_at.timetuple()[:6])  # images: stored as they are
                entry.external_attr = 0o644 << 16
                zf.writestr(entry, data)
                written += len(data)
                if max_bytes is not None and written > max_bytes:
                    raise ArchiveTooLarge(f"the dataset is larger than {max_bytes // (1024 * 1024)} MB")
                lines.append(archive.ManifestEntry(path, img.sha256, [names[t] for t in img.tag_ids if t in names],
                                                   dict(img.metadata), img.source,
                                                   img.original_name).line())
                if progress:
                    progress(n, len(images))
            zf.writestr(archive.SETTINGS_FILE, json.dumps(settings.as_json(
                {names[t]: f for t, f in folders.items()}), indent=2, ensure_ascii=False),
                compress_type=zipfile.ZIP_DEFLATED)
            zf.writestr(archive.MANIFEST_FILE, "".join(lines), compress_type=zipfile.ZIP_DEFLATED)
        return ArchiveSummary(p, len(images), written)

    def import_dataset(self, source: IO[bytes] | str, name: str | None = None, progress: Progress | None = None,
                       created_by: str | None = None) -> ArchiveSummary:
        """A new project from a dataset zip. Everything is checked first (settings, manifest, paths inside the
        archive, each image's sha256 and format); a refused archive creates nothing."""
        self.scope.require_write("import datasets")
        try:
            zf = zipfile.ZipFile(source)
        except (zipfile.BadZipFile, OSError) as e:
            raise errors.InvalidInput(f"not a zip archive: {e}") from None
        with zf:
            members = {}
            for info in zf.infolist():
                archive.check_member(info.filename[:-1] if info.is_dir() else info.filename)
                members[info.filename] = info
            settings = archive.parse_settings(_read(zf, members, archive.SETTINGS_FILE, archive.MAX_SETTINGS_BYTES))
            project, tags = _project_from(settings, name, self.scope.home, created_by)
            entries = _manifest(zf, members)
            by_name = {t.name: t for t in tags}
            by_id = {t.id: t for t in tags}
            images: list[Image] = []
            for entry in entries:
                unknown = [t for t in entry.tags if t not in by_name]
                if unknown:
                    raise errors.InvalidInput(f"{entry.file}: tag {unknown[0]!r} is not in {archive.SETTINGS_FILE}")
                tag_ids = list(dict.fromkeys(by_name[t].id for t in entry.tags))
                problem = image_tag_problem(by_id, tag_ids)
                if problem:
                    raise errors.InvalidInput(f"{entry.file}: {problem.message}")
                if entry.file not in members:
                    raise errors.InvalidInput(f"{entry.file} is in the manifest but not in the archive")
                try:  # Custom Vision's limits on metadata, as update_image_metadata has them
                    metadata = clean_metadata(entry.metadata)
                except errors.CvError as e:
                    raise errors.InvalidInput(f"{entry.file}: {e.message}") from None
                images.append(Image(project_id=project.id, sha256=entry.sha256, width=0, height=0,
                                    original_name=entry.original_name, source=entry.source[:64],
                                    uploaded_by=created_by, tag_ids=tag_ids, metadata=metadata))
            return self._store_archive(zf, members, project, tags, entries, images, progress)

    def _store_archive(self, zf: zipfile.ZipFile, members: dict[str, zipfile.ZipInfo], project: Project,
                       tags: list[Tag], entries: list[archive.ManifestEntry], images: list[Image],
                       progress: Progress | None) -> ArchiveSummary:
        written: list[str] = []
        total = 0
        try:
            for n, (entry, img) in enumerate(zip(entries, images, strict=True), 1):
                data = _read(zf, members, entry.file, TRAINING_MAX_BYTES)
                if sha256_of(data) != entry.sha256:
                    raise errors.InvalidInput(f"{entry.file}: its sha256 is not the manifest's (a damaged archive)")
                try:
                    info = validate_image(data)
                except errors.ImageRejected as e:
                    raise errors.InvalidInput(f"{entry.file}: {e.message}") from None
                img.width, img.height = info.width, info.height
                self.deps.blobs.put(data)
                written.append(entry.sha256)
                total += len(data)
                if progress:
                    progress(n, len(entries))
            with self.deps.uow() as uow:
                if uow.projects.add_if_absent(project).id != project.id:
                    raise errors.Conflict(f"a project named '{project.name}' already exists")
                for t in tags:
                    uow.tags.add(t)
                for img in images:
                    uow.images.add(img)
                uow.commit()
        except BaseException:
            self.collect(written)
            raise
        return ArchiveSummary(project, len(images), total)


def _copy_images(uow: UnitOfWork, source_id: str, target_id: str) -> int:
    """The source's images into the target (tags matched by name), unless the target has images already."""
    if uow.images.count(target_id):
        return 0
    ids = {t.name: t.id for t in uow.tags.list(target_id)}
    names = {t.id: t.name for t in uow.tags.list(source_id)}
    images = uow.images.list(source_id, oldest=True)
    for img in images:
        uow.images.add(_image_copy(img, target_id, [ids[names[t]] for t in img.tag_ids
                                                    if t in names and names[t] in ids]))
    return len(images)


def copy_images(deps: Deps, source_id: str, target_id: str) -> None:
    """The "copy" job: a queued project copy's images, in one unit of work. Safe to run again: a target that has
    images (an earlier run committed) is left as it is; a source or target deleted meanwhile copies nothing."""
    with deps.uow() as uow:
        if uow.projects.get(source_id) is None or uow.projects.get(target_id) is None:
            return
        if _copy_images(uow, source_id, target_id):
            uow.commit()


class CopyJob:
    def __init__(self, deps: Deps, source_id: str, target_id: str):
        self.deps, self.source_id, self.target_id = deps, source_id, target_id

    def run(self) -> None:
        copy_images(self.deps, self.source_id, self.target_id)


def _image_copy(img: Image, project_id: str, tag_ids: list[str]) -> Image:
    return Image(project_id=project_id, sha256=img.sha256, width=img.width, height=img.height,
                 original_name=img.original_name, source=img.source, uploaded_by=img.uploaded_by, tag_ids=tag_ids,
                 created_at=img.created_at, metadata=dict(img.metadata))


def _read(zf: zipfile.ZipFile, members: dict[str, zipfile.ZipInfo], path: str, limit: int) -> bytes:
    info = members.get(path)
    if info is None:
        raise errors.InvalidInput(f"the archive has no {path}")
    if info.file_size > limit:
        raise errors.InvalidInput(f"{path} is larger than {limit} bytes")
    try:
        with zf.open(info) as f:
            data = f.read(limit + 1)
    except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError) as e:
        raise errors.InvalidInput(f"{path} cannot be read: {e}") from None
    if len(data) > limit:
        raise errors.InvalidInput(f"{path} is larger than {limit} bytes")
    return data


def _manifest(zf: zipfile.ZipFile, members: dict[str, zipfile.ZipInfo]) -> list[archive.ManifestEntry]:
    text = _read(zf, members, archive.MANIFEST_FILE, archive.MAX_MANIFEST_BYTES)
    entries: list[archive.ManifestEntry] = []
    seen: set[str] = set()
    for n, line in enumerate(io.StringIO(text.decode("utf-8", errors="replace")), 1):
        if not line.strip():
            continue
        entry = archive.parse_manifest_line(line, n)
        if entry.sha256 in seen:
            raise errors.InvalidInput(f"{archive.MANIFEST_FILE} line {n}: the same image twice")
        seen.add(entry.sha256)
        entries.append(entry)
    return entries


def _project_from(settings: archive.ArchiveSettings, name: str | None, workspace: str,
                  created_by: str | None) -> tuple[Project, list[Tag]]:
    try:
        project = Project(name=clean_name(name or settings.name, "project"), domain=parse_domain(settings.domain),
                          classification_type=parse_classification_type(settings.classification_type),
                          description=clean_description(settings.description, "project"),
                          threshold=parse_threshold(settings.threshold), workspace=workspace, created_by=created_by)
    except errors.CvError as e:
        raise errors.InvalidInput(f"{archive.SETTINGS_FILE}: {e.message}") from None
    tags: list[Tag] = []
    for t in settings.tags:
        tag_name = clean_name(t.name, "tag")
        if tag_name != t.name or any(x.name.lower() == t.name.lower() for x in tags):
            raise errors.InvalidInput(f"{archive.SETTINGS_FILE}: tag {t.name!r} is not a valid, unique tag name")
        tags.append(Tag(project_id=project.id, name=t.name, type=t.type,
                        description=clean_description(t.description, "tag")))
    if sum(t.type == TagType.Negative for t in tags) > 1:
        raise errors.InvalidInput(f"{archive.SETTINGS_FILE}: more than one Negative tag")
    if len(tags) > MAX_TAGS_PER_PROJECT:
        raise errors.InvalidInput(f"{archive.SETTINGS_FILE}: more than {MAX_TAGS_PER_PROJECT} tags")
    return project, tags
