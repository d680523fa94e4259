#!/usr/bin/env python3
"""Tests of gen_sim.py (the .cu -> host C++ rewriter of the kernel simulation):
the rewrites it makes, and that it fails loudly (exit 1, naming the file and
line) on what it cannot simulate or did not rewrite completely."""
import os
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
GEN = os.path.join(HERE, "gen_sim.py")

GOOD = """\
// comment with __shared__ and <<< in it
#include "kernels/cuda/common.cuh"
#include <mma.h>
#include "kernels/cuda/ptx.cuh"
namespace myelin::cuda {
template <typename T>
__global__ void __launch_bounds__(256, 2)
    k1(T* out, int n) {
  extern __shared__ __align__(16) float smem[];
  __shared__ float part[2][256 / 32];
  __shared__ int flag;
#pragma unroll
  for (int i = 0; i < 4; ++i) out[i] = T(smem[i] + part[0][i] + flag);
}
__global__ void k2() {}
void host(float* p, cudaStream_t s) {
  MYELIN_CUDA_CHECK(cudaFuncSetAttribute(k1<float>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         65536));
  k1<float>
      <<<dim3(2, 3), 256, 65536, s>>>(p, 4);
  k2<<<1, 32>>>();
  MYELIN_CUDA_CHECK(cudaMemcpyAsync(p, p, 4, cudaMemcpyDeviceToDevice, s));
}
}
"""


def gen(text, name="k.cu"):
    with tempfile.TemporaryDirectory() as d:
        src, out = os.path.join(d, name), os.path.join(d, "out.cpp")
        with open(src, "w") as f:
            f.write(text)
        p = subprocess.run([sys.executable, GEN, src, out], capture_output=True, text=True)
        body = None
        if p.returncode == 0:
            with open(out) as f:
                body = f.read()
        return p.returncode, p.stderr, body


class Rewrites(unittest.TestCase):
    def test_good_file(self):
        rc, err, out = gen(GOOD)
        self.assertEqual(rc, 0, err)
        code = out.split("\n", 3)[3]  # after the header and #line
        self.assertEqual(code.count("\n"), GOOD.count("\n"), "line numbers kept")
        self.assertIn('#include "sim_common.cuh"', out)
        self.assertIn('#include "sim_wmma.h"', out)
        self.assertIn('#include "sim_ptx.h"', out)
        self.assertNotIn("ptx.cuh", out)
        self.assertIn("float* const smem = static_cast<float*>(::sim::detail::dynamic_shared(16));",
                      out)
        self.assertIn("auto& part = ::sim::detail::static_shared<float[2][256/32], 0>([] {});", out)
        self.assertIn("auto& flag = ::sim::detail::static_shared<int, 0>([] {});", out)
        self.assertIn("k1(T* out, int n) { ::sim::detail::launch_bounds(256);", out)
        self.assertIn('::sim::launch({"k1<float>", __FILE__, __LINE__}, '
                      "::sim::config(dim3(2, 3), 256, 65536, s), k1<float>, ", out)
        self.assertIn('::sim::launch({"k2", __FILE__, __LINE__}, ::sim::config(1, 32), k2);', out)
        self.assertIn("::sim::cudaFuncSetAttribute(k1<float>", out)
        self.assertIn("::sim::cudaMemcpyAsync(", out)
        for gone in ("__shared__", "<<<", "__launch_bounds__", "#pragma unroll", "comment"):
            self.assertNotIn(gone, code)
        lines = out.split("\n")
        self.assertTrue(lines[2].startswith("#line 1 "), lines[2])


class Failures(unittest.TestCase):
    def expect_error(self, text, needle, name="bad.cu"):
        rc, err, _ = gen(text, name)
        self.assertEqual(rc, 1, err)
        self.assertIn(name, err)
        self.assertIn(needle, err)

    HEAD = '#include "kernels/cuda/common.cuh"\n'

    def test_unsupported(self):
        body = "__global__ void k(float* p) { %s }\nvoid h() { k<<<1, 1>>>(nullptr); }\n"
        self.expect_error(self.HEAD + body % "atomicAdd(p, 1.0f);", "atomics")
        self.expect_error(self.HEAD + body % 'asm("trap;");', "inline assembly")
        self.expect_error(self.HEAD + body % "float x = __ldg(p);", "__ldg")
        self.expect_error(self.HEAD + "#if __CUDA_ARCH__ >= 800\n#endif\n" + body % "",
                          "__CUDA_ARCH__")
        self.expect_error(self.HEAD + body % "" + "void m() { cudaMallocAsync(0, 0, 0); }\n",
                          "cudaMallocAsync")
        self.expect_error(self.HEAD + body % "" + "void g() { cublasLtMatmul(0); }\n", "cuBLAS")

    def test_incomplete_rewrites(self):
        launch = "void h() { k<<<1, 1>>>(nullptr); }\n"
        self.expect_error(self.HEAD + "__global__ void k(float* p) { __shared__ float a[4], b[4]; }\n"
                          + launch, "__shared__")
        self.expect_error(self.HEAD + "__global__ void k(float* p) { __shared__ float a[4] = {}; }\n"
                          + launch, "__shared__")
        self.expect_error(self.HEAD + "__global__ void k(float* p) {}\n"
                          "void h() { (k)<<<1, 1>>>(nullptr); }\n", "kernel launches")
        self.expect_error(self.HEAD + "__global__ void k(float* p) {}\nvoid h() {}\n",
                          "no kernel launch")
        self.expect_error("__global__ void k(float* p) {}\nvoid h() { k<<<1, 1>>>(nullptr); }\n",
                          "common.cuh")
        self.expect_error("#pragma once\nint x;\n", "__CUDACC__", name="common.cuh")
        self.expect_error("/* unterminated", "unterminated comment")


if __name__ == "__main__":
    unittest.main()
