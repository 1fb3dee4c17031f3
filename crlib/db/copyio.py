"""PostgreSQL binary ``COPY``: building payloads, sending them, and streaming query results back.

Binary COPY moves ``bytea`` histogram columns without hex escaping in either direction
(psycopg2 returns ``bytea`` results hex-encoded otherwise) and skips the server's text parsing.
Field layouts follow the PostgreSQL documentation ("COPY ... Binary Format"): a header, then per
row an ``int16`` field count and per field an ``int32`` length (``-1`` for NULL) and the value
in the type's binary send format.
"""

from __future__ import annotations

import datetime as dt
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from sqlalchemy.orm import Session

COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
COPY_TRAILER = struct.pack(">h", -1)
NULL_FIELD = struct.pack(">i", -1)
_PG_EPOCH = dt.date(2000, 1, 1)
_TEXT_OID = 25

_INT16 = struct.Struct(">h")
_INT32 = struct.Struct(">i")
_INT64 = struct.Struct(">q")
_FLOAT8 = struct.Struct(">d")

Row = list[memoryview | None]


def field(data: bytes | None) -> bytes:
    """One field: length prefix and value, or the NULL marker."""
    return NULL_FIELD if data is None else _INT32.pack(len(data)) + data


def int2_field(value: int) -> bytes:
    """A ``smallint`` field."""
    return b"\x00\x00\x00\x02" + _INT16.pack(value)


def int4_field(value: int) -> bytes:
    """An ``integer`` field."""
    return b"\x00\x00\x00\x04" + _INT32.pack(value)


def int8_field(value: int) -> bytes:
    """A ``bigint`` field."""
    return b"\x00\x00\x00\x08" + _INT64.pack(value)


def bool_field(value: bool) -> bytes:
    """A ``boolean`` field."""
    return b"\x00\x00\x00\x01" + (b"\x01" if value else b"\x00")


def text_array_field(values: Iterable[str]) -> bytes:
    """A one-dimensional ``text[]`` field (binary array format: no NULL elements, lower bound 1)."""
    items = [v.encode() for v in values]
    if not items:
        return field(_INT32.pack(0) + _INT32.pack(0) + _INT32.pack(_TEXT_OID))
    body = [_INT32.pack(1), _INT32.pack(0), _INT32.pack(_TEXT_OID), _INT32.pack(len(items)), _INT32.pack(1)]
    body += [_INT32.pack(len(item)) + item for item in items]
    return field(b"".join(body))


def text_field(value: str | None) -> bytes:
    """A ``text``/``varchar`` field (UTF-8)."""
    return NULL_FIELD if value is None else field(value.encode())


def jsonb_field(text: str) -> bytes:
    """A ``jsonb`` field from its JSON text (binary format version 1)."""
    return field(b"\x01" + text.encode())


def date_field(value: dt.date) -> bytes:
    """A ``date`` field."""
    return int4_field((value - _PG_EPOCH).days)


def row_count(n_fields: int) -> bytes:
    """The start of a row: its number of fields (encoded fields follow)."""
    return _INT16.pack(n_fields)


def payload(rows: list[bytes]) -> bytes:
    """A complete binary COPY stream from encoded rows."""
    return COPY_HEADER + b"".join(rows) + COPY_TRAILER


def _dbapi_cursor(session: Session) -> Any:
    return session.connection().connection.dbapi_connection.cursor()  # type: ignore[union-attr]


class _ChunkReader:
    """File-like ``read()`` over an iterator of byte chunks, remembering what the iterator raised.

    psycopg2 turns an exception raised by ``read()`` into a ``QueryCanceled`` error that names
    only its class; keeping the original lets :func:`copy_in` re-raise it unchanged.
    """

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self.chunks = chunks
        self.pending = b""
        self.error: BaseException | None = None

    def read(self, size: int = -1) -> bytes:
        try:
            while size < 0 or len(self.pending) < size:
                chunk = next(self.chunks, None)
                if chunk is None:
                    break
                self.pending += chunk
        except BaseException as exc:
            self.error = exc
            raise
        if size < 0 or len(self.pending) <= size:
            out, self.pending = self.pending, b""
        else:
            out, self.pending = self.pending[:size], self.pending[size:]
        return out


def copy_in(session: Session, statement: str, data: bytes | Iterable[bytes], *, chunk: int = 1 << 20) -> None:
    """Run ``COPY <table> (...) FROM STDIN (FORMAT binary)`` in the session's transaction.

    Parameters
    ----------
    session
        Session whose transaction receives the rows.
    statement
        The ``COPY ... FROM STDIN`` statement.
    data
        The whole stream, or an iterable of chunks produced while the server is already
        inserting earlier ones (the client's encoding overlaps the server's work). An exception
        raised by the iterable aborts the COPY and is re-raised as it was.
    chunk
        Bytes handed to the driver per call.

    Database errors surface as SQLAlchemy's :class:`~sqlalchemy.exc.DBAPIError` subclasses (as for
    ``session.execute``), so :func:`crlib.db.validation.translated_errors` names the field.
    """
    import io

    import psycopg2
    from sqlalchemy.exc import DBAPIError

    source: Any = io.BytesIO(data) if isinstance(data, bytes | bytearray) else _ChunkReader(iter(data))
    cursor = _dbapi_cursor(session)
    try:
        cursor.copy_expert(statement, source, size=chunk)
    except psycopg2.Error as exc:
        error = getattr(source, "error", None)
        if error is not None:
            raise error from None
        raise DBAPIError.instance(statement, None, exc, psycopg2.Error) from None
    finally:
        cursor.close()


class _RowStream:
    """File-like sink for ``copy_expert`` that cuts the binary stream into rows as it arrives.

    psycopg2 calls :meth:`write` once per message from the server (one row for ``COPY TO``), so
    a row is usually parsed straight from the chunk without copying.
    """

    def __init__(self, on_row: Callable[[Row], None]) -> None:
        self.on_row = on_row
        self.pending = b""
        self.header_done = False
        self.finished = False

    def write(self, chunk: bytes | memoryview) -> int:
        data = self.pending + bytes(chunk) if self.pending else bytes(chunk)
        self.pending = data[self._drain(memoryview(data)) :]
        return len(chunk)

    def _drain(self, view: memoryview) -> int:
        """Parse every complete row in ``view``; return the offset of the unparsed rest."""
        pos = 0
        size = len(view)
        if not self.header_done:
            if size < 19:
                return 0
            if bytes(view[:11]) != COPY_HEADER[:11]:
                raise ValueError("not a PostgreSQL binary COPY stream")
            extension = _INT32.unpack_from(view, 15)[0]
            if size < 19 + extension:
                return 0
            pos = 19 + extension
            self.header_done = True
        while pos + 2 <= size and not self.finished:
            count = _INT16.unpack_from(view, pos)[0]
            if count == -1:
                self.finished = True
                return pos + 2
            cursor = pos + 2
            fields: Row = []
            for _ in range(count):
                if cursor + 4 > size:
                    return pos
                length = _INT32.unpack_from(view, cursor)[0]
                cursor += 4
                if length < 0:
                    fields.append(None)
                    continue
                if cursor + length > size:
                    return pos
                fields.append(view[cursor : cursor + length])
                cursor += length
            self.on_row(fields)
            pos = cursor
        return pos


def copy_out(
    session: Session,
    query: str,
    params: Mapping[str, Any] | None,
    on_row: Callable[[Row], None],
) -> None:
    """Stream the rows of ``query`` in binary COPY format to ``on_row`` (one call per row).

    ``query`` uses ``%(name)s`` placeholders (psycopg2 style); COPY takes no bind parameters, so
    they are rendered into the statement by the driver's own quoting (``cursor.mogrify``).
    Each row is a list of raw field values (:class:`memoryview`, ``None`` for NULL); decode
    them with :func:`int_value`, :func:`text_value` ...
    """
    import psycopg2
    from sqlalchemy.exc import DBAPIError

    cursor = _dbapi_cursor(session)
    try:
        rendered = cursor.mogrify(query, dict(params or {})).decode()
        sink = _RowStream(on_row)
        cursor.copy_expert(f"COPY ({rendered}) TO STDOUT (FORMAT binary)", sink)
    except psycopg2.Error as exc:
        raise DBAPIError.instance(query, None, exc, psycopg2.Error) from None
    finally:
        cursor.close()
    if not sink.finished:
        raise ValueError("binary COPY stream ended without its trailer")


def int_value(value: memoryview | None) -> int | None:
    """A ``smallint``/``integer``/``bigint`` field."""
    if value is None:
        return None
    size = len(value)
    if size == 8:
        return int(_INT64.unpack(value)[0])
    if size == 4:
        return int(_INT32.unpack(value)[0])
    return int(_INT16.unpack(value)[0])


def bool_value(value: memoryview | None) -> bool | None:
    """A ``boolean`` field."""
    return None if value is None else bytes(value) != b"\x00"


def text_array_value(value: memoryview | None) -> tuple[str, ...] | None:
    """A one-dimensional ``text[]`` field (NULL elements are not expected)."""
    if value is None:
        return None
    ndim = _INT32.unpack_from(value, 0)[0]
    if ndim == 0:
        return ()
    if ndim != 1:
        raise ValueError(f"expected a 1-D text array, got {ndim} dimensions")
    count = _INT32.unpack_from(value, 12)[0]
    pos = 20
    items = []
    for _ in range(count):
        length = _INT32.unpack_from(value, pos)[0]
        pos += 4
        items.append(bytes(value[pos : pos + length]).decode())
        pos += length
    return tuple(items)


def text_value(value: memoryview | None) -> str | None:
    """A ``text``/``varchar`` field."""
    return None if value is None else bytes(value).decode()


def date_value(value: memoryview | None) -> dt.date | None:
    """A ``date`` field."""
    return None if value is None else _PG_EPOCH + dt.timedelta(days=int(_INT32.unpack(value)[0]))
