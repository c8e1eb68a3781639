"""Container backends behind one interface (`Runtime` in runtime.base)."""

from hyperhive.home import Home
from hyperhive.runtime.base import Runtime
from hyperhive.runtime.local import LocalRuntime

RUNTIMES = {"local": LocalRuntime}


def get_runtime(kind: str, home: Home) -> Runtime:
    return RUNTIMES[kind](home)
