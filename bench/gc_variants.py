"""The service's WSGI app with the garbage collector set up as ``GC_VARIANT`` says, for bench_gc.

``defaults``: as Python starts (the freeze and thresholds of ``create_app`` undone); ``off``:
collector disabled (the reference for the pause-free p99); ``freeze``: ``gc.freeze()`` after start-up
with Python's thresholds; ``service``: what ``create_app`` does in a serving process (freeze, and full
collections a tenth as often).
"""

import gc
import os

from lookup_service import FULL_COLLECTION_EVERY
from wsgi import app

variant = os.environ.get("GC_VARIANT", "service")
if variant != "service":  # undo what create_app did in this serving process
    gc.unfreeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, 10)
if variant == "off":
    gc.disable()
elif variant == "freeze":
    gc.collect()
    gc.freeze()
elif variant == "service":
    assert gc.get_threshold()[2] == FULL_COLLECTION_EVERY

__all__ = ["app"]
