"""Old name of ``fastq._rdb.window`` (kept for code that imports it)."""
from fastq._rdb.window import Resent, arun_window, run_window, window_pool

sync_window_pool = async_window_pool = window_pool

__all__ = ["Resent", "run_window", "arun_window", "sync_window_pool", "async_window_pool"]
