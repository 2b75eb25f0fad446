"""fastq.App: tasks declared with a decorator, enqueued with ``.enqueue(...)``, run by a worker.

``App`` (fastq/app/app.py) holds the tasks, their mux and the worker settings; ``AppTask``
(task.py) is a decorated function; ``payload.py`` maps arguments and return values to JSON;
``Backoff`` (backoff.py) is the retry policy; ``TaskRef`` (ref.py) what ``enqueue`` returns;
eager.py runs tasks in-process for tests (``with app.eager():``).
"""
from fastq.app.app import App
from fastq.app.backoff import Backoff, RetryPolicy
from fastq.app.ref import TaskRef
from fastq.app.task import DEFAULT_RESULT_RETENTION, AppTask, ArchivedError, Arguments, TaskWithOptions

__all__ = ["App", "AppTask", "ArchivedError", "Arguments", "Backoff", "DEFAULT_RESULT_RETENTION", "RetryPolicy",
           "TaskRef", "TaskWithOptions"]
