"""JSON-lines logs for workers and the web app, with job and item ids as fields.

CUTOUT_LOG_FORMAT=text keeps Celery's and Flask's plain lines (for a terminal).
"""

import logging

from pythonjsonlogger.json import JsonFormatter

FIELDS = "%(asctime)s %(levelname)s %(name)s %(message)s"


class _TaskIds(logging.Filter):
    """Adds the running Celery task's id and name, so a line can be traced to its message."""

    def filter(self, record: logging.LogRecord) -> bool:
        from celery import current_task

        task = current_task
        if task and task.request.id and not hasattr(record, "task_id"):
            record.task_id, record.task_name = task.request.id, task.name
        return True


def use_json(logger: logging.Logger) -> None:
    """Give every handler of `logger` the JSON formatter (idempotent)."""
    for handler in logger.handlers:
        handler.setFormatter(JsonFormatter(FIELDS, rename_fields={"levelname": "level", "asctime": "time"}))
        if not any(isinstance(f, _TaskIds) for f in handler.filters):
            handler.addFilter(_TaskIds())
