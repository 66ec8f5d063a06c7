"""Content-addressed blobs in an S3-compatible bucket (AWS S3, MinIO, SeaweedFS, Ceph RGW, Cloudflare R2): the
BlobStore port over boto3.

A blob's object key is `<prefix>/<k[0:2]>/<k[2:4]>/<k>` for its sha256 `k`, the same layout as the local store's
directory, so `aws s3 sync data/blobs s3://bucket/prefix` and back are valid copies too. Blobs up to
`multipart_threshold` bytes are written with one PUT (atomic: a reader sees the whole object or none; the same
bytes again overwrite themselves, one request where checking first would take two). Larger ones
are written as a multipart upload while their sha256 is checked, and completed only when it matches: an upload cut
off by a crash is an incomplete multipart upload, which is what `partial_files` lists and `delete_partial` aborts.
Listing pages through the bucket (1,000 keys a request) and yields as it goes; reads stream.
"""
from __future__ import annotations

import hashlib
import io
import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, BinaryIO

from core import errors
from core.ports import BlobStore, PartialFile

log = logging.getLogger(__name__)
_KEY = re.compile(r"^[0-9a-f]{64}$")
PART_SIZE = 16 << 20  # bytes per part of a multipart upload (S3 allows 5 MiB to 5 GiB, at most 10,000 parts)
MULTIPART_THRESHOLD = 32 << 20
_FULL_CODES = {"QuotaExceeded", "InsufficientStorage", "XMinioStorageFull", "StorageFull"}
_MISSING = {"404", "NoSuchKey", "NotFound"}


class BlobStoreUnavailable(errors.CvError):
    """The configured blob store cannot be used (bucket missing, unreachable, credentials refused)."""

    code = "ErrorStorageUnavailable"
    http_status = 503


@dataclass(frozen=True)
class S3Location:
    bucket: str
    prefix: str = ""

    @classmethod
    def parse(cls, url: str) -> S3Location:
        """`s3://bucket` or `s3://bucket/some/prefix` (ValueError otherwise)."""
        scheme, sep, rest = url.strip().partition("://")
        bucket, _, prefix = rest.partition("/")
        if scheme.lower() != "s3" or not sep or not re.fullmatch(r"[a-z0-9][a-z0-9.\-_]{2,62}", bucket) or \
                any(c in prefix for c in "?#\\") or "//" in prefix:
            raise ValueError(f"CVBOT_BLOB_URL must look like s3://bucket or s3://bucket/prefix, not {url!r}")
        return cls(bucket, prefix.strip("/"))

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"


@dataclass(frozen=True)
class S3Options:
    """How to reach the bucket. Unset fields are left to boto3's own lookup (environment, ~/.aws, instance role)."""

    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    session_token: str | None = None
    addressing_style: str | None = None  # "path" or "virtual"; default: path with a custom endpoint

    def __repr__(self) -> str:  # never print secrets
        return (f"S3Options(endpoint_url={self.endpoint_url!r}, region={self.region!r}, "
                f"access_key_id={'***' if self.access_key_id else None}, "
                f"secret_access_key={'***' if self.secret_access_key else None})")


def make_client(options: S3Options) -> Any:
    import boto3
    from botocore.config import Config

    for name in ("botocore", "boto3", "s3transfer", "urllib3"):  # their DEBUG logs carry signed request headers
        logger = logging.getLogger(name)
        if logger.getEffectiveLevel() < logging.INFO:
            logger.setLevel(logging.INFO)
    style = options.addressing_style or ("path" if options.endpoint_url else "auto")
    config = Config(s3={"addressing_style": style}, retries={"max_attempts": 5, "mode": "standard"},
                    connect_timeout=10, read_timeout=60, max_pool_connections=32,
                    # S3-compatible servers differ in which of the newer checksum headers they accept
                    request_checksum_calculation="when_required", response_checksum_validation="when_required")
    session = boto3.session.Session(aws_access_key_id=options.access_key_id,
                                    aws_secret_access_key=options.secret_access_key,
                                    aws_session_token=options.session_token, region_name=options.region)
    return session.client("s3", endpoint_url=options.endpoint_url, config=config)


def _code(e: BaseException) -> str:
    return str(getattr(e, "response", {}).get("Error", {}).get("Code", ""))


class S3BlobStore(BlobStore):
    shared = True  # every machine of the install writes here

    def __init__(self, location: S3Location | str, client: Any = None, options: S3Options | None = None,
                 multipart_threshold: int = MULTIPART_THRESHOLD, part_size: int = PART_SIZE):
        self.location = S3Location.parse(location) if isinstance(location, str) else location
        self.bucket = self.location.bucket
        self.options = options or S3Options()
        self.client = client if client is not None else make_client(self.options)
        self.multipart_threshold = max(multipart_threshold, 5 << 20)
        self.part_size = max(part_size, 5 << 20)
        self._base = f"{self.location.prefix}/" if self.location.prefix else ""
        self._page_size = 1000  # keys per listing request (S3's most)

    def __repr__(self) -> str:
        return f"S3BlobStore({self.location}, endpoint={self.options.endpoint_url or 'AWS'})"

    # ------------------------------------------------------------------ set-up
    def check(self) -> None:
        """Fail now, with what to change, when the bucket cannot be used: missing, unreachable, or the
        credentials refused. Reads one page of the listing, so read and list rights are checked too."""
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            EndpointConnectionError,
            NoCredentialsError,
        )

        where = f"{self.location} (endpoint {self.options.endpoint_url or 'AWS S3'})"
        try:
            self.client.list_objects_v2(Bucket=self.bucket, Prefix=self._base, MaxKeys=1)
        except NoCredentialsError:
            raise BlobStoreUnavailable(f"no S3 credentials for {where}: set AWS_ACCESS_KEY_ID and "
                                       "AWS_SECRET_ACCESS_KEY (or a profile or instance role)") from None
        except EndpointConnectionError as e:
            raise BlobStoreUnavailable(f"cannot reach the S3 endpoint for {where}: {e}; check AWS_ENDPOINT_URL "
                                       "and that the server runs") from None
        except ClientError as e:
            code = _code(e)
            if code in ("NoSuchBucket", "404"):
                raise BlobStoreUnavailable(f"the bucket '{self.bucket}' does not exist at {where}; create it or "
                                           "fix CVBOT_BLOB_URL") from None
            if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403",
                        "InvalidToken", "ExpiredToken"):
                raise BlobStoreUnavailable(f"the S3 server refused the credentials for {where} ({code}); check "
                                           "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY and the bucket's "
                                           "permissions (list, read, write, delete)") from None
            raise BlobStoreUnavailable(f"the blob store {where} answered {code or e}") from None
        except BotoCoreError as e:
            raise BlobStoreUnavailable(f"cannot use the blob store {where}: {e}") from None

    # ------------------------------------------------------------------ keys
    def _object(self, key: str) -> str:
        if not _KEY.match(key):
            raise ValueError(f"not a blob key: {key!r}")
        return f"{self._base}{key[:2]}/{key[2:4]}/{key}"

    def _pages(self, **kwargs: Any) -> Iterator[dict[str, Any]]:
        token = None
        while True:
            page = self.client.list_objects_v2(Bucket=self.bucket, Prefix=self._base, MaxKeys=self._page_size,
                                               **kwargs,
                                               **({"ContinuationToken": token} if token else {}))
            yield page
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return

    def keys(self) -> Iterable[str]:
        for page in self._pages():
            for obj in page.get("Contents", []):
                name = obj["Key"].rsplit("/", 1)[-1]
                if _KEY.match(name) and obj["Key"] == self._object(name):
                    yield name

    # ------------------------------------------------------------------ reads
    def get(self, key: str) -> bytes:
        with self.open(key) as body:
            data: bytes = body.read()
        return data

    def open(self, key: str) -> BinaryIO:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._object(key))
        except Exception as e:
            if _code(e) in _MISSING:
                raise KeyError(key) from None
            raise
        body: BinaryIO = response["Body"]  # botocore's StreamingBody: read(n) pulls from the socket
        return body

    def _head(self, key: str) -> dict[str, Any] | None:
        try:
            head: dict[str, Any] = self.client.head_object(Bucket=self.bucket, Key=self._object(key))
            return head
        except Exception as e:
            if _code(e) in _MISSING:
                return None
            raise

    def exists(self, key: str) -> bool:
        return self._head(key) is not None

    def size(self, key: str) -> int:
        head = self._head(key)
        if head is None:
            raise KeyError(key)
        return int(head["ContentLength"])

    def age_seconds(self, key: str) -> float | None:
        head = self._head(key)
        if head is None:
            return None
        return max(0.0, (datetime.now(UTC) - head["LastModified"]).total_seconds())

    # ------------------------------------------------------------------ writes
    def put(self, data: bytes) -> str:
        key = hashlib.sha256(data).hexdigest()
        if len(data) <= self.multipart_threshold:
            # one request: storing the same bytes again under their own key is harmless, and makes the blob young
            self._put_object(key, data)
        elif not self._refresh(key):
            self._multipart(io.BytesIO(data), key)
        return key

    def _refresh(self, key: str) -> bool:
        """Whether large blob `key` is stored; if so its modification time becomes now (a copy onto itself, rather
        than uploading it again), so orphan collection on another machine takes it for a new write until the row
        naming it is committed."""
        name = self._object(key)
        try:
            self.client.copy_object(Bucket=self.bucket, Key=name, CopySource={"Bucket": self.bucket, "Key": name},
                                    MetadataDirective="REPLACE", ContentType="application/octet-stream")
            return True
        except Exception as e:
            if _code(e) in _MISSING:
                return False
            if self.exists(key):  # a store that cannot copy in place (or an object over 5 GB): keep it as it is
                log.debug("could not refresh blob %s: %s", key, e)
                return True
            return False

    def _put_object(self, key: str, data: bytes) -> None:
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._object(key), Body=data,
                                   ContentType="application/octet-stream")
        except Exception as e:
            self._raise_full(e, len(data))
            raise

    def _raise_full(self, e: BaseException, size: int) -> None:
        status = getattr(e, "response", {}).get("ResponseMetadata", {}).get("HTTPStatusCode")
        if _code(e) in _FULL_CODES or status == 507:
            from .blobs import storage_full

            raise storage_full(f"{size:,} bytes", self.location, e) from e

    def put_stream(self, stream: BinaryIO, key: str) -> int:
        """Small content in one PUT; larger content part by part (bounded memory: one part), completed only when
        its sha256 is `key`."""
        self._object(key)
        head = _read_full(stream, self.multipart_threshold + 1)
        if len(head) <= self.multipart_threshold:
            if hashlib.sha256(head).hexdigest() != key:
                raise ValueError(f"the content does not match its key {key}: nothing was stored")
            self._put_object(key, head)
            return len(head)
        if self._refresh(key):  # stored already: only check that the content is what its key says
            digest, size = hashlib.sha256(head), len(head)
            while chunk := stream.read(PART_SIZE):
                digest.update(chunk)
                size += len(chunk)
            if digest.hexdigest() != key:
                raise ValueError(f"the content does not match its key {key}")
            return size
        return self._multipart(_Chained(head, stream), key)

    def _multipart(self, stream: BinaryIO, key: str) -> int:
        name = self._object(key)
        upload = self.client.create_multipart_upload(Bucket=self.bucket, Key=name,
                                                     ContentType="application/octet-stream")["UploadId"]
        digest, size, parts = hashlib.sha256(), 0, []
        try:
            while chunk := _read_full(stream, self.part_size):
                digest.update(chunk)
                size += len(chunk)
                etag = self.client.upload_part(Bucket=self.bucket, Key=name, UploadId=upload,
                                               PartNumber=len(parts) + 1, Body=chunk)["ETag"]
                parts.append({"ETag": etag, "PartNumber": len(parts) + 1})
            if digest.hexdigest() != key:
                raise ValueError(f"the content does not match its key {key}: nothing was stored")
            self.client.complete_multipart_upload(Bucket=self.bucket, Key=name, UploadId=upload,
                                                  MultipartUpload={"Parts": parts})
        except BaseException as e:
            try:
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=name, UploadId=upload)
            except Exception:  # left for partial_files / doctor to find
                log.warning("could not abort the multipart upload of %s; cvbot doctor --repair removes it", key)
            self._raise_full(e, size)
            raise
        return size

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._object(key))  # absent is not an error in S3

    # ------------------------------------------------------------------ partial writes
    def partial_files(self, older_than: float = 0.0) -> list[PartialFile]:
        """Incomplete multipart uploads under the prefix (a write of a large blob cut off by a crash)."""
        found, now = [], datetime.now(UTC)
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self._base}
        while True:
            page = self.client.list_multipart_uploads(**kwargs)
            for up in page.get("Uploads", []):
                age = max(0.0, (now - up["Initiated"]).total_seconds())
                if age >= older_than:
                    found.append(PartialFile(f"{up['Key']}?uploadId={up['UploadId']}", self._uploaded(up), age))
            if not page.get("IsTruncated"):
                break
            kwargs.update(KeyMarker=page.get("NextKeyMarker", ""), UploadIdMarker=page.get("NextUploadIdMarker", ""))
        return sorted(found, key=lambda p: p.name)

    def _uploaded(self, upload: dict[str, Any]) -> int:
        try:
            parts = self.client.list_parts(Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"])
            return sum(int(p.get("Size", 0)) for p in parts.get("Parts", []))
        except Exception:
            return 0

    def delete_partial(self, name: str) -> None:
        key, sep, upload = name.partition("?uploadId=")
        if not sep or not upload or not key.startswith(self._base):
            raise ValueError(f"not a partial upload of this store: {name!r}")
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload)
        except Exception as e:
            if _code(e) not in ("NoSuchUpload", "404"):
                raise


def _read_full(stream: BinaryIO, n: int) -> bytes:
    """Up to `n` bytes, fewer only at the end of `stream` (a socket's read may return less than asked)."""
    chunks, got = [], 0
    while got < n:
        chunk = stream.read(n - got)
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


class _Chained(io.RawIOBase):
    """`head` then the rest of `stream`, read in pieces."""

    def __init__(self, head: bytes, stream: BinaryIO):
        self._head, self._stream = memoryview(head), stream

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        if self._head.nbytes:
            size = self._head.nbytes if n is None or n < 0 else min(n, self._head.nbytes)
            out, self._head = bytes(self._head[:size]), self._head[size:]
            if n is None or n < 0:
                out += self._stream.read()
            return out
        return self._stream.read(n)
