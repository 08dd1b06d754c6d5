#!/usr/bin/env python3
"""Writes the small checkpoint fixtures the tests read, with the Python standard library only.

The files reproduce what `torch.save` writes (a zip archive with `<prefix>/data.pkl`, pickled
with persistent ids for storages, and raw little-endian storages in `<prefix>/data/<key>`)
without needing PyTorch: stand-in `torch` / `torch._utils` modules make pickle emit exactly the
globals torch emits. Expected values are simple formulas the C++ tests recompute.
Run from anywhere: python3 tests/data/make_fixtures.py
"""
import collections
import os
import pickle
import struct
import sys
import types
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))

torch = types.ModuleType("torch")
utils = types.ModuleType("torch._utils")
torch._utils = utils
sys.modules["torch"] = torch
sys.modules["torch._utils"] = utils


def _global(mod, name, obj):
    obj.__module__ = mod.__name__
    obj.__qualname__ = name
    obj.__name__ = name
    setattr(mod, name, obj)
    return obj


_rebuild_tensor_v2 = _global(utils, "_rebuild_tensor_v2", lambda *a: None)
_rebuild_parameter = _global(utils, "_rebuild_parameter", lambda *a: None)
STORAGE = {name: _global(torch, name, type(name, (), {})) for name in [
    "FloatStorage", "DoubleStorage", "HalfStorage", "BFloat16Storage", "LongStorage", "IntStorage",
    "ByteStorage", "BoolStorage"]}


class Storage:
    def __init__(self, kind, key, numel, data):
        self.kind, self.key, self.numel, self.data = kind, key, numel, data


class Tensor:
    def __init__(self, storage, offset, size, stride, param=False):
        self.storage, self.offset, self.size, self.stride, self.param = storage, offset, size, stride, param

    def __reduce_ex__(self, proto):
        plain = (_rebuild_tensor_v2, (self.storage, self.offset, tuple(self.size), tuple(self.stride), False,
                                      collections.OrderedDict()))
        if self.param:
            return (_rebuild_parameter, (Tensor(self.storage, self.offset, self.size, self.stride), False,
                                         collections.OrderedDict()))
        return plain


class TorchPickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, Storage):
            return ("storage", STORAGE[obj.kind], obj.key, "cpu", obj.numel)
        return None


def f32(vals): return struct.pack("<%df" % len(vals), *vals)
def f64(vals): return struct.pack("<%dd" % len(vals), *vals)
def f16(vals): return struct.pack("<%de" % len(vals), *vals)
def i64(vals): return struct.pack("<%dq" % len(vals), *vals)
def bf16(vals): return b"".join(struct.pack("<f", v)[2:] for v in vals)


def save(name, obj, storages, prefix="archive", protocol=2, byteorder=True, data_pkl=None):
    buf = __import__("io").BytesIO()
    TorchPickler(buf, protocol=protocol).dump(obj)
    with zipfile.ZipFile(os.path.join(HERE, name), "w", zipfile.ZIP_STORED) as z:
        z.writestr(prefix + "/data.pkl", data_pkl if data_pkl is not None else buf.getvalue())
        if byteorder:
            z.writestr(prefix + "/byteorder", "little")
        for s in storages:
            z.writestr(prefix + "/data/" + s.key, s.data)
        z.writestr(prefix + "/version", "3\n")


class LegacyPickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, Storage):
            return ("storage", STORAGE[obj.kind], obj.key, "cpu", obj.numel, None)
        return None


def save_legacy(name, obj, storages):
    """torch.save before 1.6: pickles back to back, then each storage as int64 count + raw bytes."""
    with open(os.path.join(HERE, name), "wb") as f:
        pickle.dump(0x1950a86a20f9469cfc6c, f, protocol=2)
        pickle.dump(1001, f, protocol=2)
        pickle.dump({"protocol_version": 1001, "little_endian": True,
                     "type_sizes": {"short": 2, "int": 4, "long": 4}}, f, protocol=2)
        LegacyPickler(f, protocol=2).dump(obj)
        keys = sorted(s.key for s in storages)
        pickle.dump(keys, f, protocol=2)
        by_key = {s.key: s for s in storages}
        for k in keys:
            f.write(struct.pack("<q", by_key[k].numel))
            f.write(by_key[k].data)


def mixed():
    """A PyTorch-1.x-style training checkpoint: the state dict nested under 'state_dict'."""
    s0 = Storage("FloatStorage", "0", 6, f32([0, 1, 2, 3, 4, 5]))
    s1 = Storage("HalfStorage", "1", 3, f16([0.5, -1.25, 2.0]))
    s2 = Storage("BFloat16Storage", "2", 4, bf16([1.0, -2.0, 0.15625, 3.0]))
    s3 = Storage("LongStorage", "3", 3, i64([-7, 0, 5_000_000_000]))
    s4 = Storage("DoubleStorage", "4", 4, f64([0.1, 0.2, 0.3, 0.4]))
    s5 = Storage("ByteStorage", "5", 5, bytes([0, 1, 2, 254, 255]))
    s6 = Storage("BoolStorage", "6", 3, bytes([1, 0, 1]))
    s7 = Storage("FloatStorage", "7", 5, f32([10, 11, 12, 13, 14]))
    sd = collections.OrderedDict()
    sd["w.f32"] = Tensor(s0, 0, [2, 3], [3, 1])
    sd["w.transposed"] = Tensor(s0, 0, [3, 2], [1, 3])   # non-contiguous view of the same storage
    sd["w.f16"] = Tensor(s1, 0, [3], [1])
    sd["w.bf16"] = Tensor(s2, 0, [2, 2], [2, 1])
    sd["w.i64"] = Tensor(s3, 0, [3], [1])
    sd["w.f64"] = Tensor(s4, 0, [2, 2], [2, 1])
    sd["w.u8"] = Tensor(s5, 0, [5], [1])
    sd["w.bool"] = Tensor(s6, 0, [3], [1])
    sd["shared.a"] = Tensor(s7, 0, [2], [1])             # two views into one storage
    sd["shared.b"] = Tensor(s7, 2, [3], [1])
    sd["param"] = Tensor(s7, 1, [2, 2], [2, 1], param=True)
    sd["scalar"] = Tensor(s7, 4, [], [])
    sd._metadata = collections.OrderedDict([("", {"version": 1})])
    ckpt = {"epoch": 3, "lr": 0.1, "note": "hello", "flags": [True, None], "state_dict": sd}
    save("pt1x_nested.pt", ckpt, [s0, s1, s2, s3, s4, s5, s6, s7], prefix="archive", byteorder=False)
    # The same state dict pickled with protocol 4 (FRAME, SHORT_BINUNICODE, MEMOIZE, STACK_GLOBAL).
    save("pt_proto4.pt", sd, [s0, s1, s2, s3, s4, s5, s6, s7], prefix="proto4", protocol=4)
    # The same state dict in the legacy (pre-1.6) format, as pytorch-fid's Inception weights are.
    save_legacy("pt_legacy.pt", sd, [s0, s1, s2, s3, s4, s5, s6, s7])


def bad():
    s = Storage("FloatStorage", "0", 4, f32([1, 2, 3, 4]))
    # A pickle that would run a shell command when loaded by Python's pickle.
    evil = b"\x80\x02cposix\nsystem\nq\x00X\x0a\x00\x00\x00echo pwnedq\x01\x85q\x02Rq\x03."
    save("evil_system.pt", None, [], data_pkl=evil)
    # Protocol 4 STACK_GLOBAL of builtins.eval.
    evil4 = (b"\x80\x04\x8c\x08builtins\x94\x8c\x04eval\x94\x93\x94\x8c\x0bprint('hi')\x94\x85\x94R\x94.")
    save("evil_eval.pt", None, [], data_pkl=evil4)
    save("not_state_dict.pt", [1, 2, 3], [])
    save("short_storage.pt", collections.OrderedDict(w=Tensor(Storage("FloatStorage", "0", 100, f32([1, 2])), 0,
                                                                [100], [1])),
         [Storage("FloatStorage", "0", 100, f32([1, 2]))])
    save("view_out_of_range.pt", collections.OrderedDict(w=Tensor(s, 0, [10], [1])), [s])
    save("missing_storage.pt", collections.OrderedDict(w=Tensor(s, 0, [4], [1])), [])
    with open(os.path.join(HERE, "legacy.pt"), "wb") as f:
        f.write(b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.")  # legacy magic-number pickle


if __name__ == "__main__":
    mixed()
    bad()
