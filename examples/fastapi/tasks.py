"""The tasks of the FastAPI example, served by ``fastq-supervisor tasks:app``."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass

import fastq

# The Redis URL is read from $FASTQ_REDIS_URL (default redis://127.0.0.1:6379/0), by the web
# process and the workers alike.
app = fastq.App()


@dataclass
class TextStats:
    words: int
    lines: int
    longest_word: str


@app.task(name="text:stats", retry_on=OSError)
async def text_stats(text: str, delay: float = 0.0) -> TextStats:
    """Count the words of ``text``. ``delay`` stands in for slow work (it shows the 504 answer)."""
    await asyncio.sleep(delay)
    words = text.split()
    if not words:
        raise ValueError("the text has no words")  # not an OSError: archived at once, never retried
    return TextStats(words=len(words), lines=len(text.splitlines()), longest_word=max(words, key=len))


@app.task(name="mail:send", queue="emails", max_retry=5)
def send_mail(to: str, subject: str) -> None:
    """Send an email (here: print it); plain ``def`` tasks run in the worker's thread pool."""
    print(f"mail to {to}: {subject}")
