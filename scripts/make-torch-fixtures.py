#!/usr/bin/env python3
"""Writes the genuine torch.save files under test/fixtures/torch/ (a one-off; the outputs are committed).

Needs a real PyTorch, which neither the tests nor the tool ever need:

    python3 scripts/make-torch-fixtures.py            # one writer: the torch of this interpreter
    /path/to/other/python scripts/make-torch-fixtures.py

Run it with each torch at hand (the committed files come from torch 1.13 and torch 2.x). Each run
writes `<tag>-<case>.bin` files, where <tag> names the writer (`torch1`, `torch2`), and merges what
torch itself loads back from each of them (names, dtypes, shapes, strides, storage offsets, which
storage each tensor lies in, the storages' sizes) into `expected.json`, so the tests compare the
scanner's reading with torch's own. It also records, in `cpython-text-numbers.json`, what CPython's
C unpickler makes of protocol-0 INT and LONG arguments.
"""
import collections
import io
import json
import os
import pickle
import sys

import torch

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'test', 'fixtures', 'torch')
TAG = 'torch%s' % torch.__version__.split('.')[0]

DTYPES = {torch.float32: 'F32', torch.float16: 'F16', torch.bfloat16: 'BF16'}


def lora(dtype, seed):
    g = torch.Generator().manual_seed(seed)
    p = 'base_model.model.model.layers.0.self_attn'
    return {
        p + '.q_proj.lora_A.weight': torch.randn(4, 16, generator=g).to(dtype),
        p + '.q_proj.lora_B.weight': torch.randn(16, 4, generator=g).to(dtype),
        p + '.v_proj.lora_A.weight': torch.randn(4, 16, generator=g).to(dtype),
        p + '.v_proj.lora_B.weight': torch.randn(8, 4, generator=g).to(dtype),
    }


def views():
    g = torch.Generator().manual_seed(7)
    base = torch.randn(64, generator=g)
    square = base.view(8, 8)
    return {
        'whole': square,
        'slice': base[8:24],
        'transposed': square.t(),
        'columns': square[:, 2:5],
        'every_other': base[1::2],
        'expanded': base[:4].expand(3, 4),
        'scalar': base[5],
        'empty': base[:0],
        'own': torch.randn(3, 5, generator=g).to(torch.bfloat16),
        'half_view': torch.randn(6, 4, generator=g).half()[1:5:2],
    }


def state_dict():
    torch.manual_seed(3)
    model = torch.nn.Sequential(torch.nn.Linear(6, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2, bias=False))
    sd = model.state_dict()
    assert isinstance(sd, collections.OrderedDict) and hasattr(sd, '_metadata')
    return sd


def parameters():
    g = torch.Generator().manual_seed(11)
    return {
        'param': torch.nn.Parameter(torch.randn(2, 3, generator=g)),
        'frozen': torch.nn.Parameter(torch.randn(3, generator=g).half(), requires_grad=False),
    }


CASES = {
    'f32': (lambda: lora(torch.float32, 1), {}),
    'f16': (lambda: lora(torch.float16, 2), {}),
    'bf16': (lambda: lora(torch.bfloat16, 3), {}),
    'views': (views, {}),
    'state-dict': (state_dict, {}),
    'parameters': (parameters, {}),
    'protocol4': (views, {'pickle_protocol': 4}),
    'protocol5': (lambda: lora(torch.float16, 4), {'pickle_protocol': 5}),
    'legacy': (lambda: lora(torch.float32, 5), {'_use_new_zipfile_serialization': False}),
}


def describe(loaded):
    """What torch loaded: each tensor and which storage (numbered in order of first use) it lies in."""
    keys = {}
    tensors = []
    storages = []
    for name, t in loaded.items():
        s = t.untyped_storage() if hasattr(t, 'untyped_storage') else t.storage().untyped() if hasattr(t.storage(), 'untyped') else t.storage()._untyped()
        ptr = s.data_ptr()
        if ptr not in keys:
            keys[ptr] = str(len(keys))
            storages.append({'key': keys[ptr], 'byteLength': s.nbytes()})
        tensors.append({
            'name': name,
            'dtype': DTYPES[t.dtype],
            'shape': list(t.shape),
            'stride': list(t.stride()),
            'storageOffset': t.storage_offset(),
            'storageKey': keys[ptr],
        })
    return {'tensors': tensors, 'storages': storages}


def text_numbers():
    """What the C unpickler makes of INT and LONG lines: an int (as a string), a bool, or an error."""
    lines = [
        b'0', b'1', b'00', b'01', b'10', b'-1', b'-0', b'+0', b'+1', b' 1', b' 0', b'\t1', b'010', b'0010',
        b'02', b'08', b'0x10', b'0X1f', b'0o17', b'0b101', b'1_000', b'0_0', b'0x_1f', b'0x_', b'0b_',
        b'0o_', b'12 ', b' 12 ', b'12\r', b'\x0b12', b'12\x00junk', b'1\x00', b'99999999999999999999',
        b'-9223372036854775808', b'9223372036854775807', b'9223372036854775808', b'0777777777777777777777',
        b'1__0', b'_1', b'1_', b'0_10', b'1L', b'+', b'-', b'0x', b'1e3', b'\xa012', b'', b' ', b'0x1g',
        b'- 1', b'+-1', b'00000', b'0_', b'1_0_0', b'0b', b'0B11', b'0O7', b'00x1', b'\x0c7', b'7\x0c',
        b'123456789012345678901234567890123456789012345', b'4\x00zz', b'0\x00', b'\x001',
        b'7' * 4300, b'7' * 4301, b'0x' + b'f' * 5000, b'0' * 5000, b'1_' * 2000 + b'1',
    ]
    floats = [
        b'1.5', b'-0.25', b'.5', b'5.', b'1e3', b'1E-3', b'+1e+3', b'inf', b'-Infinity', b'NaN', b'nan', b'1e500',
        b'-1e500', b'1e-500', b' 1.5', b'1.5 ', b'1_0.5', b'0x1p3', b'1e', b'.', b'', b'1.5\x00x', b'infinit',
        b'1.7976931348623157e308', b'1.7976931348623159e308', b'e5', b'--1',
    ]
    out = []
    for line in lines:
        for op in (b'I', b'L'):
            for body in ([line] if op == b'I' else [line, line + b'L']):
                data = op + body + b'\n.'
                try:
                    value = pickle.Unpickler(io.BytesIO(data)).load()
                    if isinstance(value, bool):
                        result = {'bool': value}
                    elif value.bit_length() > 256:
                        # too long to write in decimal (sys.get_int_max_str_digits)
                        result = {'int': 'large'}
                    else:
                        result = {'int': str(value)}
                except Exception as e:  # noqa: BLE001 - every refusal is recorded by its type
                    result = {'error': type(e).__name__}
                out.append({'op': op.decode(), 'line': body.decode('latin1'), **result})
    for line in floats:
        try:
            value = pickle.Unpickler(io.BytesIO(b'F' + line + b'\n.')).load()
            result = {'float': repr(value)}
        except Exception as e:  # noqa: BLE001
            result = {'error': type(e).__name__}
        out.append({'op': 'F', 'line': line.decode('latin1'), **result})
    return out


def main():
    os.makedirs(OUT, exist_ok=True)
    expected_path = os.path.join(OUT, 'expected.json')
    expected = {}
    if os.path.exists(expected_path):
        with open(expected_path) as f:
            expected = json.load(f)
    for case, (make, kwargs) in CASES.items():
        name = '%s-%s.bin' % (TAG, case)
        path = os.path.join(OUT, name)
        torch.save(make(), path, **kwargs)
        loaded = torch.load(path, weights_only=False) if TAG != 'torch1' else torch.load(path)
        entry = describe(loaded)
        entry['writer'] = 'torch ' + torch.__version__
        entry['kwargs'] = {k: v for k, v in kwargs.items()}
        expected[name] = entry
    with open(expected_path, 'w') as f:
        json.dump(dict(sorted(expected.items())), f, indent=1)
        f.write('\n')
    with open(os.path.join(OUT, 'cpython-text-numbers.json'), 'w') as f:
        json.dump({'python': sys.version.split()[0], 'results': text_numbers()}, f, indent=1)
        f.write('\n')


if __name__ == '__main__':
    main()
