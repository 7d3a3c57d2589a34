"""Log output: the plain format (the default) or one JSON object per line.

`PAYSCHED_LOG_FORMAT=json` writes each record as
`{"ts", "level", "logger", "message", "occurrence", "payment_id", "attempt", "exc"}` (the last
four only when known), for log pipelines that parse fields instead of text. Payment lines carry
the occurrence key, payment id and attempt as record attributes (see `payment_fields`), so both
formats show the same facts. Either way every record is redacted first (paysched.redaction).
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from paysched import redaction

PLAIN = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
# Record attributes a payment's log lines carry (logging's `extra=`).
FIELDS = ("occurrence", "payment_id", "attempt")


def payment_fields(
    occurrence: str | None, payment_id: int | None, attempt: int | None
) -> dict[str, Any]:
    """`extra=` for a log call about one occurrence."""
    return {"occurrence": occurrence, "payment_id": payment_id, "attempt": attempt}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exc"] = record.exc_text
        return json.dumps(line, ensure_ascii=False, default=str)


def setup_logging(level: str, fmt: str = "plain") -> None:
    """Root logging to stderr, in `fmt` ("plain" or "json"), every record redacted."""
    redaction.install()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(PLAIN))
    logging.basicConfig(level=level, handlers=[handler])
    # bullmq warns on every connection when eviction is not "noeviction"; once is enough.
    logging.getLogger("asyncio").setLevel(logging.WARNING)
