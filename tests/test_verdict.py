"""experiments/verdict.sh, with a stand-in `kangnn` that records when each step starts and ends."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "verdict.sh"

# The stand-in: `tune ... --models M` and `compare ...`, logged as "start NAME" / "end NAME".
# The MLP's tuning ends only once chemprop's has started (or fails after 30 s), and chemprop's
# only once the MLP's has started, so the test does not depend on timing: a script that waits
# for both tunings before starting chemprop's fails here instead of passing by luck.
STUB = r"""#!/usr/bin/env bash
set -eu
log="$STUB_LOG"
cmd=$1; shift
name=$cmd
out=
with=
while [ $# -gt 0 ]; do
  case $1 in
    --models) name="tune-$2"; shift ;;
    --out) out=$2; shift ;;
    --with) with=$2; name=compare-with-chemprop; shift ;;
  esac
  shift
done
echo "start $name" >> "$log"
if [ "$name" = tune-mlp ]; then
  for _ in $(seq 300); do grep -q "start tune-chemprop" "$log" && break; sleep 0.1; done
  grep -q "start tune-chemprop" "$log" || { echo "end $name (gave up)" >> "$log"; exit 1; }
fi
if [ "$name" = tune-chemprop ]; then  # a slow-starting MLP stand-in must not miss the overlap
  for _ in $(seq 300); do grep -q "start tune-mlp" "$log" && break; sleep 0.1; done
fi
if [ "$cmd" = compare ]; then
  mkdir -p "$out"
  echo '{}' > "$out/summary.json"
  if [ -n "$with" ]; then echo '{"rows": ["chemprop-tuned"]}' > "$out/compare.json"
  else echo '{"rows": ["kan", "mlp"]}' > "$out/compare.json"; fi
fi
echo "end $name" >> "$log"
"""


def _events(log: Path) -> list[tuple[str, str]]:
    return [tuple(line.split(" ", 1)) for line in log.read_text().splitlines()]


def _repo_with_stub(tmp_path: Path, stub_text: str) -> tuple[Path, Path, Path]:
    """A copy of verdict.sh in ``tmp_path/repo/experiments`` and a stand-in ``kangnn``."""
    root = tmp_path / "repo"
    (root / "experiments").mkdir(parents=True)
    shutil.copy(SCRIPT, root / "experiments" / "verdict.sh")
    stub = tmp_path / "kangnn"
    stub.write_text(stub_text)
    stub.chmod(stub.stat().st_mode | stat.S_IXUSR)
    return root, stub, tmp_path / "log"


def _run(root: Path, log: Path, stub: Path, chemprop: str = "1") -> subprocess.CompletedProcess:
    env = {**os.environ, "KANGNN": str(stub), "STUB_LOG": str(log), "CHEMPROP": chemprop}
    return subprocess.run(
        ["bash", str(root / "experiments" / "verdict.sh"), "toy", "dmpnn"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_chemprop_tuning_takes_the_first_free_core_and_steps_keep_their_order(tmp_path):
    root, stub, log = _repo_with_stub(tmp_path, STUB)
    done = _run(root, log, stub)
    assert done.returncode == 0, done.stderr
    events = _events(log)
    at = {e: i for i, e in enumerate(events)}
    # chemprop's tuning starts while the MLP's still runs (the KAN's ended first) ...
    assert at[("end", "tune-kan")] < at[("start", "tune-chemprop")] < at[("end", "tune-mlp")]
    # ... the comparison waits for both tunings, the chemprop rows for everything before them
    assert at[("start", "compare")] > at[("end", "tune-mlp")]
    last = max(at[("end", "compare")], at[("end", "tune-chemprop")])
    assert at[("start", "compare-with-chemprop")] > last
    assert events[-1] == ("end", "compare-with-chemprop")
    running = peak = 0  # never more than two processes, one per core
    for kind, _ in events:
        running += 1 if kind == "start" else -1
        peak = max(peak, running)
    assert peak == 2

    # Rerun on the finished folder: the tunings are asked again (kangnn tune skips done
    # trials), nothing is compared again.
    log.unlink()
    again = _run(root, log, stub)
    assert again.returncode == 0, again.stderr
    names = {name for _, name in _events(log)}
    assert names == {"tune-kan", "tune-mlp", "tune-chemprop"}


# Only the KAN's tuning fails, and only after the MLP's has ended: `wait -n` then sees the MLP's
# success first, and a `wait` on both pids at once would report the MLP's status alone.
KAN_FAILS_LAST = r"""#!/usr/bin/env bash
echo "start $*" >> "$STUB_LOG"
case "$*" in
  *"--models kan"*)
    for _ in $(seq 300); do grep -q "end mlp" "$STUB_LOG" && break; sleep 0.1; done
    exit 2 ;;
  *"--models mlp"*) echo "end mlp" >> "$STUB_LOG" ;;
esac
"""


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
@pytest.mark.parametrize("chemprop", ["1", "0"])
@pytest.mark.parametrize(
    "stand_in",
    ['#!/usr/bin/env bash\necho "start $*" >> "$STUB_LOG"\nexit 2\n', KAN_FAILS_LAST],
    ids=["all-fail", "kan-fails-last"],
)
def test_a_failed_tuning_stops_the_script(tmp_path, stand_in, chemprop):
    root, stub, log = _repo_with_stub(tmp_path, stand_in)
    done = _run(root, log, stub, chemprop)
    assert done.returncode != 0
    assert not any("compare" in line for line in log.read_text().splitlines())
