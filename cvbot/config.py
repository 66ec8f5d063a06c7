"""Settings, read once from the environment at the edge."""
from __future__ import annotations

import ipaddress
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from core.backbones import PROMPTS, BackboneSettings
from core.export import ExportSettings
from core.model import Domain

CLIP_DOMAINS = list(PROMPTS)
REPO_ROOT = Path(__file__).resolve().parents[1]
# where `make` puts the export converters' own virtualenv (TensorFlow and friends pin versions cvbot cannot share)
DEFAULT_EXPORT_PYTHON = REPO_ROOT / ".venv-export" / "bin" / "python"


@dataclass
class Settings:
    data_dir: Path = Path("data")
    database_url: str = ""
    model_dir: Path = Path("data/models")
    default_domain: Domain = Domain.Compact
    host: str = "127.0.0.1"
    port: int = 8080
    runtime: str = "auto"
    threads: int | None = None
    clip: dict[str, dict[str, str]] = field(default_factory=dict)
    training_key: str | None = None
    prediction_key: str | None = None
    allowed_url_hosts: list[str] = field(default_factory=list)
    slack_bot_token: str | None = None
    slack_signing_secret: str | None = None
    slack_app_token: str | None = None
    slack_api_url: str | None = None
    log_level: str = "INFO"
    public_url: str | None = None
    trusted_proxies: list[str] = field(default_factory=list)
    rate_limit: float | None = None
    rate_limits: dict[str, float] = field(default_factory=dict)
    secret_key: str | None = None
    link_ttl: int = 3600
    scheduled_jobs: bool = True
    retrain_at: str = "02:00"
    cleanup_at: str = "03:30"
    schedule_interval: float | None = None
    prediction_retention_days: int | None = None
    orphan_grace_seconds: float = 3600.0
    blob_url: str | None = None  # s3://bucket/prefix; None: blobs in data_dir/blobs
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    aws_access_key_id: str | None = None
    aws_secret_access_key: str | None = None
    aws_session_token: str | None = None
    s3_addressing_style: str | None = None
    export_python: str | None = None
    jobs: bool = True  # CVBOT_JOBS=off: on PostgreSQL, `cvbot serve` only enqueues (workers run the jobs)
    embed_chunk: int = 32  # with a queue: each upload's new images become embedding jobs of this many images

    @property
    def uses_postgres(self) -> bool:
        return self.database_url.startswith("postgresql")

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        data_dir = Path(env.get("CVBOT_DATA_DIR") or "data")
        clip = {}
        for d in CLIP_DOMAINS:
            cfg = {k: env.get(f"CVBOT_{d.upper()}_{k.upper()}") or env.get(f"CVBOT_CLIP_{k.upper()}") or ""
                   for k in ("model", "pretrained")}
            cfg["checkpoint"] = env.get(f"CVBOT_{d.upper()}_CHECKPOINT") or env.get("CVBOT_CLIP_CHECKPOINT") or ""
            clip[d] = {k: v for k, v in cfg.items() if v}
        threads = env.get("CVBOT_THREADS")
        return cls(
            data_dir=data_dir,
            database_url=env.get("DATABASE_URL") or f"sqlite:///{(data_dir / 'cvbot.db').resolve()}",
            model_dir=Path(env.get("CVBOT_MODEL_DIR") or data_dir / "models"),
            default_domain=Domain.parse(env.get("CVBOT_DEFAULT_DOMAIN") or "Compact"),
            host=env.get("CVBOT_HOST") or "127.0.0.1",
            port=int(env.get("PORT") or env.get("CVBOT_PORT") or 8080),
            runtime=env.get("CVBOT_RUNTIME") or "auto",
            threads=int(threads) if threads else None,
            clip=clip,
            training_key=env.get("CVBOT_TRAINING_KEY") or None,
            prediction_key=env.get("CVBOT_PREDICTION_KEY") or None,
            allowed_url_hosts=[h.strip().lower() for h in (env.get("CVBOT_ALLOWED_URL_HOSTS") or "").split(",")
                               if h.strip()],
            slack_bot_token=env.get("SLACK_BOT_TOKEN") or None,
            slack_signing_secret=env.get("SLACK_SIGNING_SECRET") or None,
            slack_app_token=env.get("SLACK_APP_TOKEN") or None,
            slack_api_url=env.get("SLACK_API_URL") or None,
            log_level=env.get("CVBOT_LOG_LEVEL") or "INFO",
            public_url=_public_url(env.get("CVBOT_PUBLIC_URL")),
            trusted_proxies=_networks(env.get("CVBOT_TRUSTED_PROXIES")),
            rate_limit=_rate(env.get("CVBOT_RATE_LIMIT"), "CVBOT_RATE_LIMIT"),
            rate_limits=_rates(env.get("CVBOT_RATE_LIMITS")),
            secret_key=env.get("CVBOT_SECRET_KEY") or None,
            link_ttl=_seconds(env.get("CVBOT_LINK_TTL"), "CVBOT_LINK_TTL", 3600),
            scheduled_jobs=_switch(env.get("CVBOT_SCHEDULED_JOBS"), "CVBOT_SCHEDULED_JOBS"),
            retrain_at=_time_of_day(env.get("CVBOT_RETRAIN_AT"), "CVBOT_RETRAIN_AT", "02:00"),
            cleanup_at=_time_of_day(env.get("CVBOT_CLEANUP_AT"), "CVBOT_CLEANUP_AT", "03:30"),
            schedule_interval=_positive(env.get("CVBOT_SCHEDULE_INTERVAL"), "CVBOT_SCHEDULE_INTERVAL"),
            prediction_retention_days=_retention(env.get("CVBOT_PREDICTION_RETENTION_DAYS")),
            orphan_grace_seconds=_positive(env.get("CVBOT_ORPHAN_GRACE_SECONDS"),
                                           "CVBOT_ORPHAN_GRACE_SECONDS") or 3600.0,
            blob_url=_blob_url(env.get("CVBOT_BLOB_URL")),
            s3_endpoint_url=env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or None,
            s3_region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None,
            aws_access_key_id=env.get("AWS_ACCESS_KEY_ID") or None,
            aws_secret_access_key=env.get("AWS_SECRET_ACCESS_KEY") or None,
            aws_session_token=env.get("AWS_SESSION_TOKEN") or None,
            s3_addressing_style=_choice(env.get("CVBOT_S3_ADDRESSING_STYLE"), "CVBOT_S3_ADDRESSING_STYLE",
                                        ("path", "virtual")),
            export_python=env.get("CVBOT_EXPORT_PYTHON") or (
                str(DEFAULT_EXPORT_PYTHON) if DEFAULT_EXPORT_PYTHON.exists() else None),
            jobs=_switch(env.get("CVBOT_JOBS"), "CVBOT_JOBS"),
            embed_chunk=_count(env.get("CVBOT_EMBED_CHUNK"), "CVBOT_EMBED_CHUNK", 32),
        )

    def schedule_settings(self):
        from core.usecases import ScheduleSettings

        return ScheduleSettings(prediction_retention_days=self.prediction_retention_days,
                                orphan_grace_seconds=self.orphan_grace_seconds)

    def backbone_settings(self) -> BackboneSettings:
        return BackboneSettings(cache_dir=str(self.model_dir), clip=self.clip, runtime=self.runtime,
                                threads=self.threads)

    def export_settings(self) -> ExportSettings:
        return ExportSettings(converter_python=self.export_python)

    def __repr__(self) -> str:  # never print secrets
        hidden = {"training_key", "prediction_key", "slack_bot_token", "slack_signing_secret", "slack_app_token",
                  "secret_key", "aws_access_key_id", "aws_secret_access_key", "aws_session_token"}
        parts = [f"{k}={'***' if k in hidden and v else v!r}" for k, v in self.__dict__.items() if k != "rate_limits"]
        parts.append(f"rate_limits=<{len(self.rate_limits)} keys>")
        return f"Settings({', '.join(parts)})"


def _blob_url(value: str | None) -> str | None:
    """CVBOT_BLOB_URL: where blobs live when not in the data directory, `s3://bucket` or `s3://bucket/prefix`."""
    if not value or not value.strip():
        return None
    url = value.strip().rstrip("/")
    scheme, sep, rest = url.partition("://")
    bucket = rest.partition("/")[0]
    if scheme.lower() != "s3" or not sep or not re.fullmatch(r"[a-z0-9][a-z0-9.\-_]{2,62}", bucket) \
            or any(c in rest for c in " ?#\\") or "//" in rest:
        raise ValueError(f"CVBOT_BLOB_URL must look like s3://bucket or s3://bucket/prefix, not {value!r}")
    return "s3://" + rest


def _choice(value: str | None, name: str, allowed: tuple[str, ...]) -> str | None:
    if value is None or not value.strip():
        return None
    if value.strip().lower() not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}, not {value!r}")
    return value.strip().lower()


def _public_url(value: str | None) -> str | None:
    """CVBOT_PUBLIC_URL: the scheme and host (and optional path prefix) links to this server start with."""
    if not value or not value.strip():
        return None
    url = value.strip().rstrip("/")
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in ("http", "https") or not rest or any(c in rest for c in " ?#@\\"):
        raise ValueError(f"CVBOT_PUBLIC_URL must look like https://cv.example.org, not {value!r}")
    return url


def _switch(value: str | None, name: str, default: bool = True) -> bool:
    if value is None or not value.strip():
        return default
    v = value.strip().lower()
    if v in ("on", "1", "true", "yes"):
        return True
    if v in ("off", "0", "false", "no"):
        return False
    raise ValueError(f"{name} must be on or off, not {value!r}")


def _count(value: str | None, name: str, default: int) -> int:
    """A whole number >= 0 (0 turns the feature off)."""
    if value is None or not value.strip():
        return default
    try:
        n = int(value)
    except ValueError:
        raise ValueError(f"{name} must be a whole number, not {value!r}") from None
    if n < 0:
        raise ValueError(f"{name} must be 0 or more, not {value!r}")
    return n


def _networks(value: str | None) -> list[str]:
    """CVBOT_TRUSTED_PROXIES: comma-separated addresses or networks (CIDR) whose X-Forwarded-* headers are believed."""
    out = []
    for item in (value or "").split(","):
        if item.strip():
            try:
                out.append(str(ipaddress.ip_network(item.strip(), strict=False)))
            except ValueError:
                raise ValueError(f"CVBOT_TRUSTED_PROXIES: {item.strip()!r} is not an address or network") from None
    return out


def _number(value: str | None, name: str, what: str, zero: bool) -> float | None:
    """A finite number read from the environment, None when unset or empty; `zero` admits 0, else it must be > 0."""
    if value is None or not value.strip():
        return None
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{name} must be a number of {what}, not {value!r}") from None
    if not math.isfinite(number) or number < 0 or (number == 0 and not zero):
        raise ValueError(f"{name} must be a {'' if zero else 'positive '}number of {what}, not {value!r}")
    return number


def _rate(value: str | None, name: str) -> float | None:
    """A requests-per-second limit; empty or 0 means none."""
    return _number(value, name, "requests per second", zero=True) or None


def _rates(value: str | None) -> dict[str, float]:
    """CVBOT_RATE_LIMITS: per-key overrides, "KEY:RATE,KEY2:RATE" (a rate of 0 means unlimited for that key)."""
    out = {}
    for item in (value or "").split(","):
        if not item.strip():
            continue
        key, sep, rate = item.strip().rpartition(":")
        if not sep or not key.strip():
            raise ValueError("CVBOT_RATE_LIMITS must look like KEY:RATE,KEY2:RATE")
        out[key.strip()] = _rate(rate, "CVBOT_RATE_LIMITS") or 0.0
    return out


def _seconds(value: str | None, name: str, default: int) -> int:
    """A lifetime in whole seconds (at least 1, at most a week: links are capabilities, they must expire)."""
    if value is None or not value.strip():
        return default
    try:
        seconds = int(value.strip())
    except ValueError:
        raise ValueError(f"{name} must be a number of seconds, not {value!r}") from None
    if not 1 <= seconds <= 7 * 24 * 3600:
        raise ValueError(f"{name} must be between 1 and 604800 seconds (a week), not {value!r}")
    return seconds


def _switch(value: str | None, name: str, default: bool = True) -> bool:
    if value is None or not value.strip():
        return default
    v = value.strip().lower()
    if v in ("on", "1", "true", "yes"):
        return True
    if v in ("off", "0", "false", "no"):
        return False
    raise ValueError(f"{name} must be on or off, not {value!r}")


def time_of_day(value: str, name: str) -> tuple[int, int]:
    """"HH:MM" (UTC, 24-hour clock) → (hour, minute)."""
    hh, sep, mm = value.strip().partition(":")
    if not sep or not hh.isdigit() or not mm.isdigit() or not (0 <= int(hh) <= 23 and 0 <= int(mm) <= 59):
        raise ValueError(f"{name} must be a UTC time of day like 02:30, not {value!r}")
    return int(hh), int(mm)


def _time_of_day(value: str | None, name: str, default: str) -> str:
    """A UTC time of day, HH:MM (checked here so a typo stops the server at start-up)."""
    text = (value or "").strip() or default
    time_of_day(text, name)
    return text


def _positive(value: str | None, name: str) -> float | None:
    return _number(value, name, "seconds", zero=False)


def _retention(value: str | None) -> int | None:
    """CVBOT_PREDICTION_RETENTION_DAYS: days stored predictions are kept (unset or 0: for ever)."""
    if value is None or not value.strip():
        return None
    v = value.strip()
    if not v.isdigit() or int(v) > 36500:
        raise ValueError(f"CVBOT_PREDICTION_RETENTION_DAYS must be a number of days (0: keep for ever), not {value!r}")
    return int(v) or None
