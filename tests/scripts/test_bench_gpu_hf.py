#!/usr/bin/env python3
"""scripts/bench_gpu_hf.py loads the model in bf16 on any transformers: `dtype=` where it is
understood, `torch_dtype=` where `dtype=` raises TypeError (before 4.56) or is ignored, and it
stops naming the dtypes when the parameters are still not bf16. Stand-ins for torch and the
model class: no torch needed.

    test_bench_gpu_hf.py SOURCE_DIR
"""
import importlib.util
import os
import sys
import unittest


class Dtype:
    def __init__(self, name):
        self.name = name

    def __str__(self):
        return f"torch.{self.name}"


class FakeTorch:
    bfloat16 = Dtype("bfloat16")
    float32 = Dtype("float32")


class Param:
    def __init__(self, dtype):
        self.dtype = dtype


def model_class(accepts_dtype, honours_dtype=True, honours_torch_dtype=True):
    """A from_pretrained as some transformers version has it; calls are recorded."""
    class Model:
        calls = []

        def __init__(self, dtype):
            self.dtype = dtype

        def parameters(self):
            return [Param(self.dtype), Param(self.dtype)]

        @classmethod
        def from_pretrained(cls, snap, **kw):
            cls.calls.append(sorted(kw))
            assert kw.get("attn_implementation") == "sdpa"
            if "dtype" in kw:
                if not accepts_dtype:
                    raise TypeError("__init__() got an unexpected keyword argument 'dtype'")
                return cls(kw["dtype"] if honours_dtype else FakeTorch.float32)
            return cls(kw["torch_dtype"] if honours_torch_dtype else FakeTorch.float32)
    Model.calls = []
    return Model


def load_script(src):
    spec = importlib.util.spec_from_file_location(
        "bench_gpu_hf", os.path.join(src, "scripts", "bench_gpu_hf.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class LoadBf16(unittest.TestCase):
    def test_dtype_understood(self):
        cls = model_class(accepts_dtype=True)
        m = hf.load_bf16(cls, "snap", FakeTorch)
        self.assertIs(m.dtype, FakeTorch.bfloat16)
        self.assertEqual(cls.calls, [["attn_implementation", "dtype"]])

    def test_dtype_raises(self):
        cls = model_class(accepts_dtype=False)
        m = hf.load_bf16(cls, "snap", FakeTorch)
        self.assertIs(m.dtype, FakeTorch.bfloat16)
        self.assertEqual(cls.calls, [["attn_implementation", "dtype"],
                                     ["attn_implementation", "torch_dtype"]])

    def test_dtype_ignored(self):
        cls = model_class(accepts_dtype=True, honours_dtype=False)
        m = hf.load_bf16(cls, "snap", FakeTorch)
        self.assertIs(m.dtype, FakeTorch.bfloat16)
        self.assertEqual(len(cls.calls), 2)

    def test_never_bf16(self):
        cls = model_class(accepts_dtype=False, honours_torch_dtype=False)
        with self.assertRaises(SystemExit) as e:
            hf.load_bf16(cls, "snap", FakeTorch)
        self.assertIn("torch.float32", str(e.exception.code))
        self.assertIn("not torch.bfloat16", str(e.exception.code))


if __name__ == "__main__":
    hf = load_script(sys.argv.pop(1))
    unittest.main(verbosity=2)
