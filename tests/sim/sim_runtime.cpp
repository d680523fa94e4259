// CPU simulation of CUDA kernels: scheduler, barriers, memory, launch checks.
// SIMULATION ONLY; see sim_runtime.h for what is and is not simulated.
//
// Each block runs on one host thread: its CUDA threads are fibers (own stacks,
// switched in user mode; a few instructions on x86-64, ucontext elsewhere). A
// fiber runs until it reaches a barrier or a warp collective, then control goes
// back to the scheduler, which runs the fibers that may proceed in the order of
// the current Schedule, one "pass" at a time: a fiber released by a barrier
// runs in the next pass, so every step between two barriers follows the
// schedule's order exactly.
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <thread>
#include <vector>

#include "sim_device.h"
#include "sim_wmma.h"

#if defined(__SANITIZE_ADDRESS__)
#define MYELIN_SIM_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define MYELIN_SIM_ASAN 1
#endif
#endif
#ifndef MYELIN_SIM_ASAN
#define MYELIN_SIM_ASAN 0
#endif
#if MYELIN_SIM_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

#if defined(__x86_64__)
#define MYELIN_SIM_X86_64 1
#else
#define MYELIN_SIM_X86_64 0
#include <ucontext.h>
#endif

namespace sim {
namespace detail {

namespace {

// ---- limits of the simulated device (sm_90) -------------------------------------------------
constexpr unsigned kMaxThreadsPerBlock = 1024;
constexpr unsigned kMaxBlockZ = 64;
constexpr unsigned kMaxGridX = 0x7fffffffu;
constexpr unsigned kMaxGridYZ = 65535;
constexpr std::size_t kDefaultSmem = 48 * 1024;   // without cudaFuncSetAttribute
constexpr std::size_t kMaxSmemOptin = 232448;     // 227 KiB per block
constexpr std::size_t kMaxStaticSmem = 48 * 1024; // static __shared__ per block
constexpr unsigned char kPoison = 0xff;           // NaN in every float/bf16/double
constexpr std::size_t kStackBytes = MYELIN_SIM_ASAN ? 512 * 1024 : 64 * 1024;

std::string vformat(const char* fmt, va_list ap) {
  va_list ap2;
  va_copy(ap2, ap);
  const int n = std::vsnprintf(nullptr, 0, fmt, ap2);
  va_end(ap2);
  std::string s(n > 0 ? std::size_t(n) : 0, '\0');
  if (n > 0) std::vsnprintf(s.data(), s.size() + 1, fmt, ap);
  return s;
}
std::string format(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
std::string format(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  std::string s = vformat(fmt, ap);
  va_end(ap);
  return s;
}
std::string where(const Loc& l) { return format("%s:%u", l.file_name(), unsigned(l.line())); }
bool same_place(const Loc& a, const Loc& b) {
  return a.line() == b.line() && a.column() == b.column() &&
         std::strcmp(a.file_name(), b.file_name()) == 0;
}

// ---- context switching -----------------------------------------------------------------------
#if MYELIN_SIM_X86_64
// myelin_sim_switch(&save_sp, new_sp): pushes the callee-saved registers, MXCSR
// and the x87 control word, saves rsp, loads new_sp, pops the same and returns
// into the other context.
extern "C" void myelin_sim_switch(void** save_sp, void* new_sp);
asm(R"(
  .pushsection .text
  .p2align 4
  .globl myelin_sim_switch
  .hidden myelin_sim_switch
  .type myelin_sim_switch, @function
myelin_sim_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size myelin_sim_switch, .-myelin_sim_switch
  .popsection
)");
struct Context {
  void* sp = nullptr;
};
void ctx_init(Context& c, char* stack, std::size_t bytes, void (*entry)()) {
  auto* sp = reinterpret_cast<std::uint64_t*>((reinterpret_cast<std::uintptr_t>(stack) + bytes) &
                                              ~std::uintptr_t(15));
  *--sp = 0;                                        // entry's return address (never used)
  *--sp = reinterpret_cast<std::uint64_t>(entry);   // where `ret` goes
  for (int i = 0; i < 6; ++i) *--sp = 0;            // rbp rbx r12 r13 r14 r15
  *--sp = 0x1f80u | (std::uint64_t(0x037fu) << 32); // MXCSR, x87 control word: defaults
  c.sp = sp;
}
inline void ctx_switch(Context& from, Context& to) { myelin_sim_switch(&from.sp, to.sp); }
#else
struct Context {
  ucontext_t uc;
};
void ctx_init(Context& c, char* stack, std::size_t bytes, void (*entry)()) {
  getcontext(&c.uc);
  c.uc.uc_stack.ss_sp = stack;
  c.uc.uc_stack.ss_size = bytes;
  c.uc.uc_link = nullptr;
  makecontext(&c.uc, entry, 0);
}
inline void ctx_switch(Context& from, Context& to) { swapcontext(&from.uc, &to.uc); }
#endif

// ---- fiber stacks: mmap'ed with a guard page below, pooled for the process -----------------
struct Stack {
  char* base = nullptr; // usable [base, base + kStackBytes)
};
class StackPool {
 public:
  Stack get() {
    {
      std::lock_guard<std::mutex> lk(m_);
      if (!free_.empty()) {
        Stack s = free_.back();
        free_.pop_back();
        return s;
      }
    }
    const std::size_t page = std::size_t(sysconf(_SC_PAGESIZE));
    void* p = mmap(nullptr, kStackBytes + page, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) {
      std::fprintf(stderr, "sim: cannot map a fiber stack\n");
      std::abort();
    }
    mprotect(p, page, PROT_NONE); // overflow faults instead of corrupting memory
    return {static_cast<char*>(p) + page};
  }
  void put(Stack s) {
    std::lock_guard<std::mutex> lk(m_);
    free_.push_back(s);
  }

 private:
  std::mutex m_;
  std::vector<Stack> free_;
};
StackPool& stack_pool() {
  static StackPool* p = new StackPool; // never destroyed: stacks live for the process
  return *p;
}

// ---- allocations with exact alignment, poison and guards ------------------------------------
// [p, p + bytes) is aligned to `align` but not to 2*align (code that relies on
// more alignment than it asked for fails) and filled with `fill`. Without ASan
// it lies in its own mapping, ending less than 2*align bytes before a PROT_NONE
// page (another one precedes the mapping): an access further out faults at once
// (see on_fault), and writes into the slack [lo, p) and [p + bytes, hi), which
// is filled with kPoison (NaN), are found by broken_guard(). With ASan, an
// exact-size heap block whose front slack is poisoned: ASan checks the bounds.
struct GuardedAlloc {
  char* base = nullptr; // the mapping (or heap block)
  std::size_t map_bytes = 0;
  char *lo = nullptr, *hi = nullptr; // accessible memory around p
  char* p = nullptr;
  std::size_t bytes = 0, align = 0;

  void create(std::size_t n, std::size_t a, unsigned char fill) {
    align = std::max<std::size_t>(a, 16);
    bytes = n;
#if MYELIN_SIM_ASAN
    map_bytes = align + n;
    base = static_cast<char*>(::operator new(map_bytes, std::align_val_t(2 * align)));
    lo = base;
    p = base + align;
    hi = p + n;
    ASAN_POISON_MEMORY_REGION(base, align);
#else
    const std::size_t page = std::size_t(sysconf(_SC_PAGESIZE));
    const std::size_t data = (n + 2 * align + page - 1) / page * page;
    map_bytes = data + 2 * page;
    void* m = mmap(nullptr, map_bytes, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) {
      std::fprintf(stderr, "sim: cannot map %zu bytes\n", map_bytes);
      std::abort();
    }
    base = static_cast<char*>(m);
    mprotect(base, page, PROT_NONE);
    mprotect(base + page + data, page, PROT_NONE);
    lo = base + page;
    hi = lo + data;
    const std::uintptr_t e = reinterpret_cast<std::uintptr_t>(hi) - n; // p <= e
    p = reinterpret_cast<char*>(e - (e - align) % (2 * align));        // p % (2 align) == align
    std::memset(lo, kPoison, std::size_t(p - lo));
    std::memset(p + n, kPoison, std::size_t(hi - (p + n)));
#endif
    std::memset(p, fill, n);
  }
  void destroy() {
    if (!base) return;
#if MYELIN_SIM_ASAN
    ASAN_UNPOISON_MEMORY_REGION(base, align);
    ::operator delete(base, std::align_val_t(2 * align));
#else
    munmap(base, map_bytes);
#endif
    base = lo = hi = p = nullptr;
  }
  // Offset (from p) of the first modified slack byte, or kIntact.
  static constexpr long long kIntact = LLONG_MIN;
  long long broken_guard() const {
    if (MYELIN_SIM_ASAN) return kIntact;
    for (const char* q = p + bytes; q < hi; ++q)
      if (static_cast<unsigned char>(*q) != kPoison) return (long long)(q - p);
    for (const char* q = lo; q < p; ++q)
      if (static_cast<unsigned char>(*q) != kPoison) return (long long)(q - p);
    return kIntact;
  }
  void repair() {
    std::memset(lo, kPoison, std::size_t(p - lo));
    std::memset(p + bytes, kPoison, std::size_t(hi - (p + bytes)));
  }
  bool contains(const void* q, std::size_t n) const {
    const auto a = reinterpret_cast<std::uintptr_t>(q), b = reinterpret_cast<std::uintptr_t>(p);
    return a >= b && a + n <= b + bytes;
  }
  // Whether q is in the mapping, guard pages included.
  bool near(const void* q) const {
    const auto a = reinterpret_cast<std::uintptr_t>(q), b = reinterpret_cast<std::uintptr_t>(base);
    return base && a >= b && a < b + map_bytes;
  }
};

// ---- device memory registry ------------------------------------------------------------------
struct DeviceMemory {
  std::mutex m;
  std::map<std::uintptr_t, GuardedAlloc> live;
  std::size_t in_use = 0;
};
DeviceMemory& devmem() {
  static DeviceMemory* d = new DeviceMemory;
  return *d;
}

// ---- per-kernel attributes, schedule, statistics ------------------------------------------------
std::mutex g_attr_mutex;
std::map<const void*, std::size_t>& attr_max_smem() {
  static std::map<const void*, std::size_t> m;
  return m;
}
std::atomic<int> g_schedule{-1};
std::atomic<std::uint64_t> g_seed{1};
std::atomic<int> g_host_threads{0};
std::atomic<std::uint64_t> g_launch_counter{0};
struct AtomicStats {
  std::atomic<std::uint64_t> launches{0}, blocks{0}, threads{0}, block_barriers{0},
      warp_collectives{0};
} g_stats;

Schedule current_schedule() {
  int s = g_schedule.load();
  if (s < 0) {
    s = int(Schedule::kAlternate);
    if (const char* e = std::getenv("MYELIN_SIM_SCHEDULE")) {
      const std::string v(e);
      if (v == "forward")
        s = int(Schedule::kForward);
      else if (v == "reverse")
        s = int(Schedule::kReverse);
      else if (v == "random")
        s = int(Schedule::kRandom);
    }
    g_schedule.store(s);
  }
  return Schedule(s);
}

// Last launch error of the calling host thread, as cudaGetLastError reports it.
thread_local cudaError_t t_last_error = cudaSuccess;
thread_local cudaError_t t_failed_code = cudaSuccess;
thread_local std::string t_failed_message;

void set_launch_error(cudaError_t e, std::string msg) {
  if (t_last_error == cudaSuccess) t_last_error = e;
  t_failed_code = e;
  t_failed_message = "[simulation] " + std::move(msg);
}

std::uint64_t splitmix(std::uint64_t& x) {
  std::uint64_t z = (x += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// ---- the scheduler ------------------------------------------------------------------------------
enum class State : std::uint8_t { kRunnable, kBlockWait, kWarpWait, kDone };

// A cp.async copy issued by a thread, not landed yet.
struct AsyncCopy {
  void* dst;
  const void* src;
  std::size_t bytes, src_bytes;
  Loc loc;
};

struct Fiber {
  ThreadCtx ctx;
  std::vector<AsyncCopy> async_open;                // issued since the last commit
  std::vector<std::vector<AsyncCopy>> async_groups; // committed groups, oldest first
  Context cx;
  Stack stack;
  State state = State::kDone;
  std::uint64_t ready_pass = 0; // may run from this pass on
  Op op = Op::kSyncwarp;        // where it waits (reports)
  Loc loc;
#if MYELIN_SIM_ASAN
  void* fake_stack = nullptr;
#endif
};

struct Warp {
  int size = 0, arrived = 0, exited = 0;
  unsigned gen = 0;
  Op op = Op::kSyncwarp;
  Loc op_loc;
  WarpExchange ex[2]; // collective k uses ex[k % 2]; see warp_exchange()
};

struct Launch {
  LaunchSite site;
  const void* kernel;
  LaunchConfig cfg;
  KernelBody body;
  Schedule schedule;
  std::uint64_t seed;
  unsigned nthreads;
  std::atomic<bool> failed{false};
  std::mutex m;
  unsigned long long failed_block = ~0ull;
  std::string error;
};

struct Block {
  Launch* launch = nullptr;
  uint3 idx{};
  unsigned long long linear = 0;
  int nthreads = 0, done = 0, exited = 0, runnable = 0;
  int bar_arrived = 0;
  Loc bar_loc;
  std::uint64_t pass = 0;
  std::vector<Warp> warps;
  GuardedAlloc dyn;
  struct Static {
    const void* key;
    GuardedAlloc mem;
  };
  std::vector<Static> statics;
  std::size_t static_bytes = 0;
  bool failed = false;
  std::string error;
};

struct Worker {
  std::vector<Fiber> fibers;
  Block block;
  Context sched;
  std::vector<int> order;
  std::uint64_t rng = 0;
#if MYELIN_SIM_ASAN
  void* sched_fake_stack = nullptr;
  const void* sched_bottom = nullptr;
  std::size_t sched_size = 0;
#endif
  ~Worker() {
    for (Fiber& f : fibers) stack_pool().put(f.stack);
  }
  void run_block(Launch& L, unsigned long long linear);
  void resume(Fiber& f);
};

thread_local Worker* t_worker = nullptr;
thread_local Fiber* t_fiber = nullptr;

Block& cur_block() { return t_worker->block; }

// Back to the scheduler; returns when the scheduler resumes this fiber.
void yield_to_scheduler() {
  Fiber& f = *t_fiber;
  Worker& w = *t_worker;
#if MYELIN_SIM_ASAN
  __sanitizer_start_switch_fiber(&f.fake_stack, w.sched_bottom, w.sched_size);
#endif
  ctx_switch(f.cx, w.sched);
#if MYELIN_SIM_ASAN
  __sanitizer_finish_switch_fiber(f.fake_stack, &w.sched_bottom, &w.sched_size);
#endif
}

// The fiber is finished (returned or abandoned): back to the scheduler for good.
[[noreturn]] void leave_fiber() {
  Fiber& f = *t_fiber;
  Worker& w = *t_worker;
#if MYELIN_SIM_ASAN
  __sanitizer_start_switch_fiber(nullptr, w.sched_bottom, w.sched_size);
#endif
  ctx_switch(f.cx, w.sched);
  std::fprintf(stderr, "sim: a finished fiber was resumed\n");
  std::abort();
}

std::string thread_name() {
  const ThreadCtx& c = *t_ctx;
  const Block& b = cur_block();
  return format("kernel %s (launched at %s:%d), block (%u,%u,%u), thread (%u,%u,%u)",
                b.launch->site.kernel, b.launch->site.file, b.launch->site.line, c.bid.x, c.bid.y,
                c.bid.z, c.tid.x, c.tid.y, c.tid.z);
}

void block_fail(Block& b, std::string msg) {
  if (b.failed) return;
  b.failed = true;
  b.error = std::move(msg);
}

void release(Block& b, State from, int warp) {
  Worker& w = *t_worker;
  for (Fiber& f : w.fibers) {
    if (f.state != from || (warp >= 0 && f.ctx.warp != warp)) continue;
    f.state = State::kRunnable;
    f.ready_pass = b.pass + 1;
    ++b.runnable;
  }
}

void fiber_entry() {
  Worker& w = *t_worker;
#if MYELIN_SIM_ASAN
  __sanitizer_finish_switch_fiber(nullptr, &w.sched_bottom, &w.sched_size);
#endif
  Block& b = w.block;
  b.launch->body.run(b.launch->body.obj);
  // The thread returned from the kernel.
  Fiber& f = *t_fiber;
  Warp& wp = b.warps[std::size_t(f.ctx.warp)];
  std::size_t in_flight = f.async_open.size();
  for (const auto& grp : f.async_groups) in_flight += grp.size();
  if (in_flight > 0) {
    const Loc& at =
        f.async_open.empty() ? f.async_groups.back().back().loc : f.async_open.back().loc;
    block_fail(b, format("%s: %s: exited with %zu cp.async copies never waited for "
                         "(cp.async.wait_group / cp.async.wait_all missing)",
                         where(at).c_str(), thread_name().c_str(), in_flight));
  }
  f.state = State::kDone;
  --b.runnable;
  ++b.done;
  ++b.exited;
  ++wp.exited;
  if (wp.arrived > 0)
    block_fail(b,
               format("%s: %s: exited while %d other lanes of its warp wait at %s here: a "
                      "warp collective must be reached by every lane named in its mask",
                      where(wp.op_loc).c_str(), thread_name().c_str(), wp.arrived, op_name(wp.op)));
  else if (b.bar_arrived > 0)
    block_fail(b, format("%s: %s: exited while %d threads wait at __syncthreads(): a barrier must "
                         "be reached by every thread of the block",
                         where(b.bar_loc).c_str(), thread_name().c_str(), b.bar_arrived));
  leave_fiber();
}

void Worker::resume(Fiber& f) {
  t_fiber = &f;
  t_ctx = &f.ctx;
#if MYELIN_SIM_ASAN
  __sanitizer_start_switch_fiber(&sched_fake_stack, f.stack.base, kStackBytes);
#endif
  ctx_switch(sched, f.cx);
#if MYELIN_SIM_ASAN
  __sanitizer_finish_switch_fiber(sched_fake_stack, nullptr, nullptr);
#endif
  t_fiber = nullptr;
  t_ctx = nullptr;
}

std::string deadlock_report(const Worker& w, const Block& b) {
  std::string s = format("deadlock in kernel %s (launched at %s:%d), block (%u,%u,%u): no thread "
                         "can proceed;",
                         b.launch->site.kernel, b.launch->site.file, b.launch->site.line, b.idx.x,
                         b.idx.y, b.idx.z);
  if (b.bar_arrived > 0)
    s += format(" %d threads wait at __syncthreads() (%s);", b.bar_arrived,
                where(b.bar_loc).c_str());
  for (std::size_t k = 0; k < b.warps.size(); ++k) {
    const Warp& wp = b.warps[k];
    if (wp.arrived > 0)
      s += format(" %d lanes of warp %zu wait at %s (%s), %d lanes exited;", wp.arrived, k,
                  op_name(wp.op), where(wp.op_loc).c_str(), wp.exited);
  }
  s += format(" %d of %d threads exited", b.exited, b.nthreads);
  (void)w;
  return s;
}

void Worker::run_block(Launch& L, unsigned long long linear) {
  const dim3 gd = L.cfg.grid, bd = L.cfg.block;
  const int n = int(L.nthreads);
  Block& b = block;
  b.launch = &L;
  b.linear = linear;
  b.idx = uint3{unsigned(linear % gd.x), unsigned((linear / gd.x) % gd.y),
                unsigned(linear / (std::uint64_t(gd.x) * gd.y))};
  b.nthreads = n;
  b.done = b.exited = b.bar_arrived = 0;
  b.runnable = n;
  b.pass = 0;
  b.failed = false;
  b.error.clear();
  b.static_bytes = 0;
  const int nwarps = (n + 31) / 32;
  b.warps.resize(std::size_t(nwarps));
  for (int k = 0; k < nwarps; ++k) {
    Warp& wp = b.warps[std::size_t(k)];
    wp.size = std::min(32, n - 32 * k);
    wp.arrived = wp.exited = 0;
    wp.gen = 0;
  }
  while (int(fibers.size()) < n) {
    fibers.emplace_back();
    fibers.back().stack = stack_pool().get();
  }
  for (int t = 0; t < n; ++t) {
    Fiber& f = fibers[std::size_t(t)];
    f.ctx.tid = uint3{unsigned(t % int(bd.x)), unsigned((t / int(bd.x)) % int(bd.y)),
                      unsigned(t / int(bd.x * bd.y))};
    f.ctx.bid = b.idx;
    f.ctx.bdim = bd;
    f.ctx.gdim = gd;
    f.ctx.lane = t % 32;
    f.ctx.warp = t / 32;
    f.state = State::kRunnable;
    f.ready_pass = 0;
    f.async_open.clear();
    f.async_groups.clear();
#if MYELIN_SIM_ASAN
    ASAN_UNPOISON_MEMORY_REGION(f.stack.base, kStackBytes); // frames of an abandoned fiber
    f.fake_stack = nullptr;
#endif
    ctx_init(f.cx, f.stack.base, kStackBytes, &fiber_entry);
  }
  for (int t = n; t < int(fibers.size()); ++t) fibers[std::size_t(t)].state = State::kDone;

  Schedule sched = L.schedule;
  if (sched == Schedule::kAlternate)
    sched = linear % 2 == 0 ? Schedule::kForward : Schedule::kReverse;
  else if (sched == Schedule::kAlternateSwapped)
    sched = linear % 2 == 0 ? Schedule::kReverse : Schedule::kForward;
  rng = L.seed ^ (linear * 0x9e3779b97f4a7c15ull);
  order.resize(std::size_t(n));
  for (int t = 0; t < n; ++t) order[std::size_t(t)] = sched == Schedule::kReverse ? n - 1 - t : t;

  while (b.done < n && !b.failed) {
    if (b.runnable == 0) {
      block_fail(b, deadlock_report(*this, b));
      break;
    }
    ++b.pass;
    if (sched == Schedule::kRandom)
      for (int t = n - 1; t > 0; --t)
        std::swap(order[std::size_t(t)], order[std::size_t(splitmix(rng) % std::uint64_t(t + 1))]);
    for (int t : order) {
      Fiber& f = fibers[std::size_t(t)];
      if (f.state != State::kRunnable || f.ready_pass > b.pass) continue;
      resume(f);
      if (b.failed) break;
    }
  }

  // Shared memory bounds (writes just outside land in the poisoned slack).
  if (!b.failed && b.dyn.base)
    if (const long long off = b.dyn.broken_guard(); off != GuardedAlloc::kIntact)
      block_fail(b, format("kernel %s (launched at %s:%d), block (%u,%u,%u): wrote dynamic shared "
                           "memory at byte %lld of a %zu-byte allocation (out of bounds)",
                           L.site.kernel, L.site.file, L.site.line, b.idx.x, b.idx.y, b.idx.z, off,
                           b.dyn.bytes));
  for (Block::Static& s : b.statics) {
    if (!b.failed)
      if (const long long off = s.mem.broken_guard(); off != GuardedAlloc::kIntact)
        block_fail(b, format("kernel %s (launched at %s:%d), block (%u,%u,%u): wrote past a static "
                             "__shared__ array of %zu bytes (at byte %lld)",
                             L.site.kernel, L.site.file, L.site.line, b.idx.x, b.idx.y, b.idx.z,
                             s.mem.bytes, off));
    s.mem.destroy();
  }
  b.statics.clear();
  b.dyn.destroy();
  g_stats.blocks.fetch_add(1, std::memory_order_relaxed);
  g_stats.threads.fetch_add(std::uint64_t(n), std::memory_order_relaxed);
  if (b.failed) {
    std::lock_guard<std::mutex> lk(L.m);
    if (linear < L.failed_block) { // report the lowest failing block: deterministic
      L.failed_block = linear;
      L.error = b.error;
    }
    L.failed.store(true);
  }
}

Worker& this_worker() {
  static thread_local std::unique_ptr<Worker> w;
  if (!w) w = std::make_unique<Worker>();
  return *w;
}

#if !MYELIN_SIM_ASAN
// SIGSEGV/SIGBUS (e.g. an access beyond a guard page): says which simulated
// thread made it and where the address is, then dies as the signal would.
// (Not async-signal-safe in the strict sense; the process is ending anyway.)
void on_fault(int sig, siginfo_t* si, void*) {
  static char buf[4096];
  std::size_t n = 0;
  auto add = [&](const char* fmt, auto... a) {
    const int k = std::snprintf(buf + n, sizeof buf - n, fmt, a...);
    if (k > 0) n = std::min(sizeof buf - 1, n + std::size_t(k));
  };
  const char* addr = static_cast<const char*>(si->si_addr);
  add("\n[simulation] %s: invalid memory access at %p", sig == SIGSEGV ? "SIGSEGV" : "SIGBUS",
      si->si_addr);
  if (t_worker && t_ctx && t_worker->block.launch) {
    const Block& b = t_worker->block;
    const ThreadCtx& c = *t_ctx;
    add(" by kernel %s (launched at %s:%d), block (%u,%u,%u), thread (%u,%u,%u)",
        b.launch->site.kernel, b.launch->site.file, b.launch->site.line, c.bid.x, c.bid.y, c.bid.z,
        c.tid.x, c.tid.y, c.tid.z);
    if (b.dyn.near(addr))
      add("; byte %lld of the block's %zu bytes of dynamic shared memory",
          (long long)(addr - b.dyn.p), b.dyn.bytes);
    for (const Block::Static& st : b.statics)
      if (st.mem.near(addr))
        add("; byte %lld of a static __shared__ array of %zu bytes", (long long)(addr - st.mem.p),
            st.mem.bytes);
    if (t_fiber && addr < t_fiber->stack.base &&
        addr + sysconf(_SC_PAGESIZE) >= t_fiber->stack.base)
      add("; stack overflow of the simulated thread (%zu bytes)", kStackBytes);
  }
  DeviceMemory& d = devmem();
  if (d.m.try_lock()) {
    for (const auto& entry : d.live)
      if (const GuardedAlloc& a = entry.second; a.near(addr))
        add("; byte %lld of a device allocation of %zu bytes", (long long)(addr - a.p), a.bytes);
    d.m.unlock();
  }
  add("\n");
  if (write(2, buf, n) < 0) { // nothing more to do: the process is ending
  }
  // SA_RESETHAND: returning re-executes the access, which now gets the default action.
}
void install_fault_handler() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction sa;
    std::memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_fault;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESETHAND;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, nullptr);
    sigaction(SIGBUS, &sa, nullptr);
  });
  // The handler runs on its own stack: a fiber's stack may be what overflowed.
  static thread_local std::unique_ptr<char[]> alt;
  if (!alt) {
    const std::size_t bytes = 64 * 1024;
    alt = std::make_unique<char[]>(bytes);
    stack_t ss;
    std::memset(&ss, 0, sizeof ss);
    ss.ss_sp = alt.get();
    ss.ss_size = bytes;
    sigaltstack(&ss, nullptr);
  }
}
#else
void install_fault_handler() {} // AddressSanitizer reports faults itself
#endif

void work(Launch& L, std::atomic<unsigned long long>& next, unsigned long long nblocks) {
  Worker& w = this_worker();
  install_fault_handler();
  Worker* saved = t_worker;
  t_worker = &w;
  for (;;) {
    if (L.failed.load()) break;
    const unsigned long long k = next.fetch_add(1);
    if (k >= nblocks) break;
    w.run_block(L, k);
  }
  t_worker = saved;
}

int host_threads() {
  int n = g_host_threads.load();
  if (n > 0) return n;
  if (const char* e = std::getenv("MYELIN_SIM_THREADS")) n = std::atoi(e);
  if (n <= 0) n = std::min(4, std::max(1, int(std::thread::hardware_concurrency())));
  g_host_threads.store(n);
  return n;
}

std::string launch_name(const LaunchSite& s) {
  return format("kernel %s launched at %s:%d", s.kernel, s.file, s.line);
}

// Writes just outside device allocations land in their poisoned slack.
void check_device_guards(const LaunchSite& site) {
  DeviceMemory& d = devmem();
  std::lock_guard<std::mutex> lk(d.m);
  for (auto& [addr, a] : d.live) {
    (void)addr;
    if (const long long off = a.broken_guard(); off != GuardedAlloc::kIntact) {
      set_launch_error(cudaErrorIllegalAddress,
                       format("%s: wrote outside a device allocation of %zu bytes (byte %lld "
                              "relative to its start)",
                              launch_name(site).c_str(), a.bytes, off));
      a.repair(); // later launches are judged on their own
    }
  }
}

} // namespace

// ---- device-side entry points ----------------------------------------------------------------
const char* op_name(Op op) {
  switch (op) {
  case Op::kSyncwarp:
    return "__syncwarp()";
  case Op::kShflIdx:
    return "__shfl_sync()";
  case Op::kShflXor:
    return "__shfl_xor_sync()";
  case Op::kShflUp:
    return "__shfl_up_sync()";
  case Op::kShflDown:
    return "__shfl_down_sync()";
  case Op::kWmmaLoad:
    return "wmma::load_matrix_sync()";
  case Op::kWmmaStore:
    return "wmma::store_matrix_sync()";
  case Op::kWmmaMma:
    return "wmma::mma_sync()";
  case Op::kMma:
    return "mma.sync.m16n8k16";
  case Op::kLdmatrix:
    return "ldmatrix.sync";
  }
  return "?";
}

void fail(const Loc& loc, const char* fmt, ...) {
  { // no object with a destructor may live across leave_fiber()
    va_list ap;
    va_start(ap, fmt);
    const std::string msg = vformat(fmt, ap);
    va_end(ap);
    if (!t_fiber) {
      std::fprintf(stderr, "sim: %s: %s (device code called outside a simulated kernel)\n",
                   where(loc).c_str(), msg.c_str());
      std::abort();
    }
    block_fail(cur_block(),
               format("%s: %s: %s", where(loc).c_str(), thread_name().c_str(), msg.c_str()));
  }
  Block& b = cur_block();
  Fiber& f = *t_fiber;
  if (f.state == State::kRunnable) --b.runnable;
  f.state = State::kDone;
  leave_fiber();
}

void syncthreads(const Loc& loc) {
  if (!t_fiber) fail(loc, "__syncthreads()");
  Block& b = cur_block();
  Fiber& f = *t_fiber;
  if (b.exited > 0)
    fail(loc,
         "__syncthreads() reached after %d of the block's %d threads exited: a barrier must be "
         "reached by every thread of the block",
         b.exited, b.nthreads);
  if (b.bar_arrived == 0) {
    b.bar_loc = loc;
  } else if (!same_place(b.bar_loc, loc)) {
    fail(loc,
         "reached __syncthreads() here while %d threads wait at the __syncthreads() at %s:%u "
         "(divergent barriers)",
         b.bar_arrived, b.bar_loc.file_name(), unsigned(b.bar_loc.line()));
  }
  g_stats.block_barriers.fetch_add(1, std::memory_order_relaxed);
  ++b.bar_arrived;
  f.op = Op::kSyncwarp;
  f.loc = loc;
  if (b.bar_arrived == b.nthreads) {
    b.bar_arrived = 0;
    release(b, State::kBlockWait, -1);
    f.ready_pass = b.pass + 1;
  } else {
    f.state = State::kBlockWait;
    --b.runnable;
  }
  yield_to_scheduler();
}

WarpExchange& warp_exchange() {
  Block& b = cur_block();
  Warp& wp = b.warps[std::size_t(t_ctx->warp)];
  return wp.ex[wp.gen % 2];
}

void warp_arrive(Op op, unsigned mask, const Loc& loc) {
  if (!t_fiber) fail(loc, "%s", op_name(op));
  Block& b = cur_block();
  Fiber& f = *t_fiber;
  Warp& wp = b.warps[std::size_t(f.ctx.warp)];
  const unsigned full = wp.size == 32 ? 0xffffffffu : ((1u << wp.size) - 1u);
  if (mask != full)
    fail(loc,
         "%s with mask 0x%08x: the simulator supports only the mask of all the warp's lanes "
         "(0x%08x here)",
         op_name(op), mask, full);
  if (wp.exited > 0)
    fail(loc, "%s reached after %d lanes of warp %d exited: undefined behaviour", op_name(op),
         wp.exited, f.ctx.warp);
  if (wp.arrived == 0) {
    wp.op = op;
    wp.op_loc = loc;
  } else if (wp.op != op) {
    fail(loc, "reached %s while %d lanes of warp %d wait at %s (%s:%u)", op_name(op), wp.arrived,
         f.ctx.warp, op_name(wp.op), wp.op_loc.file_name(), unsigned(wp.op_loc.line()));
  }
  g_stats.warp_collectives.fetch_add(1, std::memory_order_relaxed);
  ++wp.arrived;
  f.op = op;
  f.loc = loc;
  if (wp.arrived == wp.size) {
    wp.arrived = 0;
    ++wp.gen;
    release(b, State::kWarpWait, f.ctx.warp);
    f.ready_pass = b.pass + 1;
  } else {
    f.state = State::kWarpWait;
    --b.runnable;
  }
  yield_to_scheduler();
}

int shfl_source(Op op, int lane, int arg, int width, const Loc& loc) {
  if (width < 1 || width > 32 || (width & (width - 1)) != 0)
    fail(loc, "%s with width %d (must be a power of 2 <= 32)", op_name(op), width);
  const int lo = lane & ~(width - 1), hi = lo + width - 1;
  int j = lane;
  switch (op) {
  case Op::kShflIdx:
    j = lo + (arg & (width - 1));
    break;
  case Op::kShflXor:
    j = lane ^ arg;
    if (j > hi || j < 0 || j > 31) j = lane;
    break;
  case Op::kShflUp:
    j = lane - arg;
    if (j < lo) j = lane;
    break;
  case Op::kShflDown:
    j = lane + arg;
    if (j > hi) j = lane;
    break;
  default:
    break;
  }
  Warp& wp = cur_block().warps[std::size_t(t_ctx->warp)];
  if (j >= wp.size) fail(loc, "%s reads lane %d, which does not exist", op_name(op), j);
  return j;
}

void* dynamic_shared(std::size_t align, const Loc& loc) {
  if (!t_fiber) fail(loc, "extern __shared__");
  Block& b = cur_block();
  if (!b.dyn.base) {
    b.dyn.create(b.launch->cfg.smem, align, kPoison);
  } else if (reinterpret_cast<std::uintptr_t>(b.dyn.p) % std::max<std::size_t>(align, 16) != 0) {
    fail(loc, "extern __shared__ declarations with different alignments");
  }
  return b.dyn.p;
}

void* static_shared(const void* key, std::size_t bytes, std::size_t align, const Loc& loc) {
  Block& b = cur_block();
  for (Block::Static& s : b.statics)
    if (s.key == key) return s.mem.p;
  if (b.static_bytes + bytes > kMaxStaticSmem)
    fail(loc, "static __shared__ memory of the block exceeds %zu bytes", kMaxStaticSmem);
  if (b.static_bytes + bytes + b.launch->cfg.smem > kMaxSmemOptin)
    fail(loc, "static + dynamic shared memory of the block exceeds %zu bytes", kMaxSmemOptin);
  b.static_bytes += bytes;
  b.statics.push_back({key, {}});
  b.statics.back().mem.create(bytes, align, kPoison);
  return b.statics.back().mem.p;
}

void launch_bounds(long long max_threads, const Loc& loc) {
  const long long n = (long long)(blockDim.x) * blockDim.y * blockDim.z;
  if (n > max_threads)
    fail(loc, "launched with %lld threads per block, more than its __launch_bounds__(%lld)", n,
         max_threads);
}

bool in_block_shared(const void* p, std::size_t bytes) {
  if (!t_fiber) return false;
  Block& b = cur_block();
  if (b.dyn.base && b.dyn.contains(p, bytes)) return true;
  for (const Block::Static& s : b.statics)
    if (s.mem.contains(p, bytes)) return true;
  return false;
}

void async_copy(void* dst, const void* src, std::size_t bytes, std::size_t src_bytes,
                const Loc& loc) {
  if (!t_fiber) fail(loc, "cp.async");
  if (bytes != 4 && bytes != 8 && bytes != 16)
    fail(loc, "cp.async of %zu bytes (4, 8 or 16 only)", bytes);
  if (src_bytes > bytes) fail(loc, "cp.async: src-size %zu > cp-size %zu", src_bytes, bytes);
  if (reinterpret_cast<std::uintptr_t>(dst) % bytes != 0 ||
      reinterpret_cast<std::uintptr_t>(src) % bytes != 0)
    fail(loc, "cp.async: destination %p or source %p not %zu-byte aligned", dst, src, bytes);
  if (!in_block_shared(dst, bytes))
    fail(loc, "cp.async: destination %p (%zu bytes) is not in the block's shared memory", dst,
         bytes);
  if (src_bytes > 0 && !in_known_memory(src, src_bytes))
    fail(loc, "cp.async: source %p (%zu bytes) is not in a device allocation", src, src_bytes);
  // Until the copy lands the destination holds nothing valid: poison it, so a
  // read before the wait gives NaN rather than stale data.
  std::memset(dst, kPoison, bytes);
  t_fiber->async_open.push_back({dst, src, bytes, src_bytes, loc});
}

void async_commit() {
  Fiber& f = *t_fiber;
  f.async_groups.push_back(std::move(f.async_open));
  f.async_open.clear();
}

namespace {
void land(const std::vector<AsyncCopy>& grp) {
  for (const AsyncCopy& c : grp) {
    if (c.src_bytes > 0) std::memcpy(c.dst, c.src, c.src_bytes);
    std::memset(static_cast<char*>(c.dst) + c.src_bytes, 0, c.bytes - c.src_bytes);
  }
}
} // namespace

void async_wait(int n, const Loc& loc) {
  if (!t_fiber) fail(loc, "cp.async.wait_group");
  if (n < 0) fail(loc, "cp.async.wait_group %d", n);
  Fiber& f = *t_fiber;
  const std::size_t keep = std::size_t(n);
  if (f.async_groups.size() <= keep) return;
  const std::size_t drop = f.async_groups.size() - keep;
  for (std::size_t k = 0; k < drop; ++k) land(f.async_groups[k]);
  f.async_groups.erase(f.async_groups.begin(), f.async_groups.begin() + std::ptrdiff_t(drop));
}

void async_wait_all() {
  async_commit();
  async_wait(0, Loc::current());
}

bool in_known_memory(const void* p, std::size_t bytes) {
  if (t_fiber) {
    Block& b = cur_block();
    if (b.dyn.base && b.dyn.contains(p, bytes)) return true;
    for (const Block::Static& s : b.statics)
      if (s.mem.contains(p, bytes)) return true;
  }
  DeviceMemory& d = devmem();
  std::lock_guard<std::mutex> lk(d.m);
  auto it = d.live.upper_bound(reinterpret_cast<std::uintptr_t>(p));
  if (it == d.live.begin()) return false;
  --it;
  return it->second.contains(p, bytes);
}

cudaError_t func_set_attribute(const void* kernel, cudaFuncAttribute attr, int value) {
  if (attr == cudaFuncAttributeMaxDynamicSharedMemorySize) {
    if (value < 0 || std::size_t(value) > kMaxSmemOptin) return cudaErrorInvalidValue;
    std::lock_guard<std::mutex> lk(g_attr_mutex);
    attr_max_smem()[kernel] = std::size_t(value);
    return cudaSuccess;
  }
  if (attr == cudaFuncAttributePreferredSharedMemoryCarveout)
    return (value >= -1 && value <= 100) ? cudaSuccess : cudaErrorInvalidValue;
  return cudaSuccess;
}

bool check_launch(const LaunchSite& site, const void* kernel, const LaunchConfig& cfg) {
  const dim3 g = cfg.grid, bl = cfg.block;
  const unsigned long long nthreads = 1ull * bl.x * bl.y * bl.z;
  if (bl.x == 0 || bl.y == 0 || bl.z == 0 || bl.x > kMaxThreadsPerBlock ||
      bl.y > kMaxThreadsPerBlock || bl.z > kMaxBlockZ || nthreads > kMaxThreadsPerBlock) {
    set_launch_error(
        cudaErrorInvalidConfiguration,
        format("%s: invalid block (%u,%u,%u)", launch_name(site).c_str(), bl.x, bl.y, bl.z));
    return false;
  }
  if (g.x == 0 || g.y == 0 || g.z == 0 || g.x > kMaxGridX || g.y > kMaxGridYZ || g.z > kMaxGridYZ) {
    set_launch_error(
        cudaErrorInvalidConfiguration,
        format("%s: invalid grid (%u,%u,%u)", launch_name(site).c_str(), g.x, g.y, g.z));
    return false;
  }
  if (cfg.smem > kDefaultSmem) {
    std::size_t allowed = kDefaultSmem;
    {
      std::lock_guard<std::mutex> lk(g_attr_mutex);
      auto it = attr_max_smem().find(kernel);
      if (it != attr_max_smem().end()) allowed = std::max(allowed, it->second);
    }
    if (cfg.smem > allowed) {
      set_launch_error(cudaErrorInvalidValue,
                       format("%s: %zu bytes of dynamic shared memory, but the kernel allows "
                              "%zu (cudaFuncAttributeMaxDynamicSharedMemorySize)",
                              launch_name(site).c_str(), cfg.smem, allowed));
      return false;
    }
  }
  return true;
}

void run_grid(const LaunchSite& site, const void* kernel, const LaunchConfig& cfg,
              KernelBody body) {
  g_stats.launches.fetch_add(1, std::memory_order_relaxed);
  if (!check_launch(site, kernel, cfg)) return;
  const dim3 g = cfg.grid, bl = cfg.block;
  const unsigned long long nthreads = 1ull * bl.x * bl.y * bl.z;
  Launch L;
  L.site = site;
  L.kernel = kernel;
  L.cfg = cfg;
  L.body = body;
  L.schedule = current_schedule();
  L.seed = g_seed.load() ^ (g_launch_counter.fetch_add(1) * 0xd1b54a32d192ed03ull);
  L.nthreads = unsigned(nthreads);
  const unsigned long long nblocks = 1ull * g.x * g.y * g.z;
  const int nworkers = int(std::min<unsigned long long>(nblocks, std::uint64_t(host_threads())));
  std::atomic<unsigned long long> next{0};
  std::vector<std::thread> helpers;
  for (int k = 1; k < nworkers; ++k) helpers.emplace_back([&] { work(L, next, nblocks); });
  work(L, next, nblocks);
  for (auto& t : helpers) t.join();
  if (L.failed.load()) set_launch_error(cudaErrorLaunchFailure, L.error);
  check_device_guards(site);
}

} // namespace detail

// ---- schedule and statistics ------------------------------------------------------------------
void set_schedule(Schedule s, std::uint64_t seed) {
  detail::g_schedule.store(int(s));
  detail::g_seed.store(seed);
}
Schedule schedule() { return detail::current_schedule(); }
ScheduleScope::ScheduleScope(Schedule s, std::uint64_t seed)
    : old_(schedule()), old_seed_(detail::g_seed.load()) {
  set_schedule(s, seed);
}
ScheduleScope::~ScheduleScope() { set_schedule(old_, old_seed_); }
void set_host_threads(int n) { detail::g_host_threads.store(n); }
Stats stats() {
  const auto& s = detail::g_stats;
  return {s.launches.load(), s.blocks.load(), s.threads.load(), s.block_barriers.load(),
          s.warp_collectives.load()};
}

// ---- runtime API --------------------------------------------------------------------------------
cudaError_t cudaMalloc(void** p, std::size_t bytes) {
  if (!p) return cudaErrorInvalidValue;
  if (const cudaError_t e = detail::unsafe_during_capture("cudaMalloc")) return e;
  detail::GuardedAlloc a;
  a.create(bytes, 256, detail::kPoison); // contents undefined: poisoned
  auto& d = detail::devmem();
  std::lock_guard<std::mutex> lk(d.m);
  d.live[reinterpret_cast<std::uintptr_t>(a.p)] = a;
  d.in_use += bytes;
  *p = a.p;
  return cudaSuccess;
}
cudaError_t cudaFree(void* p) {
  if (!p) return cudaSuccess;
  if (const cudaError_t e = detail::unsafe_during_capture("cudaFree")) return e;
  auto& d = detail::devmem();
  std::lock_guard<std::mutex> lk(d.m);
  auto it = d.live.find(reinterpret_cast<std::uintptr_t>(p));
  if (it == d.live.end()) return cudaErrorInvalidDevicePointer;
  d.in_use -= it->second.bytes;
  it->second.destroy();
  d.live.erase(it);
  return cudaSuccess;
}
std::size_t device_bytes_in_use() {
  auto& d = detail::devmem();
  std::lock_guard<std::mutex> lk(d.m);
  return d.in_use;
}
namespace {
// Host synchronisations (sim::host_syncs) and page-locked host allocations.
std::atomic<std::uint64_t> g_host_syncs{0};
struct PinnedMemory {
  std::mutex m;
  std::map<std::uintptr_t, std::size_t> live; // base -> bytes
};
PinnedMemory& pinned() {
  static PinnedMemory p;
  return p;
}
bool is_pinned(const void* p, std::size_t bytes) {
  PinnedMemory& d = pinned();
  std::lock_guard<std::mutex> lk(d.m);
  const auto a = reinterpret_cast<std::uintptr_t>(p);
  auto it = d.live.upper_bound(a);
  if (it == d.live.begin()) return false;
  --it;
  return a + bytes <= it->first + it->second;
}
void copy_bytes(void* dst, const void* src, std::size_t bytes) {
  if (bytes) std::memmove(dst, src, bytes);
}
} // namespace
std::uint64_t host_syncs() { return g_host_syncs.load(); }
cudaError_t cudaMallocHost(void** p, std::size_t bytes) {
  if (!p) return cudaErrorInvalidValue;
  if (const cudaError_t e = detail::unsafe_during_capture("cudaMallocHost")) return e;
  void* q = std::malloc(bytes ? bytes : 1);
  if (!q) return cudaErrorMemoryAllocation;
  PinnedMemory& d = pinned();
  std::lock_guard<std::mutex> lk(d.m);
  d.live[reinterpret_cast<std::uintptr_t>(q)] = bytes;
  *p = q;
  return cudaSuccess;
}
cudaError_t cudaFreeHost(void* p) {
  if (!p) return cudaSuccess;
  if (const cudaError_t e = detail::unsafe_during_capture("cudaFreeHost")) return e;
  PinnedMemory& d = pinned();
  std::lock_guard<std::mutex> lk(d.m);
  auto it = d.live.find(reinterpret_cast<std::uintptr_t>(p));
  if (it == d.live.end()) return cudaErrorInvalidValue;
  d.live.erase(it);
  std::free(p);
  return cudaSuccess;
}
cudaError_t cudaMemcpy(void* dst, const void* src, std::size_t bytes, cudaMemcpyKind) {
  if (const cudaError_t e = detail::unsafe_during_capture("cudaMemcpy")) return e;
  ++g_host_syncs; // the host waits for the copy (and, on a GPU, for the device)
  copy_bytes(dst, src, bytes);
  return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void* dst, const void* src, std::size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t s) {
  // A copy between the device and pageable host memory may block the host
  // (a device-to-host one always does): counted as a synchronisation, and
  // not allowed in a capture.
  const bool from_host = kind == cudaMemcpyHostToDevice, to_host = kind == cudaMemcpyDeviceToHost;
  const bool pageable =
      bytes && ((from_host && !is_pinned(src, bytes)) || (to_host && !is_pinned(dst, bytes)));
  if (pageable)
    if (const cudaError_t e = detail::unsafe_during_capture("cudaMemcpyAsync (pageable memory)"))
      return e;
  if (detail::capture(s, [dst, src, bytes] {
        copy_bytes(dst, src, bytes);
        return cudaSuccess;
      }))
    return cudaSuccess;
  if (pageable) ++g_host_syncs;
  copy_bytes(dst, src, bytes);
  return cudaSuccess;
}
cudaError_t cudaMemset(void* p, int value, std::size_t bytes) {
  if (const cudaError_t e = detail::unsafe_during_capture("cudaMemset")) return e;
  if (bytes) std::memset(p, value, bytes);
  return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void* p, int value, std::size_t bytes, cudaStream_t s) {
  const auto run = [p, value, bytes] {
    if (bytes) std::memset(p, value, bytes);
    return cudaSuccess;
  };
  return detail::capture(s, run) ? cudaSuccess : run();
}
cudaError_t cudaDeviceSynchronize() {
  if (const cudaError_t e = detail::unsafe_during_capture("cudaDeviceSynchronize")) return e;
  ++g_host_syncs;
  return cudaSuccess;
}
namespace detail {
void count_host_sync() { ++g_host_syncs; }
} // namespace detail
cudaError_t cudaEventCreate(cudaEvent_t* e) {
  static char dummy;
  *e = reinterpret_cast<cudaEvent_t>(&dummy);
  return cudaSuccess;
}
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned) { return sim::cudaEventCreate(e); }
cudaError_t cudaEventDestroy(cudaEvent_t) { return cudaSuccess; }
cudaError_t cudaEventRecord(cudaEvent_t, cudaStream_t s) {
  detail::capture(s, [] { return cudaSuccess; }); // an event node
  return cudaSuccess;
}
// Everything ran when it was queued: every event has completed.
cudaError_t cudaEventQuery(cudaEvent_t) { return detail::unsafe_during_capture("cudaEventQuery"); }
cudaError_t cudaEventSynchronize(cudaEvent_t) {
  if (const cudaError_t e = detail::unsafe_during_capture("cudaEventSynchronize")) return e;
  ++g_host_syncs;
  return cudaSuccess;
}
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t, cudaEvent_t) {
  *ms = 0.0f; // no timing in a simulation
  return cudaSuccess;
}
namespace detail {
void set_api_error(cudaError_t e) {
  if (t_last_error == cudaSuccess) t_last_error = e;
}
} // namespace detail
cudaError_t cudaGetLastError() {
  const cudaError_t e = detail::t_last_error;
  detail::t_last_error = cudaSuccess;
  return e;
}
cudaError_t cudaPeekAtLastError() { return detail::t_last_error; }
const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
  case cudaSuccess:
    return "cudaSuccess";
  case cudaErrorInvalidValue:
    return "cudaErrorInvalidValue";
  case cudaErrorInvalidConfiguration:
    return "cudaErrorInvalidConfiguration";
  case cudaErrorLaunchFailure:
    return "cudaErrorLaunchFailure";
  case cudaErrorIllegalAddress:
    return "cudaErrorIllegalAddress";
  case cudaErrorInvalidDevicePointer:
    return "cudaErrorInvalidDevicePointer";
  case cudaErrorStreamCaptureUnsupported:
    return "cudaErrorStreamCaptureUnsupported";
  case cudaErrorStreamCaptureInvalidated:
    return "cudaErrorStreamCaptureInvalidated";
  case cudaErrorStreamCaptureWrongThread:
    return "cudaErrorStreamCaptureWrongThread";
  case cudaErrorIllegalState:
    return "cudaErrorIllegalState";
  default:
    return "cudaError (other)";
  }
}
const char* cudaGetErrorString(cudaError_t e) {
  if (e != cudaSuccess && e == detail::t_failed_code && !detail::t_failed_message.empty())
    return detail::t_failed_message.c_str();
  return e == cudaSuccess ? "no error" : "error (simulated runtime)";
}

} // namespace sim

// ---- wmma mock: layouts and collective checks --------------------------------------------------
namespace nvcuda::wmma::sim_detail {

const std::uint8_t* perm(int which) {
  static const auto tables = [] {
    std::vector<std::vector<std::uint8_t>> t(5, std::vector<std::uint8_t>(256));
    std::uint64_t x = 0x5eed5eedull;
    for (auto& p : t) {
      for (int i = 0; i < 256; ++i) p[std::size_t(i)] = std::uint8_t(i);
      for (int i = 255; i > 0; --i)
        std::swap(p[std::size_t(i)],
                  p[std::size_t(sim::detail::splitmix(x) % std::uint64_t(i + 1))]);
    }
    return t;
  }();
  return tables[std::size_t(which)].data();
}

void collective(sim::detail::Op op, const void* p, unsigned ldm, int layout, int elem_bytes,
                const sim::detail::Loc& loc) {
  using sim::detail::fail;
  using sim::detail::op_name;
  const int lane = sim::detail::t_ctx->lane;
  sim::detail::WarpExchange& ex = sim::detail::warp_exchange();
  ex.ptr[lane] = p;
  ex.ldm[lane] = ldm;
  ex.layout[lane] = layout;
  sim::detail::warp_arrive(op, 0xffffffffu, loc);
  if (lane != 0) return; // lane 0 checks for the warp
  for (int l = 1; l < 32; ++l)
    if (ex.ptr[l] != ex.ptr[0] || ex.ldm[l] != ex.ldm[0] || ex.layout[l] != ex.layout[0])
      fail(loc, "%s: lane %d passes (%p, ldm %u, layout %d), lane 0 (%p, ldm %u, layout %d)",
           op_name(op), l, ex.ptr[l], ex.ldm[l], ex.layout[l], ex.ptr[0], ex.ldm[0], ex.layout[0]);
  if (reinterpret_cast<std::uintptr_t>(p) % 32 != 0)
    fail(loc, "%s: pointer %p is not 32-byte (256-bit) aligned", op_name(op), p);
  if ((std::size_t(ldm) * std::size_t(elem_bytes)) % 16 != 0)
    fail(loc, "%s: ldm %u is not a multiple of 16 bytes (%d-byte elements)", op_name(op), ldm,
         elem_bytes);
  if (ldm < 16) fail(loc, "%s: ldm %u < 16", op_name(op), ldm);
  const std::size_t span = (15 * std::size_t(ldm) + 16) * std::size_t(elem_bytes);
  if (!sim::detail::in_known_memory(p, span))
    fail(loc,
         "%s: the 16x16 tile at %p (ldm %u, %zu bytes) is not inside the block's shared memory "
         "or a device allocation",
         op_name(op), p, ldm, span);
}

} // namespace nvcuda::wmma::sim_detail
