"""The WSGI entry point moves what the warm process keeps out of the collector's reach, once."""

import gc

from config import wsgi


def test_objects_alive_once_the_process_is_warm_are_frozen_once():
    served = []

    def application(environ, start_response):
        served.append(environ["n"])
        return [b"ok"]

    warming = wsgi._FreezeWhenWarm(application)
    gc.unfreeze()
    try:
        for n in range(wsgi.WARM_AFTER_REQUESTS - 1):
            warming({"n": n}, None)
        assert gc.get_freeze_count() == 0
        assert warming({"n": "last"}, None) == [b"ok"]
        frozen = gc.get_freeze_count()
        assert frozen > 0
        for n in range(50):
            warming({"n": n}, None)
        assert gc.get_freeze_count() == frozen  # never again
    finally:
        gc.unfreeze()
    assert len(served) == wsgi.WARM_AFTER_REQUESTS + 50
