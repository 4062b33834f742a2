"""Flows that misbehave once (a marker file in $FSTORE_TEST_MARKERS remembers it across
sidecar restarts), then work: the worker must kill, restart and retry, losing nothing."""

import os
import time

from fstore_flow import _sidecar, flow


def once(name: str) -> bool:
    marker = os.path.join(os.environ["FSTORE_TEST_MARKERS"], name)
    if os.path.exists(marker):
        return False
    open(marker, "w").close()
    return True


@flow("py.crash_once", inputs={"x": "f64"}, output="f64")
def crash_once(batch):
    if once("crash"):
        os._exit(3)
    return [item.values["x"] + 1 for item in batch]


@flow("py.hang_once", inputs={"x": "f64"}, output="f64")
def hang_once(batch):
    if once("hang"):
        time.sleep(3600)
    return [item.values["x"] + 2 for item in batch]


@flow("py.garbage_once", inputs={"x": "f64"}, output="f64")
def garbage_once(batch):
    if once("garbage"):
        _sidecar.FRAMES.write(b"\xff\xff\xff\x00 not a frame")
        _sidecar.FRAMES.flush()
        time.sleep(3600)
    return [item.values["x"] + 3 for item in batch]
