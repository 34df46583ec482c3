"""The embedded broker (`broker_url = "filesystem://"`, the default): kombu's filesystem
transport, made safe for a worker whose pool processes can die.

Two faults of the stock transport (kombu 5.x, `kombu/transport/filesystem.py`) are fixed here:

1. It is not an event-loop transport (`implements.asynchronous = False`), so Celery runs the
   prefork pool in its blocking form (`celery/worker/components.py`: `threads = not
   w.use_eventloop`). That pool feeds every child from ONE shared pipe guarded by one
   semaphore; an idle child waits for work while holding it. SIGKILL that child and the
   semaphore is never released: no child can read a job again and the worker stands still
   for good while beat keeps sending (the multiprocessing pool's known hazard,
   https://github.com/python/cpython/issues/66587). With `asynchronous = True` and a
   periodic poll on Celery's event loop, Celery uses its AsynPool, which gives each child
   its own pipes and re-sends the job of a child that died.
2. Files are not written atomically: a message file is created, then written, and an
   exchange table is truncated, then rewritten; a reader (or a kill) in between sees an
   empty or half-written JSON file. Here every file is written under a temporary name and
   renamed into place (rename is atomic on POSIX), and a reader claims a message by renaming
   it, so two consumers never both take one.

A message is still lost if a process dies between claiming and handing it on; the ledger's
sweeper re-sends whatever is owed, so nothing accepted is lost (see docs/delivery/brokers.md).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from queue import Empty
from time import monotonic
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.json import dumps, loads

TMP_SUFFIX = ".tmp"  # never matches "<queue>.msg": readers skip files being written
DRAIN_LIMIT = 100  # messages taken per poll at most, so that one poll never hogs the loop


def write_atomically(path: Path, data: bytes) -> None:
    """Write `data` to a temporary sibling, flush it, and rename it to `path`."""
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex}{TMP_SUFFIX}")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise ChannelError(f"Cannot write {path.name!r}") from exc


@contextlib.contextmanager
def exclusive(lock_path: Path) -> Iterator[None]:
    """An exclusive advisory lock on a side file (released by the kernel if we die)."""
    with open(lock_path, "a+b") as handle:
        filesystem.lock(handle, filesystem.LOCK_EX)
        try:
            yield
        finally:
            filesystem.unlock(handle)


class Channel(filesystem.Channel):
    def _put(self, queue: str, payload: Any, **_kwargs: Any) -> None:  # type: ignore[override]
        name = f"{int(round(monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"
        write_atomically(Path(self.data_folder_out, name), dumps(payload).encode())

    def _get(self, queue: str, timeout: Any = None) -> Any:
        wanted = f"{queue}.msg"
        folder = Path(self.data_folder_in)
        for name in sorted(os.listdir(folder)):
            if name.partition(".")[2] != wanted:
                continue
            claimed = folder / f"{name}.{os.getpid()}.{uuid.uuid4().hex}{TMP_SUFFIX}"
            try:
                os.rename(folder / name, claimed)  # only one consumer's rename succeeds
            except OSError:
                continue
            try:
                payload = claimed.read_bytes()
            finally:
                with contextlib.suppress(OSError):
                    claimed.unlink()
            return loads(payload.decode())
        raise Empty()

    def get_table(self, exchange: str) -> list[Any]:
        try:
            raw = self._exchange_file(exchange).read_bytes()
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise ChannelError(f"Cannot read the table of exchange {exchange!r}") from exc
        return [filesystem.exchange_queue_t(*q) for q in loads(raw.decode())]

    def _queue_bind(self, exchange: str, routing_key: str, pattern: str, queue: str) -> None:
        self._update_table(
            exchange, filesystem.exchange_queue_t(routing_key or "", pattern or "", queue)
        )

    def _delete(self, queue: str, exchange: str, routing_key: str, pattern: str, *a: Any) -> None:
        filesystem.virtual.Channel._delete(self, queue, exchange, routing_key, pattern, *a)
        self._update_table(
            exchange,
            filesystem.exchange_queue_t(routing_key or "", pattern or "", queue or ""),
            drop=True,
        )

    def _update_table(self, exchange: str, entry: Any, drop: bool = False) -> None:
        file = self._exchange_file(exchange)
        self.control_folder.mkdir(exist_ok=True)
        with exclusive(file.with_name(file.name + ".lock")):
            queues = self.get_table(exchange)
            if drop and entry in queues:
                queues.remove(entry)
            elif not drop and entry not in queues:
                queues.insert(0, entry)
            else:
                return
            write_atomically(file, dumps(queues).encode())


class Transport(filesystem.Transport):
    """The filesystem transport on Celery's event loop: a poll every `polling_interval`."""

    Channel = Channel
    implements = filesystem.Transport.implements.extend(asynchronous=True)
    global_state = filesystem.virtual.BrokerState()

    def register_with_event_loop(self, connection: Any, loop: Any) -> None:
        loop.call_repeatedly(self.polling_interval, self._drain_ready, connection)

    def _drain_ready(self, connection: Any) -> None:
        """Hand on what is there now, without waiting (the event loop must not block)."""
        cycle = self.cycle
        if cycle is None:  # no channel yet
            return
        for _ in range(DRAIN_LIMIT):
            try:
                cycle.get(self._deliver, timeout=0)
            except Empty:
                return
