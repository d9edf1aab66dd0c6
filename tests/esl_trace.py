"""Reader for the ``esl-trace v1`` recordings of a real FreeSWITCH 1.10.12.

The format is described in ``shared/esl-traces/README.md``: ``# `` comment
lines, then records ``<dir> <seconds> <n>\\n`` + exactly ``n`` raw bytes + ``\\n``.
Payloads contain blank lines and arbitrary bytes, so the reader never splits
on lines; it reads a header line, takes ``n`` bytes and checks the separator.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

#: ``shared/`` sits beside the repository checkout (``/work/shared`` for ``/work/main``).
TRACE_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "esl-traces"

FORMAT_TAG = "esl-trace v1"
DIRECTIONS = (">>>", "<<<", "===", "!!!")


@dataclass(frozen=True)
class Record:
    """One record: ``>>>`` client bytes, ``<<<`` one recv(), ``===`` EOF, ``!!!`` note."""

    direction: str
    seconds: float
    data: bytes


@dataclass(frozen=True)
class Trace:
    name: str
    meta: dict[str, str]  # the "# key: value" comment lines (scenario, mode, ...)
    records: tuple[Record, ...]

    @property
    def mode(self) -> str:
        """``inbound`` or ``outbound``."""
        return self.meta["mode"].split()[0]

    def recv_chunks(self) -> list[bytes]:
        """FreeSWITCH's bytes with the real recv() boundaries."""
        return [r.data for r in self.records if r.direction == "<<<"]

    def client_writes(self) -> list[bytes]:
        """What the ESL client sent, one write per item."""
        return [r.data for r in self.records if r.direction == ">>>"]


def read_trace(path: str | Path) -> Trace:
    """Parse one trace file; raises ValueError naming the offset of any defect."""
    path = Path(path)
    data = path.read_bytes()
    pos = 0
    meta: dict[str, str] = {}
    first = True
    while data.startswith(b"# ", pos):
        end = data.index(b"\n", pos)
        line = data[pos + 2:end].decode("utf-8")
        if first:
            if line != FORMAT_TAG:
                raise ValueError(f"{path.name}: not an {FORMAT_TAG!r} file (starts with {line!r})")
            first = False
        else:
            key, sep, value = line.partition(": ")
            if sep:
                meta[key] = value
        pos = end + 1
    if first:
        raise ValueError(f"{path.name}: missing the '# {FORMAT_TAG}' line")

    records = []
    while pos < len(data):
        end = data.find(b"\n", pos)
        if end < 0:
            raise ValueError(f"{path.name}: truncated record header at byte {pos}")
        fields = data[pos:end].split(b" ")
        if len(fields) != 3 or fields[0].decode("ascii", "replace") not in DIRECTIONS:
            raise ValueError(f"{path.name}: bad record header {data[pos:end][:60]!r} at byte {pos}")
        direction = fields[0].decode("ascii")
        seconds = float(fields[1])
        size = int(fields[2])
        start = end + 1
        stop = start + size
        if stop >= len(data) or data[stop:stop + 1] != b"\n":
            raise ValueError(f"{path.name}: record at byte {pos} is not followed by its '\\n' separator")
        records.append(Record(direction, seconds, data[start:stop]))
        pos = stop + 1
    return Trace(path.stem, meta, tuple(records))


def trace_paths() -> list[Path]:
    return sorted(TRACE_DIR.glob("*.trace"))


def load_trace(name: str) -> Trace:
    """Load ``<name>.trace`` from :data:`TRACE_DIR`."""
    return read_trace(TRACE_DIR / f"{name}.trace")


def freeswitch_bytes(trace: Trace) -> bytes:
    """Everything FreeSWITCH sent on the connection, in order."""
    return b"".join(trace.recv_chunks())
