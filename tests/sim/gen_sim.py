#!/usr/bin/env python3
"""Turns a CUDA source of kernels/cuda/ into host C++ for the CPU simulation
(tests/sim; SIMULATION ONLY, see sim_runtime.h). Run by CMake at build time;
the output lives in the build tree and is never committed.

    gen_sim.py [--allow-cublaslt] INPUT OUTPUT

--allow-cublaslt (matmul.cu, engine simulation only) leaves cuBLASLt calls in
place: they resolve to the host emulation in sim_cublaslt.cpp.

The rewrites are few and mechanical; everything else is compiled as written:
  * comments are blanked (line numbers are kept; the output starts with
    #line 1 "INPUT", so compiler messages and simulator reports name the .cu);
  * #include "kernels/cuda/common.cuh" -> the generated sim_common.cuh,
    #include <mma.h> -> sim_wmma.h (mock of nvcuda::wmma),
    #include "kernels/cuda/ptx.cuh" -> sim_ptx.h (mma.sync, ldmatrix, cp.async);
  * #ifdef __CUDACC__ / #if defined(__CUDACC__) -> #if 1, #ifndef __CUDACC__ -> #if 0
    (the device part of common.cuh is compiled and tested too);
  * name<<<grid, block[, smem[, stream]]>>>(args) ->
    ::sim::launch({"name", __FILE__, __LINE__}, ::sim::config(grid, block, ...), name, args);
  * extern __shared__ [__align__(A)] T name[]; -> T* const name = <block's dynamic shared memory>;
  * __shared__ [__align__(A)] T name[D]...; -> auto& name = <block's static array of type T[D]...>;
  * __launch_bounds__(N, ...) is removed and a check that the block has at most N
    threads is put at the start of the kernel body;
  * CUDA runtime calls cudaXxx(...) -> ::sim::cudaXxx(...) (host memory, launch errors);
  * #pragma unroll -> blank (no meaning on the host; g++ warns about it).
It fails (exit status 1, naming the file and line) when a construct is not
rewritten completely: any __shared__, <<<, __launch_bounds__ or __CUDACC__
left over, a runtime call the simulator does not provide, or device features it
cannot simulate (__CUDA_ARCH__, atomics, inline asm, __ldg, cooperative groups,
__constant__/__managed__ memory, cuBLAS in a kernel file).
"""
import os
import re
import sys

SUPPORTED_RUNTIME = {
    "cudaMalloc", "cudaFree", "cudaMemcpy", "cudaMemcpyAsync", "cudaMemset", "cudaMemsetAsync",
    "cudaDeviceSynchronize", "cudaStreamCreateWithFlags", "cudaStreamDestroy",
    "cudaStreamSynchronize", "cudaEventCreate", "cudaEventDestroy", "cudaEventRecord",
    "cudaEventSynchronize", "cudaEventElapsedTime", "cudaGetLastError", "cudaPeekAtLastError",
    "cudaGetErrorName", "cudaGetErrorString", "cudaFuncSetAttribute", "cudaStreamBeginCapture",
    "cudaStreamEndCapture", "cudaStreamIsCapturing", "cudaGraphInstantiate", "cudaGraphLaunch",
    "cudaGraphDestroy", "cudaGraphExecDestroy",
}

# Device features that compile on the host but would not be simulated faithfully.
UNSUPPORTED = [
    (r"__CUDA_ARCH__", "__CUDA_ARCH__ (architecture-specific code paths)"),
    (r"\batomic[A-Z]\w*\s*\(", "atomics"),
    (r"\b(asm|__asm__)\b", "inline assembly / PTX"),
    (r"\b__ldg\s*\(", "__ldg"),
    (r"cooperative_groups", "cooperative groups"),
    (r"\b__constant__\b", "__constant__ memory"),
    (r"\b__managed__\b", "__managed__ memory"),
    (r"\bcuda::(memcpy_async|pipeline|barrier)\b", "asynchronous copies / barriers"),
    (r"\b__pipeline_\w+", "asynchronous copies"),
]


class GenError(Exception):
    pass


def strip_comments(s):
    """Blanks // and /* */ comments (newlines kept); string and char literals stay."""
    out = []
    i, n = 0, len(s)
    while i < n:
        c = s[i]
        if s.startswith("//", i):
            j = s.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif s.startswith("/*", i):
            j = s.find("*/", i + 2)
            if j < 0:
                raise GenError(f"line {s.count(chr(10), 0, i) + 1}: unterminated comment")
            j += 2
            out.append("".join(ch if ch == "\n" else " " for ch in s[i:j]))
            i = j
        elif s.startswith('R"', i) and (i == 0 or not (s[i - 1].isalnum() or s[i - 1] == "_")):
            k = s.find("(", i)
            delim = ")" + s[i + 2:k] + '"'
            j = s.find(delim, k) + len(delim)
            out.append(s[i:j])
            i = j
        elif c in "\"'":
            j = i + 1
            while j < n and s[j] != c:
                j += 2 if s[j] == "\\" else 1
            out.append(s[i:j + 1])
            i = j + 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def line_of(s, pos):
    return s.count("\n", 0, pos) + 1


def count(pattern, s, flags=0):
    return len(re.findall(pattern, s, flags))


def newlines(text):
    return "\n" * text.count("\n")


def split_top_level(args):
    parts, depth, cur = [], 0, ""
    for ch in args:
        if ch in "(<[{":
            depth += 1
        elif ch in ")>]}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return [p.strip() for p in parts]


def rewrite(src, is_common, allow_cublaslt=False):
    s = strip_comments(src)

    # ---- includes ----
    s, n_common = re.subn(r'#include\s+"kernels/cuda/common\.cuh"', '#include "sim_common.cuh"', s)
    s, n_mma = re.subn(r"#include\s+<mma\.h>", '#include "sim_wmma.h"', s)
    s = re.sub(r'#include\s+"kernels/cuda/ptx\.cuh"', '#include "sim_ptx.h"', s)

    # ---- __CUDACC__ conditionals ----
    s, n_cc1 = re.subn(r"#\s*ifdef\s+__CUDACC__\b", "#if 1", s)
    s, n_cc2 = re.subn(r"#\s*if\s+defined\s*\(?\s*__CUDACC__\s*\)?\s*$", "#if 1", s, flags=re.M)
    s, n_cc3 = re.subn(r"#\s*ifndef\s+__CUDACC__\b", "#if 0", s)
    if is_common and n_cc1 + n_cc2 != 1:
        raise GenError(f"expected exactly one '#ifdef __CUDACC__' (the device part), found "
                       f"{n_cc1 + n_cc2}")
    # A closing '#endif // __CUDACC__' is fine: the comment is gone. Anything else is not.
    for m in re.finditer(r"__CUDACC__", s):
        raise GenError(f"line {line_of(s, m.start())}: __CUDACC__ in a form the generator does "
                       f"not rewrite")

    # ---- shared memory ----
    align = r"(?:__align__\s*\(\s*(?P<{}>\w+)\s*\)\s+)?"
    n_shared = count(r"\b__shared__\b", s)
    ext = re.compile(r"\bextern\s+" + align.format("a1") + r"__shared__\s+" + align.format("a2") +
                     r"(?P<type>[A-Za-z_][\w:<>,\s]*?)\s*(?P<name>[A-Za-z_]\w*)\s*\[\s*\]\s*;")

    def ext_sub(m):
        a = m.group("a1") or m.group("a2") or "alignof({})".format(m.group("type").strip())
        t = " ".join(m.group("type").split())
        return (f"{t}* const {m.group('name')} = static_cast<{t}*>("
                f"::sim::detail::dynamic_shared({a}));" + newlines(m.group(0)))

    s, n_ext = ext.subn(ext_sub, s)
    stat = re.compile(r"\b__shared__\s+" + align.format("a") +
                      r"(?P<type>[A-Za-z_][\w:<>,]*(?:\s+[A-Za-z_][\w:<>,]*)*?)\s+"
                      r"(?P<name>[A-Za-z_]\w*)\s*(?P<dims>(?:\[[^\[\];]+\]\s*)*);")

    def stat_sub(m):
        t = " ".join(m.group("type").split())
        dims = "".join(m.group("dims").split()) if m.group("dims") else ""
        return (f"auto& {m.group('name')} = ::sim::detail::static_shared<{t}{dims}, "
                f"{m.group('a') or 0}>([] {{}});" + newlines(m.group(0)))

    s, n_stat = stat.subn(stat_sub, s)
    if n_ext + n_stat != n_shared:
        left = re.search(r"\b__shared__\b", s)
        raise GenError(f"line {line_of(s, left.start()) if left else '?'}: {n_shared} __shared__ "
                       f"declarations, {n_ext + n_stat} rewritten (one declarator per "
                       f"declaration, no initialiser)")

    # ---- __launch_bounds__ ----
    lb = re.compile(r"__launch_bounds__\s*\((?P<args>[^()]*(?:\([^()]*\)[^()]*)*)\)")
    n_lb_total = count(r"__launch_bounds__", s)
    out, pos, n_lb = [], 0, 0
    for m in lb.finditer(s):
        brace = s.find("{", m.end())
        semi = s.find(";", m.end())
        if brace < 0 or (0 <= semi < brace):
            raise GenError(f"line {line_of(s, m.start())}: __launch_bounds__ without a kernel "
                           f"body after it")
        max_threads = split_top_level(m.group("args"))[0]
        out.append(s[pos:m.start()])
        out.append(s[m.end():brace + 1])
        out.append(f" ::sim::detail::launch_bounds({max_threads});")
        pos = brace + 1
        n_lb += 1
    out.append(s[pos:])
    s = "".join(out)
    if n_lb != n_lb_total:
        raise GenError(f"{n_lb_total} __launch_bounds__, {n_lb} rewritten")

    # ---- kernel launches ----
    n_launch_total = count(r"<<<", s)
    launch = re.compile(
        r"(?P<name>(?:[A-Za-z_]\w*\s*::\s*)*[A-Za-z_]\w*"
        r"(?:\s*<[^<>;{}()]*(?:<[^<>;{}()]*>[^<>;{}()]*)*>)?)\s*<<<(?P<cfg>[^;]*?)>>>\s*\(",
        re.S)

    def launch_sub(m):
        name = " ".join(m.group("name").split())
        cfg = " ".join(m.group("cfg").split())
        if not 2 <= len(split_top_level(cfg)) <= 4:
            raise GenError(f"line {line_of(s, m.start())}: launch configuration <<<{cfg}>>> "
                           f"should have 2 to 4 parts")
        rest = s[m.end():]
        sep = "" if rest.lstrip().startswith(")") else ", "
        return (f'::sim::launch({{"{name}", __FILE__, __LINE__}}, ::sim::config({cfg}), {name}'
                f"{sep}" + newlines(m.group(0)))

    s, n_launch = launch.subn(launch_sub, s)
    if n_launch != n_launch_total:
        left = s.find("<<<")
        raise GenError(f"line {line_of(s, left)}: {n_launch_total} kernel launches (<<<), "
                       f"{n_launch} rewritten")

    # ---- CUDA runtime calls ----
    def api_sub(m):
        if m.group(1).endswith("_t"):  # a type used as a cast, e.g. cudaStream_t(0)
            return m.group(0)
        if m.group(1) not in SUPPORTED_RUNTIME:
            raise GenError(f"line {line_of(s, m.start())}: CUDA runtime call {m.group(1)}() is "
                           f"not provided by the simulator (tests/sim/sim_runtime.h)")
        return "::sim::" + m.group(0)

    s = re.sub(r"(?<![\w:])(cuda[A-Z]\w*)(?=\s*\()", api_sub, s)

    # ---- #pragma unroll ----
    s = re.sub(r"^[ \t]*#\s*pragma\s+unroll\b.*$", "", s, flags=re.M)

    # ---- what must not be left ----
    # cuBLASLt calls are allowed only for the engine simulation, where they link
    # against the host emulation in sim_cublaslt.cpp (--allow-cublaslt).
    cublas = r"\bcublas(?!Lt)\w*\s*\(" if allow_cublaslt else r"\bcublas\w*\s*\("
    for pattern, what in UNSUPPORTED + ([] if is_common else
                                        [(cublas, "cuBLAS / cuBLASLt calls")]):
        m = re.search(pattern, s)
        if m:
            raise GenError(f"line {line_of(s, m.start())}: {what} cannot be simulated")
    if not is_common and n_launch == 0 and "launch_elementwise" not in s:
        raise GenError("no kernel launch found (expected name<<<...>>>(...) or "
                       "launch_elementwise)")
    if not is_common and n_common != 1:
        raise GenError('expected #include "kernels/cuda/common.cuh"')
    if src.count("\n") != s.count("\n"):
        raise GenError("internal error: line count changed")
    return s, {"launches": n_launch, "shared": n_ext + n_stat, "launch_bounds": n_lb,
               "mma": n_mma}


def main(argv):
    args = [a for a in argv[1:] if a != "--allow-cublaslt"]
    allow_cublaslt = len(args) != len(argv) - 1
    if len(args) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    inp, outp = args
    is_common = inp.endswith(".cuh")
    try:
        with open(inp, encoding="utf-8") as f:
            src = f.read()
        body, _ = rewrite(src, is_common, allow_cublaslt)
    except (GenError, OSError) as e:
        print(f"gen_sim.py: {inp}: error: {e}", file=sys.stderr)
        return 1
    rel = os.path.basename(inp)
    head = (f"// Generated by tests/sim/gen_sim.py from {rel}: CPU SIMULATION ONLY, do not edit.\n"
            f'#include "sim_device.h"\n'
            f'#line 1 "{os.path.abspath(inp)}"\n')
    tmp = outp + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(head + body)
    os.replace(tmp, outp)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
