# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Compiled TaskMessage codec. Mirrors fastq/_speedups_py.py name for name.

The pure-Python module is the specification; every test runs against both.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_AsUTF8AndSize, PyUnicode_DecodeUTF8
from libc.stdint cimport int32_t, int64_t, uint64_t
from libc.string cimport memcpy

import os

from fastq.errors import DecodeError

__all__ = ["TaskMessage", "encode_message", "decode_message", "new_task_ids", "IMPLEMENTATION"]

IMPLEMENTATION = "cython"

cdef str EMPTY_STR = ""
cdef bytes EMPTY_BYTES = b""


cdef class TaskMessage:
    """One task as Asynq stores it in the ``msg`` field of ``asynq:{q}:t:<id>``."""

    cdef public str type
    cdef public bytes payload
    cdef public str id
    cdef public str queue
    cdef public int32_t retry
    cdef public int32_t retried
    cdef public str error_msg
    cdef public int64_t timeout
    cdef public int64_t deadline
    cdef public str unique_key
    cdef public int64_t last_failed_at
    cdef public int64_t retention
    cdef public int64_t completed_at
    cdef public str group_key
    cdef public dict headers
    cdef public bytes unknown

    def __init__(self, str type="", bytes payload=b"", str id="", str queue="",
                 int32_t retry=0, int32_t retried=0, str error_msg="", int64_t timeout=0,
                 int64_t deadline=0, str unique_key="", int64_t last_failed_at=0,
                 int64_t retention=0, int64_t completed_at=0, str group_key="",
                 dict headers=None, bytes unknown=b""):
        self.type = type
        self.payload = payload
        self.id = id
        self.queue = queue
        self.retry = retry
        self.retried = retried
        self.error_msg = error_msg
        self.timeout = timeout
        self.deadline = deadline
        self.unique_key = unique_key
        self.last_failed_at = last_failed_at
        self.retention = retention
        self.completed_at = completed_at
        self.group_key = group_key
        self.headers = {} if headers is None else headers
        self.unknown = unknown

    def copy(self):
        """A shallow copy (the headers dict is copied too)."""
        cdef TaskMessage m = TaskMessage.__new__(TaskMessage)
        m.type = self.type
        m.payload = self.payload
        m.id = self.id
        m.queue = self.queue
        m.retry = self.retry
        m.retried = self.retried
        m.error_msg = self.error_msg
        m.timeout = self.timeout
        m.deadline = self.deadline
        m.unique_key = self.unique_key
        m.last_failed_at = self.last_failed_at
        m.retention = self.retention
        m.completed_at = self.completed_at
        m.group_key = self.group_key
        m.headers = dict(self.headers) if self.headers is not None else {}
        m.unknown = self.unknown
        return m

    def _astuple(self):
        return (self.type, self.payload, self.id, self.queue, self.retry, self.retried,
                self.error_msg, self.timeout, self.deadline, self.unique_key,
                self.last_failed_at, self.retention, self.completed_at, self.group_key,
                self.headers, self.unknown)

    def __eq__(self, other):
        if not hasattr(other, "_astuple"):
            return NotImplemented
        return self._astuple() == other._astuple()

    __hash__ = None

    def __repr__(self):
        return (
            f"TaskMessage(type={self.type!r}, id={self.id!r}, queue={self.queue!r}, "
            f"retry={self.retry}, retried={self.retried}, payload={len(self.payload or b'')} bytes)"
        )


# ---------------------------------------------------------------------------
# encoding

cdef inline Py_ssize_t _varint_size(uint64_t v) noexcept:
    cdef Py_ssize_t n = 1
    while v >= 0x80:
        v >>= 7
        n += 1
    return n


cdef inline char* _put_varint(char* p, uint64_t v) noexcept:
    while v >= 0x80:
        p[0] = <char>((v & 0x7F) | 0x80)
        p += 1
        v >>= 7
    p[0] = <char>v
    return p + 1


cdef inline const char* _utf8_of(str s, Py_ssize_t* size) except? NULL:
    if s is None or not s:
        size[0] = 0
        return NULL
    return PyUnicode_AsUTF8AndSize(s, size)


cdef inline Py_ssize_t _len_field(Py_ssize_t n) noexcept:
    # one-byte tag (fields 1..15) + length varint + data
    return 0 if n == 0 else 1 + _varint_size(<uint64_t>n) + n


cdef inline Py_ssize_t _int_field(int64_t v) noexcept:
    return 0 if v == 0 else 1 + _varint_size(<uint64_t>v)


cdef inline char* _put_bytes(char* p, int field, const char* data, Py_ssize_t n) noexcept:
    if n == 0:
        return p
    p[0] = <char>(field << 3 | 2)
    p = _put_varint(p + 1, <uint64_t>n)
    memcpy(p, data, n)
    return p + n


cdef inline char* _put_int(char* p, int field, int64_t v) noexcept:
    if v == 0:
        return p
    p[0] = <char>(field << 3)
    return _put_varint(p + 1, <uint64_t>v)


def encode_message(TaskMessage msg not None):
    """Serialize ``msg`` to the exact bytes Go Asynq would write."""
    cdef Py_ssize_t n_type, n_id, n_queue, n_err, n_ukey, n_group, n_payload, n_unknown
    cdef Py_ssize_t nk, nv, entry, total
    cdef const char* s_type = _utf8_of(msg.type, &n_type)
    cdef const char* s_id = _utf8_of(msg.id, &n_id)
    cdef const char* s_queue = _utf8_of(msg.queue, &n_queue)
    cdef const char* s_err = _utf8_of(msg.error_msg, &n_err)
    cdef const char* s_ukey = _utf8_of(msg.unique_key, &n_ukey)
    cdef const char* s_group = _utf8_of(msg.group_key, &n_group)
    cdef const char* sk
    cdef const char* sv
    cdef bytes payload = msg.payload
    cdef bytes unknown = msg.unknown
    n_payload = 0 if payload is None else PyBytes_GET_SIZE(payload)
    n_unknown = 0 if unknown is None else PyBytes_GET_SIZE(unknown)

    total = (_len_field(n_type) + _len_field(n_payload) + _len_field(n_id) + _len_field(n_queue)
             + _int_field(msg.retry) + _int_field(msg.retried) + _len_field(n_err)
             + _int_field(msg.timeout) + _int_field(msg.deadline) + _len_field(n_ukey)
             + _int_field(msg.last_failed_at) + _int_field(msg.retention)
             + _int_field(msg.completed_at) + _len_field(n_group) + n_unknown)

    cdef list keys = None
    cdef dict headers = msg.headers
    if headers:
        keys = sorted(headers)
        for key in keys:
            value = headers[key]
            if type(key) is not str or type(value) is not str:
                raise TypeError("TaskMessage headers must map str to str")
            _utf8_of(<str>key, &nk)
            _utf8_of(<str>value, &nv)
            entry = _len_field(nk) + _len_field(nv)
            total += 1 + _varint_size(<uint64_t>entry) + entry

    cdef bytes out = PyBytes_FromStringAndSize(NULL, total)
    cdef char* p = PyBytes_AS_STRING(out)
    p = _put_bytes(p, 1, s_type, n_type)
    if n_payload:
        p = _put_bytes(p, 2, PyBytes_AS_STRING(payload), n_payload)
    p = _put_bytes(p, 3, s_id, n_id)
    p = _put_bytes(p, 4, s_queue, n_queue)
    p = _put_int(p, 5, msg.retry)
    p = _put_int(p, 6, msg.retried)
    p = _put_bytes(p, 7, s_err, n_err)
    p = _put_int(p, 8, msg.timeout)
    p = _put_int(p, 9, msg.deadline)
    p = _put_bytes(p, 10, s_ukey, n_ukey)
    p = _put_int(p, 11, msg.last_failed_at)
    p = _put_int(p, 12, msg.retention)
    p = _put_int(p, 13, msg.completed_at)
    p = _put_bytes(p, 14, s_group, n_group)
    if keys is not None:
        for key in keys:
            sk = _utf8_of(<str>key, &nk)
            sv = _utf8_of(<str>headers[key], &nv)
            entry = _len_field(nk) + _len_field(nv)
            p[0] = <char>0x7A
            p = _put_varint(p + 1, <uint64_t>entry)
            p = _put_bytes(p, 1, sk, nk)
            p = _put_bytes(p, 2, sv, nv)
    if n_unknown:
        memcpy(p, PyBytes_AS_STRING(unknown), n_unknown)
    return out


# ---------------------------------------------------------------------------
# decoding

cdef inline const unsigned char* _get_varint(const unsigned char* p, const unsigned char* end,
                                             uint64_t* out) except NULL:
    cdef uint64_t result = 0
    cdef unsigned int shift = 0
    cdef unsigned char byte
    while True:
        if p >= end:
            raise DecodeError("truncated varint")
        byte = p[0]
        p += 1
        if shift == 63 and byte > 1:
            raise DecodeError("varint overflows 64 bits")
        result |= (<uint64_t>(byte & 0x7F)) << shift
        if byte < 0x80:
            out[0] = result
            return p
        shift += 7
        if shift > 63:
            raise DecodeError("varint longer than 10 bytes")


cdef inline const unsigned char* _skip(const unsigned char* p, const unsigned char* end,
                                       unsigned int wire) except NULL:
    cdef uint64_t length
    if wire == 0:
        return _get_varint(p, end, &length)
    if wire == 1:
        length = 8
    elif wire == 5:
        length = 4
    elif wire == 2:
        p = _get_varint(p, end, &length)
    else:
        raise DecodeError(f"unsupported wire type {wire}")
    if length > <uint64_t>(end - p):
        raise DecodeError("truncated field")
    return p + length


cdef inline str _utf8(const unsigned char* p, Py_ssize_t n, str what):
    if n == 0:
        return EMPTY_STR
    try:
        return PyUnicode_DecodeUTF8(<const char*>p, n, NULL)
    except UnicodeDecodeError:
        raise DecodeError(f"{what} is not valid UTF-8") from None


cdef inline const unsigned char* _get_len(const unsigned char* p, const unsigned char* end,
                                          Py_ssize_t* n, int field) except NULL:
    cdef uint64_t length
    p = _get_varint(p, end, &length)
    if length > <uint64_t>(end - p):
        raise DecodeError(f"field {field} is truncated")
    n[0] = <Py_ssize_t>length
    return p


cdef int _decode_header(const unsigned char* p, const unsigned char* end, dict headers) except -1:
    cdef uint64_t tag
    cdef unsigned int field, wire
    cdef Py_ssize_t n
    cdef str key = EMPTY_STR
    cdef str value = EMPTY_STR
    while p < end:
        p = _get_varint(p, end, &tag)
        field = <unsigned int>(tag >> 3)
        wire = <unsigned int>(tag & 7)
        if field == 0:
            raise DecodeError("invalid field number 0 in headers entry")
        if wire == 2 and (field == 1 or field == 2):
            try:
                p = _get_len(p, end, &n, field)
            except DecodeError:
                raise DecodeError("truncated headers entry") from None
            if field == 1:
                key = _utf8(p, n, "header")
            else:
                value = _utf8(p, n, "header")
            p += n
        else:
            p = _skip(p, end, wire)
    headers[key] = value
    return 0


def decode_message(data):
    """Parse Asynq ``TaskMessage`` bytes; raise ``fastq.DecodeError`` on malformed input.

    Unknown fields are skipped (and kept in ``unknown``); a known field sent
    with an unexpected wire type is treated as unknown, as protobuf does.
    """
    cdef bytes buf
    if type(data) is bytes:
        buf = <bytes>data
    elif isinstance(data, (bytearray, memoryview)):
        buf = bytes(data)
    else:
        raise TypeError(f"decode_message() needs bytes, not {type(data).__name__}")
    cdef const unsigned char* base = <const unsigned char*>PyBytes_AS_STRING(buf)
    cdef const unsigned char* p = base
    cdef const unsigned char* end = base + PyBytes_GET_SIZE(buf)
    cdef const unsigned char* start
    cdef uint64_t tag, value
    cdef unsigned int field, wire
    cdef Py_ssize_t n
    cdef bytearray unknown = None
    cdef TaskMessage msg = TaskMessage.__new__(TaskMessage)
    msg.type = msg.id = msg.queue = msg.error_msg = msg.unique_key = msg.group_key = EMPTY_STR
    msg.payload = msg.unknown = EMPTY_BYTES
    msg.headers = {}
    while p < end:
        start = p
        p = _get_varint(p, end, &tag)
        field = <unsigned int>(tag >> 3)
        wire = <unsigned int>(tag & 7)
        if field == 0:
            raise DecodeError("invalid field number 0")
        if wire == 2 and field <= 15 and field not in (5, 6, 8, 9, 11, 12, 13):
            p = _get_len(p, end, &n, field)
            if field == 1:
                msg.type = _utf8(p, n, "type")
            elif field == 2:
                msg.payload = PyBytes_FromStringAndSize(<const char*>p, n)
            elif field == 3:
                msg.id = _utf8(p, n, "id")
            elif field == 4:
                msg.queue = _utf8(p, n, "queue")
            elif field == 7:
                msg.error_msg = _utf8(p, n, "error_msg")
            elif field == 10:
                msg.unique_key = _utf8(p, n, "unique_key")
            elif field == 14:
                msg.group_key = _utf8(p, n, "group_key")
            else:  # 15
                _decode_header(p, p + n, msg.headers)
            p += n
        elif wire == 0 and field in (5, 6, 8, 9, 11, 12, 13):
            p = _get_varint(p, end, &value)
            if field == 5:
                msg.retry = <int32_t>value
            elif field == 6:
                msg.retried = <int32_t>value
            elif field == 8:
                msg.timeout = <int64_t>value
            elif field == 9:
                msg.deadline = <int64_t>value
            elif field == 11:
                msg.last_failed_at = <int64_t>value
            elif field == 12:
                msg.retention = <int64_t>value
            else:
                msg.completed_at = <int64_t>value
        else:
            p = _skip(p, end, wire)
            if unknown is None:
                unknown = bytearray()
            unknown += PyBytes_FromStringAndSize(<const char*>start, p - start)
    if unknown is not None:
        msg.unknown = bytes(unknown)
    return msg


# ---------------------------------------------------------------------------
# task IDs

cdef const char* HEX = b"0123456789abcdef"


def new_task_ids(Py_ssize_t n):
    """``n`` random UUID v4 strings in canonical lowercase form (Go's ``uuid.NewString()``)."""
    cdef bytes raw = os.urandom(16 * n)
    cdef const unsigned char* r = <const unsigned char*>PyBytes_AS_STRING(raw)
    cdef char buf[36]
    cdef Py_ssize_t i, j, k
    cdef unsigned char b
    cdef list out = []
    for i in range(n):
        k = 0
        for j in range(16):
            b = r[16 * i + j]
            if j == 6:
                b = (b & 0x0F) | 0x40  # version 4
            elif j == 8:
                b = (b & 0x3F) | 0x80  # RFC 4122 variant
            if j == 4 or j == 6 or j == 8 or j == 10:
                buf[k] = 45  # '-'
                k += 1
            buf[k] = HEX[b >> 4]
            buf[k + 1] = HEX[b & 15]
            k += 2
        out.append(PyUnicode_DecodeUTF8(buf, 36, NULL))
    return out
