"""cutout's batch engine: Celery chords over `gpu` and `cpu` queues, storage by key, job records in Redis."""
