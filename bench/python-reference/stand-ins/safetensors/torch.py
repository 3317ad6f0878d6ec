# Benchmark stand-in for `safetensors.torch.load_file`, written for codi-adapter's
# bench/convert-7b.js: NOT the library. Debian has no package of it and the benchmark runs offline.
#
# It does what the library does on the CPU: the file is mapped copy-on-write and every tensor is a
# view of its bytes in the mapping, so a page is read when a tensor first touches it. The format is
# the safetensors one: an 8-byte little-endian header length, a JSON header of
# {name: {dtype, shape, data_offsets: [begin, end]}} (and "__metadata__"), then the data, the offsets
# counted from its start.
import json
import struct

import numpy
import torch

# the element types the benchmark's adapters use, as (how numpy maps the bytes, what torch sees)
_ELEMENTS = {
    "F32": (numpy.float32, torch.float32),
    "F16": (numpy.float16, torch.float16),
    "BF16": (numpy.int16, torch.bfloat16),
}


def load_file(filename, device="cpu"):
    if str(device) != "cpu":
        raise ValueError("benchmark stand-in: the CPU only")
    with open(filename, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(length))
    start = 8 + length
    mapped = numpy.memmap(filename, dtype=numpy.uint8, mode="c")
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        as_numpy, as_torch = _ELEMENTS[entry["dtype"]]
        begin, end = entry["data_offsets"]
        values = mapped[start + begin : start + end].view(as_numpy).reshape(entry["shape"])
        tensor = torch.from_numpy(values)
        tensors[name] = tensor if tensor.dtype == as_torch else tensor.view(as_torch)
    return tensors
