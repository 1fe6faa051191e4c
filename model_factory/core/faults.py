"""Test-only fault injection: kill this process at a named point of a run.

The reliability suite (``model_factory_tests/reliability/test_crash.py``) sets
``MODEL_FACTORY_CRASH_AT`` in a subprocess to prove that a SIGKILL at any point of a run leaves
no partial or corrupt file under a final name and that a re-run completes with the same ids.
Nothing else may set it: with the variable unset, ``crash_point`` is one dictionary lookup.

Value: ``POINT`` or ``POINT:GLOB``. ``POINT`` is a name from ``POINTS``; ``GLOB`` (fnmatch)
narrows a point that many writes share to the subject it is called with, e.g.
``link:*.parquet`` = "the frame's bytes are complete under their temporary name, not yet linked
under the final one".
"""

from __future__ import annotations

import fnmatch
import os
import signal

ENV = "MODEL_FACTORY_CRASH_AT"

# Every point a run passes, in run order; the crash test kills each one (``link`` once per kind
# of file: see the test's list).
POINTS = (
    "intake.verified",  # manifests found and every file verified, receipt not stored
    "link",  # storage.write_exclusive: temp file complete, final name absent
    "frame.built",  # frame parquet stored, its record not yet
    "training.fitted",  # XGBoost fitted, model bytes not stored
    "report.evaluated",  # report computed and its HTML stored, report not stored
    "gate.decided",  # verdict computed, receipt not stored
    "bundle.written",  # bundle.json under its final name, the run not yet recorded
    "publish.recorded",  # registry record written, champion history not yet
)


def crash_point(name: str, subject: str = "") -> None:
    """SIGKILL this process if ``MODEL_FACTORY_CRASH_AT`` names this point (and subject)."""
    target = os.environ.get(ENV)
    if target is None:
        return
    point, _, pattern = target.partition(":")
    if point == name and (not pattern or fnmatch.fnmatchcase(subject, pattern)):
        os.kill(os.getpid(), signal.SIGKILL)
