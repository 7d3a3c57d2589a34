"""Typed settings read from the environment in one place.

`Settings.from_env(environ)` takes the mapping explicitly so tests never touch os.environ.
Every problem is reported as ConfigError naming the variable.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote, urlsplit

from paysched.db.engine import read_url
from paysched.errors import ConfigError, InvalidInput
from paysched.notify.targets import normalise_targets, parse_events
from paysched.redaction import url_password
from paysched.redis_client import SentinelTarget, parse_nodes, sentinel_target
from paysched.schedules import parse_duration, validate_cron

DEFAULT_REDIS_HOST = "localhost"
MS = timedelta(milliseconds=1)
_INT = re.compile(r"\A-?[0-9]{1,18}\Z")
DEFAULT_REDIS_PORT = 6379

KNOWN_VARIABLES = (
    "REDIS_URL",
    "REDIS_HOST",
    "REDIS_PORT",
    "REDIS_PASSWORD",
    "REDIS_SENTINELS",
    "REDIS_SENTINEL_MASTER",
    "REDIS_SENTINEL_PASSWORD",
    "DATABASE_URL",
    "PAYSCHED_DATA_DIR",
    "PAYSCHED_QUEUE",
    "PAYSCHED_QUEUE_PREFIX",
    "PAYSCHED_CONCURRENCY",
    "PAYSCHED_ATTEMPTS",
    "PAYSCHED_BACKOFF_MS",
    "PAYSCHED_BACKOFF_JITTER",
    "PAYSCHED_TICK_CRON",
    "PAYSCHED_LOOKAHEAD",
    "PAYSCHED_LOCK_MS",
    "PAYSCHED_SHUTDOWN_GRACE",
    "PAYSCHED_KEEP_COMPLETED",
    "PAYSCHED_EMBEDDED_REDIS",
    "PAYSCHED_LOG_LEVEL",
    "PAYSCHED_LOG_FORMAT",
    "TELEGRAM_BOT_TOKEN",
    "TELEGRAM_API_URL",
    "PAYSCHED_WEBHOOK_SECRET",
    "PAYSCHED_NOTIFY",
    "PAYSCHED_NOTIFY_EVENTS",
    "PAYSCHED_NOTIFY_POLL",
    "PAYSCHED_NOTIFY_MAX_ATTEMPTS",
    "PAYSCHED_EXECUTOR",
    "PAYSCHED_PROVIDER_URL",
    "PAYSCHED_PROVIDER_TOKEN",
    "PAYSCHED_PROVIDER_CONNECT_TIMEOUT",
    "PAYSCHED_PROVIDER_TIMEOUT",
    "PAYSCHED_RESOLVE_WINDOW",
    "PAYSCHED_RESOLVE_MAX_INTERVAL",
    "PAYSCHED_WEBHOOK_ALLOW_PRIVATE",
    "PAYSCHED_API_RATE_LIMIT",
    "PAYSCHED_METRICS_PUBLIC",
    "PAYSCHED_IDEMPOTENCY_RETENTION",
    "PAYSCHED_METRICS_LISTEN",
    "PAYSCHED_CATCHUP_LATE_AFTER",
    "PAYSCHED_PROCESSES",
    "PAYSCHED_RECONCILE_CRON",
    "PAYSCHED_RECONCILE_NOTIFY",
    "PAYSCHED_DASHBOARD_IDLE",
    "PAYSCHED_DASHBOARD_LIFETIME",
    "PAYSCHED_BOT",
    "PAYSCHED_BOT_USERNAME",
    "PAYSCHED_LINK_TTL",
)


@dataclass(frozen=True, slots=True)
class Settings:
    # A Redis URL, or under Sentinel a redis+sentinel:// URL (paysched.redis_client).
    redis_url: str
    # True when the user named a Redis (REDIS_URL / REDIS_HOST / REDIS_PORT / REDIS_SENTINELS);
    # otherwise paysched
    # may fall back to its embedded server when nothing answers on localhost:6379.
    redis_explicit: bool
    embedded_redis: str  # "auto" | "always" | "never"
    database_url: str
    data_dir: Path
    queue_name: str = "payments"
    queue_prefix: str = "paysched"
    concurrency: int = 3
    # Worker processes of `run` / `worker` (0: one per core); they share `concurrency`.
    processes: int = 0
    attempts: int = 3
    backoff_ms: int = 2000
    backoff_jitter: float = 0.2
    tick_cron: str = "* * * * *"
    lookahead: timedelta = timedelta(minutes=5)
    # An occurrence found (created or resumed) longer than this after it fell due is late:
    # its payment's catch-up policy decides whether it runs. Keep it longer than a scheduler
    # tick: with a short look-ahead an on-time occurrence is created up to a tick after it
    # fell due, and would count as late.
    catchup_late_after: timedelta = timedelta(seconds=60)
    lock_ms: int = 30_000
    shutdown_grace: timedelta = timedelta(seconds=30)
    keep_completed: int = 10_000
    log_level: str = "INFO"
    log_format: str = "plain"  # or "json": one object per line
    # Secrets stay out of repr() so that settings can be logged.
    telegram_token: str = field(default="", repr=False)
    telegram_api_url: str = "https://api.telegram.org"
    webhook_secret: str = field(default="", repr=False)
    webhook_allow_private: bool = False
    notify_default: tuple[str, ...] = ("log",)
    notify_events: frozenset[str] = frozenset(
        {"succeeded", "failed", "retrying", "needs_review", "missed"}
    )
    notify_poll: timedelta = timedelta(seconds=1)
    notify_max_attempts: int = 10
    # "ledger" (paysched's own accounts), "http" (a provider behind the generic JSON contract)
    # or "package.module:factory" (the user's own; the factory gets these settings).
    executor: str = "ledger"
    provider_url: str = ""
    provider_token: str = field(default="", repr=False)
    provider_connect_timeout: timedelta = timedelta(seconds=5)
    provider_timeout: timedelta = timedelta(seconds=30)
    # How long the resolver keeps asking about an unknown outcome before a person must decide,
    # and the longest wait between two of its questions.
    resolve_window: timedelta = timedelta(days=3)
    resolve_max_interval: timedelta = timedelta(hours=1)
    # The HTTP API: requests per second per API key (bursts of twice that), whether /metrics
    # answers without a key, and how long idempotency keys are remembered.
    api_rate_limit: int = 100
    metrics_public: bool = False
    idempotency_retention: timedelta = timedelta(days=30)
    # A dashboard sign-in ends after this long without a request, and this long after it
    # began whatever happens (see db.sessions).
    dashboard_idle: timedelta = timedelta(minutes=30)
    dashboard_lifetime: timedelta = timedelta(hours=12)
    # A bare Prometheus endpoint of a `run` / `worker` / `scheduler` process (host, port): its
    # own counters and histograms, for processes that serve no API.
    metrics_listen: tuple[str, int] | None = None
    # Scheduled reconciliation inside `paysched run` (empty: none): at each fire time the
    # previous UTC day is reconciled, once across processes; discrepancies notify these
    # targets (default: PAYSCHED_NOTIFY's).
    reconcile_cron: str = ""
    reconcile_notify: tuple[str, ...] = ("log",)
    # The Telegram bot (paysched.bot): whether `paysched run` also runs it (off unless asked:
    # a deployment that only sends notifications with TELEGRAM_BOT_TOKEN must not start
    # answering chats after an upgrade), its username for deep links (else asked with getMe),
    # and how long a link token lasts.
    bot: bool = False
    bot_username: str = ""
    link_ttl: timedelta = timedelta(minutes=15)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = dict(os.environ if environ is None else environ)
        allow_private = _flag(env, "PAYSCHED_WEBHOOK_ALLOW_PRIVATE")
        data_dir = _data_dir(env)
        redis_url, explicit = _redis_url(env)
        embedded = env.get("PAYSCHED_EMBEDDED_REDIS", "auto").strip().lower()
        if embedded not in ("auto", "always", "never"):
            raise ConfigError(
                "PAYSCHED_EMBEDDED_REDIS", f"expected auto, always or never, got {embedded!r}"
            )
        database_url = _database_url(env, data_dir)
        settings = cls(
            redis_url=redis_url,
            redis_explicit=explicit,
            embedded_redis=embedded,
            database_url=normalise_database_url(database_url),
            data_dir=data_dir,
            queue_name=_name(env, "PAYSCHED_QUEUE", "payments"),
            queue_prefix=_name(env, "PAYSCHED_QUEUE_PREFIX", "paysched"),
            concurrency=_int(env, "PAYSCHED_CONCURRENCY", 3, 1, 10_000),
            processes=_int(env, "PAYSCHED_PROCESSES", 0, 0, 1024),
            attempts=_int(env, "PAYSCHED_ATTEMPTS", 3, 1, 100),
            backoff_ms=_int(env, "PAYSCHED_BACKOFF_MS", 2000, 1, 86_400_000),
            backoff_jitter=_fraction(env, "PAYSCHED_BACKOFF_JITTER", 0.2),
            tick_cron=_cron(env, "PAYSCHED_TICK_CRON", "* * * * *"),
            lookahead=_duration(env, "PAYSCHED_LOOKAHEAD", "5m"),
            catchup_late_after=_duration(env, "PAYSCHED_CATCHUP_LATE_AFTER", "60s", low=MS),
            lock_ms=_int(env, "PAYSCHED_LOCK_MS", 30_000, 1000, 3_600_000),
            shutdown_grace=_duration(env, "PAYSCHED_SHUTDOWN_GRACE", "30s"),
            keep_completed=_int(env, "PAYSCHED_KEEP_COMPLETED", 10_000, 0, 10_000_000),
            log_level=_choice(
                env, "PAYSCHED_LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR")
            ),
            log_format=_choice(env, "PAYSCHED_LOG_FORMAT", "PLAIN", ("PLAIN", "JSON")).lower(),
            telegram_token=env.get("TELEGRAM_BOT_TOKEN", "").strip(),
            telegram_api_url=_http_url(env, "TELEGRAM_API_URL", "https://api.telegram.org"),
            webhook_secret=env.get("PAYSCHED_WEBHOOK_SECRET", ""),
            webhook_allow_private=allow_private,
            notify_default=_targets(env, "PAYSCHED_NOTIFY", "log", allow_private),
            notify_events=_events(
                env, "PAYSCHED_NOTIFY_EVENTS", "succeeded,failed,retrying,needs_review,missed"
            ),
            notify_poll=_duration(env, "PAYSCHED_NOTIFY_POLL", "1s", low=MS * 10),
            notify_max_attempts=_int(env, "PAYSCHED_NOTIFY_MAX_ATTEMPTS", 10, 1, 1000),
            executor=_executor(env, "PAYSCHED_EXECUTOR"),
            provider_url=env.get("PAYSCHED_PROVIDER_URL", "").strip().rstrip("/"),
            provider_token=env.get("PAYSCHED_PROVIDER_TOKEN", "").strip(),
            provider_connect_timeout=_duration(
                env, "PAYSCHED_PROVIDER_CONNECT_TIMEOUT", "5s", low=MS * 100
            ),
            provider_timeout=_duration(env, "PAYSCHED_PROVIDER_TIMEOUT", "30s", low=MS * 100),
            resolve_window=_duration(
                env, "PAYSCHED_RESOLVE_WINDOW", "3d", low=timedelta(1 / 86400)
            ),
            resolve_max_interval=_duration(
                env, "PAYSCHED_RESOLVE_MAX_INTERVAL", "1h", low=timedelta(seconds=1)
            ),
            api_rate_limit=_int(env, "PAYSCHED_API_RATE_LIMIT", 100, 1, 1_000_000),
            metrics_listen=_listen(env, "PAYSCHED_METRICS_LISTEN"),
            reconcile_cron=_optional_cron(env, "PAYSCHED_RECONCILE_CRON"),
            reconcile_notify=_targets(
                env,
                "PAYSCHED_RECONCILE_NOTIFY",
                env.get("PAYSCHED_NOTIFY", "").strip() or "log",
                allow_private,
            ),
            metrics_public=_flag(env, "PAYSCHED_METRICS_PUBLIC"),
            # Clients retry with the same key for days; 30 days is the floor the API promises.
            idempotency_retention=_duration(
                env, "PAYSCHED_IDEMPOTENCY_RETENTION", "30d", low=timedelta(days=30)
            ),
            # Longer than the minute between two writes of a session's last use, or a session
            # in use could end between them.
            dashboard_idle=_duration(
                env, "PAYSCHED_DASHBOARD_IDLE", "30m", low=timedelta(minutes=2)
            ),
            dashboard_lifetime=_duration(
                env, "PAYSCHED_DASHBOARD_LIFETIME", "12h", low=timedelta(minutes=2)
            ),
            bot=_flag(env, "PAYSCHED_BOT"),
            bot_username=_bot_username(env, "PAYSCHED_BOT_USERNAME"),
            # Long enough to open the link on a phone, short enough that a link forwarded by
            # mistake is soon worth nothing.
            link_ttl=_duration(env, "PAYSCHED_LINK_TTL", "15m", low=timedelta(minutes=1)),
        )
        if settings.link_ttl > timedelta(days=7):
            raise ConfigError("PAYSCHED_LINK_TTL", "must be at most 7d")
        if settings.bot and not settings.telegram_token:
            raise ConfigError("PAYSCHED_BOT", "the bot needs TELEGRAM_BOT_TOKEN, which is not set")
        if settings.executor == "http":
            if not settings.provider_url:
                raise ConfigError("PAYSCHED_PROVIDER_URL", "required with PAYSCHED_EXECUTOR=http")
            if not settings.provider_url.startswith(("http://", "https://")):
                raise ConfigError(
                    "PAYSCHED_PROVIDER_URL",
                    f"expected an http(s):// URL, got {settings.provider_url!r}",
                )
        # A default target on a channel that is not set up would make every notification of
        # every payment dead on arrival: refuse it here, as one line naming what to set.
        needs = {
            "telegram": ("TELEGRAM_BOT_TOKEN", settings.telegram_token),
            "webhook": ("PAYSCHED_WEBHOOK_SECRET", settings.webhook_secret),
        }
        for target, source in [(t, "PAYSCHED_NOTIFY") for t in settings.notify_default] + [
            (t, "PAYSCHED_RECONCILE_NOTIFY") for t in settings.reconcile_notify
        ]:
            variable, value = needs.get(target.split(":", 1)[0], ("", "set"))
            if not value:
                raise ConfigError(
                    source, f"{target.split(':', 1)[0]} targets need {variable}, which is not set"
                )
        return settings

    def secrets(self) -> list[str]:
        """Every secret value configured: never to appear in a log or an error."""
        return [
            self.telegram_token,
            self.webhook_secret,
            self.provider_token,
            url_password(self.redis_url),
            url_password(self.database_url),
            *self._sentinel_secrets(),
        ]

    def _sentinel_secrets(self) -> list[str]:
        """Under Sentinel: the sentinels' password and the data nodes' as given (the URL
        holds it quoted)."""
        target = sentinel_target(self.redis_url)
        if target is None:
            return []
        return [p for p in (target.sentinel_password, target.password) if p]

    def with_overrides(self, **changes: object) -> Settings:
        return replace(self, **changes)  # type: ignore[arg-type]


def _data_dir(env: Mapping[str, str]) -> Path:
    path = Path(env.get("PAYSCHED_DATA_DIR") or _default_data_dir(env)).expanduser()
    if path.exists() and not path.is_dir():
        raise ConfigError("PAYSCHED_DATA_DIR", f"{str(path)!r} exists and is not a directory")
    return path


def _database_url(env: Mapping[str, str], data_dir: Path) -> str:
    raw = env.get("DATABASE_URL", "").strip()
    if not raw:
        return f"sqlite:///{data_dir / 'paysched.db'}"
    if not raw.startswith(("sqlite:", "postgresql:", "postgresql+", "postgres:")):
        raise ConfigError("DATABASE_URL", "expected a sqlite:/// or postgresql:// URL")
    try:
        url = read_url(normalise_database_url(raw))
    except ValueError:
        raise ConfigError("DATABASE_URL", "is not a valid database URL") from None
    hosts = url.query.get("host", ())
    if not isinstance(hosts, str):  # ?host=h1:5432&host=h2:5432: SQLAlchemy splits at ":"
        for host in hosts:
            name, _, port = host.partition(":")
            if not name or (port and not (port.isdigit() and 0 < int(port) < 65536)):
                raise ConfigError(
                    "DATABASE_URL",
                    f"cannot read ?host={host} (expected ?host=h1:5432&host=h2:5432)",
                )
    if url.get_backend_name() == "sqlite" and (url.host or url.port):
        raise ConfigError(
            "DATABASE_URL",
            "SQLite URLs have three slashes: sqlite:///relative.db or sqlite:////absolute/path.db",
        )
    return raw


def _default_data_dir(env: Mapping[str, str]) -> str:
    base = env.get("XDG_DATA_HOME") or str(Path(env.get("HOME", ".")) / ".local" / "share")
    return str(Path(base) / "paysched")


def _redis_url(env: Mapping[str, str]) -> tuple[str, bool]:
    url = env.get("REDIS_URL", "").strip()
    if env.get("REDIS_SENTINELS", "").strip():
        return _sentinel_url(env), True
    if url:
        problem = _redis_url_problem(url)
        if problem:
            raise ConfigError("REDIS_URL", f"{problem} (expected redis://host:port/db)")
        return url, True
    host = env.get("REDIS_HOST", "").strip()
    port_text = env.get("REDIS_PORT", "").strip()
    password = env.get("REDIS_PASSWORD", "")
    port = DEFAULT_REDIS_PORT
    if port_text:
        port = _int(env, "REDIS_PORT", DEFAULT_REDIS_PORT, 1, 65535)
    auth = f":{quote(password, safe='')}@" if password else ""
    explicit = bool(host or port_text or password)
    return f"redis://{auth}{host or DEFAULT_REDIS_HOST}:{port}/0", explicit


def _sentinel_url(env: Mapping[str, str]) -> str:
    """REDIS_SENTINELS + REDIS_SENTINEL_MASTER (+ passwords) as one redis+sentinel:// URL."""
    for other in ("REDIS_URL", "REDIS_HOST", "REDIS_PORT"):
        if env.get(other, "").strip():
            raise ConfigError(
                other,
                "cannot be used with REDIS_SENTINELS: the sentinels name the primary "
                "(unset one of the two)",
            )
    try:
        nodes = parse_nodes(env["REDIS_SENTINELS"])
    except ValueError as exc:
        raise ConfigError("REDIS_SENTINELS", str(exc)) from None
    master = env.get("REDIS_SENTINEL_MASTER", "").strip()
    if not master:
        raise ConfigError(
            "REDIS_SENTINEL_MASTER",
            "is required with REDIS_SENTINELS: the name the sentinels monitor "
            "(sentinel monitor NAME host port quorum)",
        )
    return SentinelTarget(
        nodes=nodes,
        master=master,
        password=env.get("REDIS_PASSWORD") or None,
        sentinel_password=env.get("REDIS_SENTINEL_PASSWORD") or None,
    ).url()


def _redis_url_problem(url: str) -> str | None:
    try:  # the one URL REDIS_SENTINELS is written as is accepted too
        if sentinel_target(url) is not None:
            return None
    except ValueError as exc:
        return str(exc)
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss", "unix"):
        return "unknown scheme"
    if parts.scheme == "unix":
        return None if parts.path else "a unix:// URL needs a socket path"
    try:
        port = parts.port
    except ValueError:
        return "the port is not a number between 1 and 65535"
    if not parts.hostname:
        return "no host"
    if port == 0:
        return "the port is not a number between 1 and 65535"
    db = parts.path.lstrip("/")
    if db and not (db.isascii() and db.isdigit() and int(db) < 16_384):
        return f"the database number {db!r} is not a number"
    return None


def normalise_database_url(url: str) -> str:
    """Route postgresql:// URLs to psycopg 3, the driver paysched ships with, with several
    hosts (h1:5432,h2:5432, libpq's form) written as ?host=h1,h2&port=5432,5432 (the form
    SQLAlchemy reads). ConfigError for a host list it cannot read."""
    for plain in ("postgres://", "postgresql://"):
        if url.startswith(plain):
            url = "postgresql+psycopg://" + url[len(plain) :]
            break
    if url.startswith("postgresql"):
        # engine.py imports nothing heavy (SQLAlchemy is imported here already).
        from paysched.db.engine import multihost_query_form

        url = multihost_query_form(url)
    return url


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if not _INT.match(raw):  # int() would also take '١٢', '1_000' and ' +5'
        raise ConfigError(name, f"expected an integer, got {raw!r}")
    value = int(raw)
    if not low <= value <= high:
        raise ConfigError(name, f"must be between {low} and {high}, got {value}")
    return value


def _fraction(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(name, f"expected a number between 0 and 1, got {raw!r}") from None
    if not 0.0 <= value <= 1.0:
        raise ConfigError(name, f"must be between 0 and 1, got {raw}")
    return value


def _duration(
    env: Mapping[str, str], name: str, default: str, low: timedelta = timedelta(0)
) -> timedelta:
    raw = env.get(name, "").strip() or default
    try:
        value = parse_duration(raw, name)
    except InvalidInput as exc:
        raise ConfigError(name, exc.problem) from None
    if value < low:
        raise ConfigError(name, f"must be at least {low.total_seconds():g}s, got {raw!r}")
    return value


def _cron(env: Mapping[str, str], name: str, default: str) -> str:
    raw = env.get(name, "").strip() or default
    try:
        return validate_cron(raw, name, allow_seconds=True)  # 6 fields: seconds first
    except InvalidInput as exc:
        raise ConfigError(name, exc.problem) from None


def _optional_cron(env: Mapping[str, str], name: str) -> str:
    """A cron expression, or "" when the variable is unset or empty (the feature is off)."""
    return _cron(env, name, "") if env.get(name, "").strip() else ""


def _name(env: Mapping[str, str], name: str, default: str) -> str:
    raw = env.get(name, "").strip() or default
    if not raw.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise ConfigError(name, f"use letters, digits, '-', '_' or '.', got {raw!r}")
    return raw


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    raw = (env.get(name, "").strip() or default).upper()
    if raw not in choices:
        raise ConfigError(name, f"expected one of {', '.join(choices)}, got {raw!r}")
    return raw


def _executor(env: Mapping[str, str], name: str) -> str:
    raw = env.get(name, "").strip() or "ledger"
    if raw in ("ledger", "http"):
        return raw
    module, _, factory = raw.partition(":")
    if not (
        module
        and factory
        and all(p.isidentifier() for p in module.split("."))
        and factory.isidentifier()
    ):
        raise ConfigError(name, f"expected ledger, http or package.module:factory, got {raw!r}")
    return raw


def _http_url(env: Mapping[str, str], name: str, default: str) -> str:
    raw = env.get(name, "").strip() or default
    if not raw.startswith(("http://", "https://")):
        raise ConfigError(name, f"expected an http(s):// URL, got {raw!r}")
    return raw


def _listen(env: Mapping[str, str], name: str) -> tuple[str, int] | None:
    """HOST:PORT, or PORT alone for 127.0.0.1; empty: off."""
    raw = env.get(name, "").strip()
    if not raw:
        return None
    host, sep, port = raw.rpartition(":")
    host = host.strip("[]") if sep else "127.0.0.1"
    if not port.isascii() or not port.isdigit() or not 1 <= int(port) <= 65535 or not host:
        raise ConfigError(name, f"expected HOST:PORT with a port 1-65535, got {raw!r}")
    return host, int(port)


_BOT_USERNAME = re.compile(r"\A[A-Za-z][A-Za-z0-9_]{3,31}\Z")


def _bot_username(env: Mapping[str, str], name: str) -> str:
    """Telegram's bot usernames: 5-32 letters, digits and underscores (a leading @ is
    dropped)."""
    raw = env.get(name, "").strip().removeprefix("@")
    if raw and not _BOT_USERNAME.match(raw):
        raise ConfigError(name, f"expected a Telegram bot username like paysched_bot, got {raw!r}")
    return raw


def _flag(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise ConfigError(name, f"expected 1/true/yes or 0/false/no, got {raw!r}")


def _targets(
    env: Mapping[str, str], name: str, default: str, allow_private: bool
) -> tuple[str, ...]:
    raw = env.get(name, "").strip() or default
    try:
        targets = [t for t in raw.split(",") if t.strip()]
        return tuple(normalise_targets(targets, name, allow_private))
    except InvalidInput as exc:
        raise ConfigError(name, exc.problem) from None


def _events(env: Mapping[str, str], name: str, default: str) -> frozenset[str]:
    raw = env.get(name, "").strip() or default
    try:
        return parse_events(raw, name)
    except InvalidInput as exc:
        raise ConfigError(name, exc.problem) from None
