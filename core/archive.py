"""Dataset archive rules: how a project's images are laid out in a zip, and the manifest that makes the layout
lossless. Pure functions; the use case in `core/usecases/transfer.py` reads and writes the zip.

Layout (format `cvbot-dataset`, version 1):
- `settings.json`: the project's settings and its tags (real names, types, descriptions, and their folders);
- `manifest.jsonl`: one JSON object per image: `file` (path in the archive), `sha256`, `tags` (real names),
  `metadata`, `source`, `originalName`;
- the images: for a Multiclass project one folder per tag (`negative/` for the Negative tag, `untagged/` for images
  without a tag; folder names made safe, the real names kept in settings and manifest); for a Multilabel project
  every image once under `images/`. A file is named after its original name (made safe) and its content hash.
"""
from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from . import errors
from .model import ClassificationType, Tag, TagType

FORMAT = "cvbot-dataset"
VERSION = 1
SETTINGS_FILE = "settings.json"
MANIFEST_FILE = "manifest.jsonl"
NEGATIVE_FOLDER = "negative"
UNTAGGED_FOLDER = "untagged"
IMAGES_FOLDER = "images"
RESERVED = {NEGATIVE_FOLDER, UNTAGGED_FOLDER, IMAGES_FOLDER}
MAX_FOLDER = 64
MAX_STEM = 80
MAX_MANIFEST_BYTES = 256 * 1024 * 1024
MAX_SETTINGS_BYTES = 1024 * 1024
_WINDOWS_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)), *(f"lpt{i}" for i in range(1, 10))}
_UNSAFE = re.compile(r"[^\w.\- ]+")
_EXTENSIONS = {"JPEG": ".jpg", "PNG": ".png", "BMP": ".bmp", "GIF": ".gif", "WEBP": ".webp"}
_SHA256 = re.compile(r"[0-9a-f]{64}")


def safe_name(name: str, fallback: str, limit: int) -> str:
    """`name` as one portable path segment: letters, digits, '.', '-', '_' and spaces (others become '_'), no
    leading or trailing dots or spaces, not a Windows device name, at most `limit` characters."""
    out = _UNSAFE.sub("_", unicodedata.normalize("NFC", name)).strip(" .")[:limit].strip(" .")
    if not out or out.lower().split(".")[0] in _WINDOWS_RESERVED:
        out = f"{fallback}_{out}" if out else fallback
    return out


def tag_folders(tags: list[Tag]) -> dict[str, str]:
    """Tag id → folder of a Multiclass archive: `negative` for the Negative tag, a safe form of the name for the
    others, unique ignoring case (a later tag gets `_2`, `_3`...) and never one of the reserved folders."""
    out: dict[str, str] = {}
    taken = set(RESERVED)
    for t in sorted(tags, key=lambda t: (t.type != TagType.Negative, t.name.lower(), t.id)):
        if t.type == TagType.Negative:
            out[t.id] = NEGATIVE_FOLDER
            continue
        base = safe_name(t.name, "tag", MAX_FOLDER)
        folder, n = base, 1
        while folder.lower() in taken:
            n += 1
            folder = f"{base}_{n}"
        taken.add(folder.lower())
        out[t.id] = folder
    return out


def image_file(folder: str, original_name: str, sha256: str, image_format: str) -> str:
    """The archive path of one image: `folder/<safe original stem>-<first 12 hex of sha256><extension>`."""
    stem = safe_name(PurePosixPath(original_name.replace("\\", "/")).stem, "image", MAX_STEM) if original_name \
        else "image"
    return f"{folder}/{stem}-{sha256[:12]}{_EXTENSIONS.get(image_format.upper(), '.img')}"


def image_folder(classification_type: ClassificationType, tag_ids: list[str], folders: dict[str, str]) -> str:
    if classification_type == ClassificationType.Multilabel:
        return IMAGES_FOLDER
    known = [folders[t] for t in tag_ids if t in folders]
    return known[0] if known else UNTAGGED_FOLDER


def check_member(path: object) -> str:
    """A path inside the archive, refused when it could land outside the archive's root."""
    if not isinstance(path, str) or not path or "\\" in path or "\x00" in path or ":" in path:
        raise errors.InvalidInput(f"the archive names a file outside its root: {path!r}")
    p = PurePosixPath(path)
    if p.is_absolute() or any(part in ("..", ".", "") for part in path.split("/")):
        raise errors.InvalidInput(f"the archive names a file outside its root: {path!r}")
    return path


@dataclass
class ManifestEntry:
    file: str
    sha256: str
    tags: list[str]
    metadata: dict[str, str] = field(default_factory=dict)
    source: str = ""
    original_name: str = ""

    def line(self) -> str:
        return json.dumps({"file": self.file, "sha256": self.sha256, "tags": self.tags, "metadata": self.metadata,
                           "source": self.source, "originalName": self.original_name}, ensure_ascii=False) + "\n"


def parse_manifest_line(line: str, number: int) -> ManifestEntry:
    """One manifest line, checked: every field of the right type, a safe path, a sha256 in lower-case hex."""
    where = f"{MANIFEST_FILE} line {number}"
    try:
        raw = json.loads(line)
    except ValueError:
        raise errors.InvalidInput(f"{where} is not JSON") from None
    if not isinstance(raw, dict):
        raise errors.InvalidInput(f"{where} is not an object")
    tags, metadata = raw.get("tags", []), raw.get("metadata") or {}
    sha = raw.get("sha256")
    if not isinstance(sha, str) or not _SHA256.fullmatch(sha):
        raise errors.InvalidInput(f"{where}: sha256 must be 64 lower-case hex digits")
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise errors.InvalidInput(f"{where}: tags must be a list of names")
    if not isinstance(metadata, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                 for k, v in metadata.items()):
        raise errors.InvalidInput(f"{where}: metadata must map names to strings")
    source, original = raw.get("source", ""), raw.get("originalName", "")
    if not isinstance(source, str) or not isinstance(original, str):
        raise errors.InvalidInput(f"{where}: source and originalName must be strings")
    return ManifestEntry(check_member(raw.get("file")), sha, list(tags), dict(metadata), source, original)


@dataclass
class ArchiveTag:
    name: str
    type: TagType
    description: str = ""


@dataclass
class ArchiveSettings:
    name: str
    description: str
    domain: str
    classification_type: str
    threshold: float
    tags: list[ArchiveTag]

    def as_json(self, folders: dict[str, str] | None = None) -> dict[str, Any]:
        return {"format": FORMAT, "version": VERSION,
                "project": {"name": self.name, "description": self.description, "domain": self.domain,
                            "classificationType": self.classification_type, "threshold": self.threshold},
                "tags": [{"name": t.name, "type": t.type.value, "description": t.description}
                         | ({"folder": folders[t.name]} if folders and t.name in folders else {})
                         for t in self.tags]}


def parse_settings(data: bytes) -> ArchiveSettings:
    try:
        raw = json.loads(data)
    except ValueError:
        raise errors.InvalidInput(f"{SETTINGS_FILE} is not JSON") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise errors.InvalidInput(f"{SETTINGS_FILE} is not a cvbot dataset's settings")
    if raw.get("version") != VERSION:
        raise errors.InvalidInput(f"this archive is version {raw.get('version')!r}; this cvbot reads version {VERSION}")
    p, tags = raw.get("project"), raw.get("tags")
    if not isinstance(p, dict) or not isinstance(tags, list):
        raise errors.InvalidInput(f"{SETTINGS_FILE} needs 'project' and 'tags'")
    out: list[ArchiveTag] = []
    for t in tags:
        if not isinstance(t, dict) or not isinstance(t.get("name"), str) or \
                t.get("type") not in ("Regular", "Negative") or not isinstance(t.get("description", ""), str):
            raise errors.InvalidInput(f"{SETTINGS_FILE}: each tag needs a name, a type (Regular or Negative) and "
                                      "a description")
        out.append(ArchiveTag(t["name"], TagType(t["type"]), t.get("description", "")))
    threshold = p.get("threshold", 0.5)
    fields = (p.get("name"), p.get("description", ""), p.get("domain"), p.get("classificationType"))
    if not all(isinstance(f, str) for f in fields) or isinstance(threshold, bool) or \
            not isinstance(threshold, int | float):
        raise errors.InvalidInput(f"{SETTINGS_FILE}: the project needs a name, description, domain, "
                                  "classificationType and threshold")
    name, description, domain, ctype = (str(f) for f in fields)
    return ArchiveSettings(name, description, domain, ctype, float(threshold), out)


def sniff_format(data: bytes) -> str:
    """The image format from its first bytes (the extension of an archived file); '' when unknown."""
    if data[:3] == b"\xff\xd8\xff":
        return "JPEG"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "PNG"
    if data[:2] == b"BM":
        return "BMP"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return ""
