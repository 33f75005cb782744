"""boto3 is imported on first S3 use: with local storage a cpu worker and its prefork children
hold ~10 MB less (bench/worker_memory.py), and S3 storage still gets its client."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

LOCAL = (
    "import tasks.app, tasks.work, tasks.upkeep\n"
    "from pathlib import Path\n"
    "from tasks.storage import make_storage\n"
    "store = make_storage('local', home=Path({home!r}), bucket=None, endpoint_url=None, region=None)\n"
    "store.put('jobs/j/in/0', b'x'); assert store.get('jobs/j/in/0') == b'x'\n"
)
S3_CLIENT = (
    "from tasks.storage import s3_client\n"
    "s3_client('http://127.0.0.1:9', 'us-east-1')\n"  # builds a client; nothing is dialled
)


def boto_modules(code: str) -> list[str]:
    """The boto3 and s3transfer modules a fresh interpreter holds after running `code`."""
    probe = code + (
        "import json, sys\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('boto3', 's3transfer'))))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_cpu_worker_modules_with_local_storage_import_no_boto3(tmp_path):
    assert boto_modules(LOCAL.format(home=str(tmp_path))) == []


def test_the_probe_sees_boto3_once_an_s3_client_is_built():
    assert "boto3" in boto_modules(S3_CLIENT)
