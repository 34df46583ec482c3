"""The dependency rule at run time: a worker process loads neither the web nor Flask.

import-linter (`make lint`) checks the import graph; this checks the process the Procfile's
`worker` and `beat` lines start (`celery -A workers.main`), in a fresh interpreter.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PROBE = """
import json, sys
import workers.main  # noqa: F401 - the Celery app of the Procfile's worker and beat lines
print(json.dumps(sorted(name for name in sys.modules if name.split(".")[0] in
      {"flask", "werkzeug", "apispec", "service"})))
"""


def test_the_worker_entry_point_loads_no_flask_and_no_web_module(tmp_path: Path) -> None:
    env = {**os.environ, "CONSENT_RELAY_CONFIG": "", "PYTHONPATH": str(REPO)}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    result = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=tmp_path,  # demo mode: no config file here; its data directory lands here too
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert "flask" not in loaded
    assert loaded == []
