"""`python -m bench.bare_bot`: a bare python-telegram-bot bot answering `/start` with a
fixed text, polling TELEGRAM_API_BASE_URL with TELEGRAM_BOT_TOKEN: what the product
bot's `/start` rate is compared with."""

from __future__ import annotations

import logging
import os

from telegram import Update
from telegram.ext import Application, CommandHandler, ContextTypes

from bot_worker.dispatch import CONCURRENCY

TEXT = "Your login code: 1234 5678"


async def start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    if update.effective_message is not None:
        await update.effective_message.reply_text(TEXT)


def main() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # its URLs carry the token
    application = (
        Application.builder()
        .token(os.environ["TELEGRAM_BOT_TOKEN"])
        .base_url(os.environ["TELEGRAM_API_BASE_URL"])
        # updates handled at once and replies side by side, as many as the product bot
        # handles and sends (python-telegram-bot's `True` means 256: more requests than
        # connections, and then its HTTP pool spends its time assigning them)
        .concurrent_updates(CONCURRENCY)
        .connection_pool_size(64)
        .pool_timeout(10.0)
        .build()
    )
    application.add_handler(CommandHandler("start", start))
    logging.getLogger(__name__).info("bare bot started")
    application.run_polling()


if __name__ == "__main__":
    main()
