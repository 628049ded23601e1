"""Decompression that a hostile attachment cannot turn into a memory or CPU sink.

Output is produced in chunks and counted as it grows, so a bomb is stopped at the
first chunk past the bound instead of after it filled the memory. Declared sizes in
a zip's directory are checked first but never trusted: the stream is counted too.
"""

from __future__ import annotations

import io
import zipfile
import zlib

from mail_monitor.reports.model import MIB, RATIO_GRACE, InvalidReport, Limits

CHUNK = 64 * 1024
GZIP_MAGIC = b"\x1f\x8b"
ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")  # a local file header, or an empty archive
ARCHIVE_SUFFIXES = (".zip", ".gz", ".tgz", ".tar", ".7z", ".rar", ".bz2", ".xz", ".zst")


def is_gzip(data: bytes) -> bool:
    return data.startswith(GZIP_MAGIC)


def is_zip(data: bytes) -> bool:
    return data.startswith(ZIP_MAGICS)


def gunzip(data: bytes, limits: Limits) -> bytes:
    """One or more concatenated gzip members, bounded in size and ratio."""
    out = bytearray()
    pending = data
    while True:
        stream = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        try:
            while not stream.eof:
                piece = stream.decompress(pending, CHUNK)
                pending = stream.unconsumed_tail
                if not piece and not pending:
                    raise InvalidReport("truncated gzip data")
                out += piece
                _check_growth(len(out), len(data), limits)
        except zlib.error as exc:
            raise InvalidReport(f"corrupt gzip data ({_zlib_reason(exc)})") from None
        pending = stream.unused_data
        if not pending.strip(b"\0"):
            return bytes(out)
        if not is_gzip(pending):
            raise InvalidReport("trailing data after the gzip stream")


def unzip(data: bytes, limits: Limits) -> list[tuple[str, bytes]]:
    """Every member of a zip archive, refusing encryption, nesting and bombs."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError):
        raise InvalidReport("not a readable zip archive") from None
    with archive:
        entries = archive.infolist()
        if len(entries) > limits.max_zip_members:
            raise InvalidReport(f"zip archive has {len(entries)} members (at most {limits.max_zip_members})")
        members = [e for e in entries if not e.is_dir()]
        if not members:
            raise InvalidReport("empty zip archive")
        total = 0
        out = []
        for info in members:
            _check_member(info, limits)
            content = bytearray()
            try:
                with archive.open(info) as stream:
                    while piece := stream.read(CHUNK):
                        content += piece
                        _check_growth(total + len(content), len(data), limits)
            except InvalidReport:
                raise
            except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, RuntimeError,
                    ValueError) as exc:
                raise InvalidReport(f"corrupt zip member {_short(info.filename)} ({_zip_reason(exc)})") from None
            member = bytes(content)
            if is_gzip(member) or is_zip(member):
                raise InvalidReport(f"nested archive {_short(info.filename)} in zip")
            total += len(member)
            out.append((info.filename, member))
        return out


def _check_member(info: zipfile.ZipInfo, limits: Limits) -> None:
    name = _short(info.filename)
    if info.flag_bits & 0x1:
        raise InvalidReport(f"encrypted zip member {name}")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise InvalidReport(f"zip member {name} uses compression method {info.compress_type} (only stored or deflate)")
    if info.filename.lower().endswith(ARCHIVE_SUFFIXES):
        raise InvalidReport(f"nested archive {name} in zip")
    if info.file_size > limits.max_report_bytes:
        limit = _size(limits.max_report_bytes)
        raise InvalidReport(f"zip member {name} declares {info.file_size} bytes (at most {limit})")


def _check_growth(produced: int, compressed: int, limits: Limits) -> None:
    if produced > limits.max_report_bytes:
        raise InvalidReport(f"decompresses to more than {_size(limits.max_report_bytes)}")
    if produced > RATIO_GRACE and produced > limits.max_ratio * max(compressed, 1):
        raise InvalidReport(f"compression ratio over {limits.max_ratio}:1 (a zip bomb?)")


def _size(n: int) -> str:
    return f"{n // MIB} MiB" if n % MIB == 0 else f"{n} bytes"


def _short(name: str, limit: int = 60) -> str:
    printable = "".join(c if c.isprintable() else "?" for c in name)
    return repr(printable if len(printable) <= limit else printable[: limit - 3] + "...")


def _zlib_reason(exc: zlib.error) -> str:
    text = str(exc)
    return text.split(": ", 1)[-1] if ": " in text else text


def _zip_reason(exc: BaseException) -> str:
    text = str(exc).split("\n")[0][:80]
    return text or type(exc).__name__
