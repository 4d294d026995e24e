"""The apply layer as operators run it: `quantum-apply-layer run` in its own process, to kill it."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from emulator_fixture import EMULATOR_API_KEY, EMULATOR_API_SECRET


class ServiceProcess:
    def __init__(self, redis_url: str, exchange_url: str, log_path: Path, **env: str) -> None:
        self.env = {
            **os.environ,
            "TESTNET": "false",
            "REDIS_URL": redis_url,
            "APPLY_EXCHANGE_URL": exchange_url,
            "BINANCE_API_KEY": EMULATOR_API_KEY,
            "BINANCE_API_SECRET": EMULATOR_API_SECRET,
            "APPLY_METRICS_PORT": "0",
            "APPLY_CONSUMER_NAME": "proc-consumer",
            "APPLY_RECLAIM_IDLE_MS": "1000",
            "APPLY_LOG_FORMAT": "kv",
            **env,
        }
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        script = shutil.which("quantum-apply-layer", path=str(Path(sys.executable).parent))
        if script is None:
            raise RuntimeError("quantum-apply-layer is not installed in this venv (make venv)")
        self.script = script

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [self.script, "--no-env-file", "run"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def terminate(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=30)

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None
