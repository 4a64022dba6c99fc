"""Logging for the bot worker: stdout, %-style, and never the bot token.

The Bot API puts the token in every URL, so httpx and httpcore (which log
request URLs) are held at WARNING, and a filter on the handler blanks the
token out of anything that still mentions it, tracebacks included.
python-telegram-bot's own loggers stay at INFO or above: at DEBUG they print
every message sent, login codes among them.
"""

from __future__ import annotations

import logging
import sys

from telegram.error import InvalidToken, NetworkError

from shared.log_output import TickFlushingHandler, lighten_records

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
REDACTED = "<bot token>"


class RedactToken(logging.Filter):
    """Replace the token in a record's message and traceback.

    Also keeps start-up failures to one line: the entry point reports a
    rejected token or an unreachable Bot API itself, so python-telegram-bot's
    tracebacks of those add nothing.
    """

    def __init__(self, token: str) -> None:
        super().__init__()
        self._token = token
        self._formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, InvalidToken):
            return False
        if isinstance(error, NetworkError) and "Bootstrap" in record.getMessage():
            record.exc_info = record.exc_text = None
        if not self._token:
            return True
        message = record.getMessage()
        if self._token in message:
            record.msg, record.args = message.replace(self._token, REDACTED), None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text and self._token in record.exc_text:
            record.exc_text = record.exc_text.replace(self._token, REDACTED)
        return True


def configure(level: str, token: str) -> None:
    """Log `level` and up to stdout; quiet the HTTP client loggers."""
    handler = TickFlushingHandler(sys.stdout)  # flushed once per event-loop turn
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.addFilter(RedactToken(token))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    lighten_records()
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # python-telegram-bot logs every Bot API call with its parameters at DEBUG,
    # and a sendMessage's text is a login code: never below INFO
    logging.getLogger("telegram").setLevel(max(logging.INFO, logging.getLevelName(level)))
