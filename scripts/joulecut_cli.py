"""The joulecut binary as the side-by-side scripts call it: one subcommand run with --json, its
stdout parsed, any failure raised with the command line and the end of stderr."""
from __future__ import annotations

import json
import os
import shlex
import subprocess
from pathlib import Path


class JoulecutCli:
    def __init__(self, binary: Path, threads: int):
        self.binary = binary
        self.env = dict(os.environ, RAYON_NUM_THREADS=str(threads))

    def run(self, *argv) -> dict:
        cmd = [str(self.binary), *map(str, argv)]
        p = subprocess.run(cmd, env=self.env, capture_output=True, text=True)
        if p.returncode != 0:
            raise RuntimeError(f"`{shlex.join(cmd)}` exited {p.returncode}:\n{p.stderr.strip()[-3000:]}")
        try:
            return json.loads(p.stdout)
        except json.JSONDecodeError as e:
            raise RuntimeError(f"`{shlex.join(cmd)}` printed no JSON ({e}): {p.stdout[:200]!r}") from None

    def version(self) -> str:
        p = subprocess.run([str(self.binary), "--version"], capture_output=True, text=True)
        return p.stdout.strip() or p.stderr.strip()
