#!/usr/bin/env python3
"""Reads a loom checkpoint from Python and checks it (docs/checkpoint_format.md).

    python3 tools/check_safetensors_python.py runs/train_mlp/model.safetensors

Two readers:
  1. Plain Python (json + struct, always run): the safetensors layout, the header checksum
     "loom.header_crc32c", the loom metadata (format 2) and the CRC-32C of every tensor.
  2. The `safetensors` package, when it is installed: it must read every tensor with the same
     bytes and the same metadata. When it is missing, this part is skipped with a message.

Prints one line per tensor ("tensor NAME DTYPE SHAPE SUM"), one per loom entry
("entry KEY KIND"), and "ok" at the end. Exit status 0 when every check passed, 1 when one
failed (the message names the tensor or field), 2 for usage errors.
"""
import json
import struct
import sys

# CRC-32C (Castagnoli), reflected polynomial 0x82F63B78, as fabric/io/crc32c.h.
_TABLE = []
for _i in range(256):
    _c = _i
    for _ in range(8):
        _c = (_c >> 1) ^ 0x82F63B78 if _c & 1 else _c >> 1
    _TABLE.append(_c)


def crc32c(data, crc=0):
    crc ^= 0xFFFFFFFF
    table = _TABLE
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


# safetensors dtype code -> (element size, struct format or None for bf16)
DTYPES = {"F64": (8, "d"), "F32": (4, "f"), "F16": (2, "e"), "BF16": (2, None),
          "I64": (8, "q"), "I32": (4, "i"), "U8": (1, "B"), "BOOL": (1, "B")}

CRC_KEY = "loom.header_crc32c"


class CheckError(Exception):
    pass


def values(dtype, raw):
    size, fmt = DTYPES[dtype]
    n = len(raw) // size
    if fmt is None:  # bf16: the upper half of an f32
        halves = struct.unpack("<%dH" % n, raw)
        return [struct.unpack("<f", struct.pack("<I", h << 16))[0] for h in halves]
    return list(struct.unpack("<%d%s" % (n, fmt), raw))


def read_plain(path):
    """Returns (tensors {name: (dtype, shape, bytes)} in header order, metadata dict)."""
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8:
        raise CheckError("%s: shorter than the 8-byte length field" % path)
    (n,) = struct.unpack("<Q", blob[:8])
    if 8 + n > len(blob):
        raise CheckError("%s: the header length %d runs past the end of the file" % (path, n))
    if (8 + n) % 8 != 0:
        raise CheckError("%s: the data section does not start 8-byte aligned" % path)
    text = blob[8:8 + n]
    header = json.loads(text.decode("utf-8"), object_pairs_hook=lambda kv: dict(kv))
    # Python 3.7+ dicts keep the header's order: the order loom wrote the tensors in.
    meta = header.pop("__metadata__", {})

    # Header checksum: CRC-32C of the length field and header text with the 8 digits read as
    # "00000000" (fabric/io/safetensors.h, "Header checksum").
    pattern = ('"%s":"' % CRC_KEY).encode()
    at = text[:256].find(pattern)
    if at < 0:
        raise CheckError("%s: no %s in the first 256 bytes of the header" % (path, CRC_KEY))
    digits_at = 8 + at + len(pattern)
    stored = blob[digits_at:digits_at + 8].decode()
    zeroed = blob[:digits_at] + b"00000000" + blob[digits_at + 8:8 + n]
    actual = "%08x" % crc32c(zeroed)
    if stored != actual:
        raise CheckError("%s: header CRC-32C is %s but the header records %s" % (path, actual, stored))

    data = blob[8 + n:]
    spans = []
    tensors = {}
    for name, info in header.items():
        dtype, shape, (b, e) = info["dtype"], info["shape"], info["data_offsets"]
        if dtype not in DTYPES:
            raise CheckError("tensor '%s': unknown dtype %s" % (name, dtype))
        count = 1
        for d in shape:
            count *= d
        if e - b != count * DTYPES[dtype][0]:
            raise CheckError("tensor '%s': %d bytes for shape %s of %s" % (name, e - b, shape, dtype))
        spans.append((b, e))
        tensors[name] = (dtype, shape, data[b:e])
    cursor = 0
    for b, e in sorted(spans):
        if b != cursor:
            raise CheckError("%s: the tensors' byte ranges leave a hole or overlap at %d" % (path, cursor))
        cursor = e
    if cursor != len(data):
        raise CheckError("%s: %d bytes after the last tensor" % (path, len(data) - cursor))
    return tensors, meta


def check_loom(path, tensors, meta):
    if "loom" not in meta:
        raise CheckError("%s: no 'loom' key in __metadata__: not written by Fabric::save" % path)
    loom = json.loads(meta["loom"])
    if loom.get("format") != 2:
        raise CheckError("%s: loom format %r, this script reads format 2" % (path, loom.get("format")))
    crcs = loom["crc32c"]
    if set(crcs) != set(tensors):
        raise CheckError("%s: the crc32c list and the tensors differ: %s" %
                         (path, sorted(set(crcs) ^ set(tensors))))
    for name, (_, _, raw) in tensors.items():
        actual = crc32c(raw)
        if actual != crcs[name]:
            raise CheckError("tensor '%s' is corrupt: CRC-32C %08x, the checkpoint recorded %08x" %
                             (name, actual, crcs[name]))
    return loom


def check_with_package(path, tensors, meta):
    try:
        from safetensors import safe_open  # noqa: F401
    except ImportError:
        print("safetensors package not installed: skipped the package check "
              "(the plain-Python reader above checked the file)")
        return
    import numpy  # the package's numpy reader needs it
    with safe_open(path, framework="numpy") as f:
        if dict(f.metadata() or {}) != meta:
            raise CheckError("the safetensors package reads other metadata")
        if set(f.keys()) != set(tensors):
            raise CheckError("the safetensors package sees other tensors")
        for name, (dtype, shape, raw) in tensors.items():
            if dtype == "BF16":  # numpy has no bfloat16: compared by the plain reader only
                continue
            array = f.get_tensor(name)
            if list(array.shape) != list(shape) or numpy.ascontiguousarray(array).tobytes() != raw:
                raise CheckError("tensor '%s': the safetensors package reads other values" % name)
    print("safetensors package: read every tensor with the same bytes and metadata")


def main(argv):
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    path = argv[1]
    try:
        tensors, meta = read_plain(path)
        loom = check_loom(path, tensors, meta)
        for name, (dtype, shape, raw) in tensors.items():
            total = sum(float(v) for v in values(dtype, raw))
            print("tensor %s %s %s %r" % (name, dtype, ",".join(map(str, shape)) or "-", total))
        for key, entry in loom["entries"].items():
            print("entry %s %s" % (key, entry["kind"]))
        check_with_package(path, tensors, meta)
    except (CheckError, OSError, ValueError, KeyError) as e:
        print("check_safetensors_python: %s" % e, file=sys.stderr)
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
