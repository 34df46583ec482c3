"""The Procfile that `consent-relay run` hands to honcho: the given Procfile, less its `flower`
line when Flower has no password, plus the Engage emulator and the peer emulators (Acoustic
Connect, Dotdigital, MoEngage) in demo mode.

Leaving the line out (rather than starting a Flower that exits) matters: honcho stops every
process as soon as one of them exits.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from relay.config.demo import DEMO_ENGAGE_PORT, DEMO_PEER_PORTS
from relay.config.settings import Settings

FLOWER = "flower"
EMULATOR = "engage-emulator"


def process_name(line: str) -> str | None:
    """The process a Procfile line defines (`name: command`); None for blanks and comments."""
    stripped = line.strip()
    if not stripped or stripped.startswith("#") or ":" not in stripped:
        return None
    return stripped.split(":", 1)[0].strip()


def process_names(text: str) -> list[str]:
    return [name for name in map(process_name, text.splitlines()) if name is not None]


def derive(
    text: str,
    *,
    flower: bool,
    emulator_port: int | None,
    peer_ports: Mapping[str, int] | None = None,
) -> str:
    """`text` without the flower line unless `flower`, with the emulator when a port is given,
    and the peer emulators of `peer_ports` (command -> port; every address is a contact)."""
    lines = [line for line in text.splitlines() if flower or process_name(line) != FLOWER]
    if emulator_port is not None:
        lines.append(f"{EMULATOR}: engage-emulator --port {emulator_port}")
    for command, port in (peer_ports or {}).items():
        lines.append(f"{command}: {command} --port {port} --any-contact")
    return "\n".join(lines) + "\n"


def procfile_for_run(settings: Settings, procfile: Path, *, flower: bool) -> Path:
    """The Procfile to run: `procfile` itself when nothing changes, else a derived copy in the
    data directory (rewritten on every run)."""
    original = procfile.read_text()
    emulator_port = DEMO_ENGAGE_PORT if settings.demo else None
    peers = DEMO_PEER_PORTS if settings.demo else None
    derived = derive(original, flower=flower, emulator_port=emulator_port, peer_ports=peers)
    if derived == original:
        return procfile
    target = Path(settings.data_dir, "Procfile.run")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(derived)
    return target
