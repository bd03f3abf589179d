"""The WSGI entry point moves what the warm process keeps out of the collector's reach, once."""

import gc

from config import wsgi


def test_objects_alive_once_the_process_is_warm_are_frozen_once(monkeypatch):
    served, freezes = [], []
    real_freeze = gc.freeze

    def freeze():
        freezes.append(len(served))
        real_freeze()

    def application(environ, start_response):
        served.append(environ["n"])
        return [b"ok"]

    monkeypatch.setattr(gc, "freeze", freeze)
    warming = wsgi._FreezeWhenWarm(application)
    gc.unfreeze()
    try:
        for n in range(wsgi.WARM_AFTER_REQUESTS - 1):
            warming({"n": n}, None)
        assert freezes == [] and gc.get_freeze_count() == 0
        assert warming({"n": "last"}, None) == [b"ok"]
        assert freezes == [wsgi.WARM_AFTER_REQUESTS - 1]  # before the request that made it warm
        assert gc.get_freeze_count() > 0
        for n in range(50):
            warming({"n": n}, None)
        assert freezes == [wsgi.WARM_AFTER_REQUESTS - 1]  # never again
    finally:
        gc.unfreeze()
    assert len(served) == wsgi.WARM_AFTER_REQUESTS + 50
