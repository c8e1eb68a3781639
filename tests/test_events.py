"""The daemon's event bus (wire/events.py): a subscriber's `skip` keeps the events it
never wants out of its queue, so a send (one `message` event each) wakes no thread that
follows agents or proposals, while the dashboard still hears of every message."""

import threading

from hyperhive.wire import notify
from hyperhive.wire.events import QUEUE_SIZE, EventBus


def test_skipped_events_never_reach_the_queue_nor_wake_its_reader():
    bus = EventBus()
    woken = []
    with (
        bus.subscribe("state", skip=notify.is_message) as follower,
        bus.subscribe("state") as dashboard,
    ):
        ready = threading.Event()

        def follow() -> None:
            ready.set()
            woken.append(follower.get(timeout=30))

        thread = threading.Thread(target=follow)
        thread.start()
        ready.wait()
        for i in range(QUEUE_SIZE + 10):  # more than a queue holds: no overflow either
            bus.publish("state", {"agent": f"a{i % 3}", "ref": notify.MESSAGE})
        assert thread.is_alive() and not woken and follower.queue.empty()
        bus.publish("state", {"agent": "alice", "ref": "refs/tags/proposal/3"})
        thread.join(timeout=30)
        assert woken == [("state", {"agent": "alice", "ref": "refs/tags/proposal/3"})]
        assert not follower.overflowed
        assert dashboard.queue.qsize() == QUEUE_SIZE and dashboard.overflowed  # every one
    assert bus.published("state") == QUEUE_SIZE + 11  # counted whoever skipped them


def test_is_message_is_only_the_send_event():
    assert notify.is_message("state", {"agent": "a", "ref": notify.MESSAGE})
    assert not notify.is_message("stats", {"agent": "a", "ref": notify.MESSAGE})
    assert not notify.is_message("state", {"agent": "a", "ref": "refs/tags/deployed/1"})
    assert not notify.is_message("state", None)
