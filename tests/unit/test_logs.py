"""PAYSCHED_LOG_FORMAT=json: one JSON object per line, with the payment's fields, redacted."""

from __future__ import annotations

import io
import json
import logging

from paysched import redaction
from paysched.logs import JsonFormatter, payment_fields


def test_each_record_is_one_json_object_with_the_payment_fields() -> None:
    redaction.install()
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    log = logging.getLogger("paysched.test.json")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        log.info("job %s completed", "pay-7-1", extra=payment_fields("pay-7-1", 7, 2))
        log.warning("posting to https://api.telegram.org/bot1:SECRETtok/sendMessage\nsecond line")
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            log.exception("failed")
    finally:
        log.removeHandler(handler)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(lines) == 3  # a message with a newline is still one line
    first = lines[0]
    assert first["message"] == "job pay-7-1 completed" and first["level"] == "INFO"
    assert (first["occurrence"], first["payment_id"], first["attempt"]) == ("pay-7-1", 7, 2)
    assert first["logger"] == "paysched.test.json" and first["ts"].endswith("+00:00")
    assert "SECRETtok" not in lines[1]["message"] and "occurrence" not in lines[1]
    assert "RuntimeError: boom" in lines[2]["exc"]
