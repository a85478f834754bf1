"""Child process of the serving speed benchmarks: ``python cli_child.py ARGS...`` runs
``llmsim ARGS...`` in this process (as ``python -m llmsim`` would) and prints one JSON line:
the command's exit code, CPU time (user + system, s) and peak RSS (``VmHWM`` from
``/proc/self/status``, MiB; ``ru_maxrss`` elsewhere). The parent measures the wall time of
the whole process (interpreter start-up included)."""

from __future__ import annotations

import json
import os
import resource
import sys


def peak_rss_mib() -> float:
    """Peak resident set size of this process, MiB."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    from llmsim.cli.main import main as cli

    code = cli(sys.argv[1:])
    t = os.times()
    print(json.dumps({"rc": code, "cpu_s": t.user + t.system, "peak_rss_mib": peak_rss_mib()}))


if __name__ == "__main__":
    main()
