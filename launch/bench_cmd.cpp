// myelin bench: kernel benchmarks (cpu or cuda), collective benchmarks
// (--comm, under mpirun) and the pipeline bubble benchmark (--pipeline).
#include <boost/program_options.hpp>
#include <cstdint>
#include <iostream>
#include <sstream>

#include "launch/commands.h"
#include "launch/options_util.h"
#include "runtime/bench/comm_bench.h"
#include "runtime/bench/cpu_kernels_bench.h"
#include "runtime/bench/pipeline_bench.h"
#include "runtime/comm/self_comm.h"
#include "runtime/model/config.h"
#include "runtime/util/error.h"
#ifdef MYELIN_HAVE_CUDA
#include "runtime/bench/cuda_kernels_bench.h"
#endif
#ifdef MYELIN_HAVE_MPI
#include "runtime/comm/mpi_comm.h"
#endif

namespace po = boost::program_options;

namespace myelin::launch {

int bench_main(const Args& args) {
  std::string device = "cpu", output, models = "124M,350M,1.5B", dtype = "bf16";
  bool comm = false, pipeline = false;
  CpuBenchOptions cpu;
  CommBenchOptions cb;
  PipelineBenchOptions pb;
  std::size_t min_bytes = cb.min_bytes, max_bytes = cb.max_bytes;
  int reps = 0, cuda_batch = 8, cuda_seq = 1024;
  po::options_description d("myelin bench");
  d.add_options()("help,h", "show this help")("device", po::value(&device)->default_value(device),
                                              "kernels of: cpu | cuda")(
      "comm", po::bool_switch(&comm), "benchmark collectives instead (run under mpirun -np N)")(
      "pipeline", po::bool_switch(&pipeline),
      "measure the pipeline bubble (run under mpirun -np STAGES)")(
      "filter", po::value(&cpu.filter)->default_value(cpu.filter), "regex over kernel names")(
      "output", po::value(&output), "write results to this .json or .csv file")(
      "reps", po::value(&reps)->default_value(0), "timed repetitions (0 = default)")(
      "batch", po::value(&cpu.batch)->default_value(cpu.batch),
      "cpu kernels: B")("seq", po::value(&cpu.seq)->default_value(cpu.seq), "cpu kernels: T")(
      "channels", po::value(&cpu.channels)->default_value(cpu.channels), "cpu kernels: C")(
      "heads", po::value(&cpu.heads)->default_value(cpu.heads), "cpu kernels: NH")(
      "kv-heads", po::value(&cpu.kv_heads)->default_value(cpu.kv_heads),
      "cpu kernels: key/value heads of the grouped-query attention (0: NH/2 if even, else NH)")(
      "intermediate", po::value(&cpu.intermediate)->default_value(cpu.intermediate),
      "cpu kernels: SwiGLU width I (0: 2C)")(
      "vocab", po::value(&cpu.vocab)->default_value(cpu.vocab),
      "cpu kernels: V")("models", po::value(&models)->default_value(models),
                        "cuda kernels: presets (GPT-2 124M,350M,774M,1.5B; llama-135M,llama-1B)")(
      "cuda-batch", po::value(&cuda_batch)->default_value(cuda_batch), "cuda kernels: B")(
      "cuda-seq", po::value(&cuda_seq)->default_value(cuda_seq), "cuda kernels: T")(
      "dtype", po::value(&dtype)->default_value(dtype), "cuda kernels: bf16 | fp32")(
      "min-bytes", unsigned_value(&min_bytes)->default_value(min_bytes),
      "--comm: smallest message")("max-bytes", unsigned_value(&max_bytes)->default_value(max_bytes),
                                  "--comm: largest message")(
      "micro-batches", po::value(&pb.micro_batches)->default_value(pb.micro_batches),
      "--pipeline: micro-batches per step (K)")("pp-schedule",
                                                po::value(&pb.schedule)->default_value(pb.schedule),
                                                "--pipeline: gpipe | 1f1b")(
      "steps", po::value(&pb.steps)->default_value(pb.steps), "--pipeline: steps measured");
  po::variables_map vm;
  if (!parse_or_help(args, d, vm,
                     "myelin bench [--device cpu|cuda] | mpirun -np N myelin bench --comm | mpirun "
                     "-np M myelin bench --pipeline"))
    return 0;
  require(reps >= 0 && reps <= 1'000'000, "--reps", "expected 0..1000000");
  if (comm || pipeline) {
    require(!(comm && pipeline), "--comm/--pipeline", "choose one");
    require(min_bytes >= 1 && max_bytes <= (std::size_t(1) << 34) && min_bytes <= max_bytes,
            "--min-bytes/--max-bytes", "expected 1 <= min <= max <= 17179869184 (16 GiB)");
    require(pb.micro_batches >= 1 && pb.micro_batches <= (1 << 16), "--micro-batches",
            "expected 1..65536");
    require(pb.steps >= 2 && pb.steps <= 1'000'000, "--steps", "expected 2..1000000");
    cb.min_bytes = min_bytes;
    cb.max_bytes = max_bytes;
    cb.json_path = output.size() > 5 && output.ends_with(".json") ? output : "";
    cb.csv_path = output.size() > 4 && output.ends_with(".csv") ? output : "";
    if (reps > 0) cb.iters = reps;
#ifdef MYELIN_HAVE_MPI
    if (MpiRuntime::launched_by_mpi()) {
      MpiRuntime mpi(nullptr, nullptr);
      auto world = mpi.world();
      return comm ? run_comm_bench(*world, cb) : run_pipeline_bench(std::move(world), pb);
    }
#endif
    auto self = std::make_unique<SelfComm>();
    return comm ? run_comm_bench(*self, cb) : run_pipeline_bench(std::move(self), pb);
  }
  if (device == "cpu") {
    if (reps > 0) cpu.repetitions = reps;
    cpu.output = output;
    return run_cpu_kernel_bench(cpu);
  }
  require(device == "cuda", "--device", "expected cpu or cuda, got '" + device + "'");
  // The GPT-2 shapes at --cuda-batch x --cuda-seq, through the model's size check.
  const FieldNamer cuda_flag = [](std::string_view key) -> std::string {
    return key == "batch_size" ? "--cuda-batch" : key == "seq_len" ? "--cuda-seq" : "--models";
  };
  std::stringstream names(models);
  for (std::string name; std::getline(names, name, ',');) {
    ModelConfig shape;
    require(model_preset(name, shape), "--models",
            "unknown model '" + name + "' (expected " + kPresetNames + ")");
    validate_micro_batch(shape, cuda_batch, cuda_seq, cuda_flag);
    require(std::int64_t(cuda_batch) * shape.num_heads <= 65535, "--cuda-batch",
            "batch x heads must be <= 65535 (" + name + " has " + std::to_string(shape.num_heads) +
                " heads)");
  }
#ifdef MYELIN_HAVE_CUDA
  CudaBenchOptions co;
  co.filter = cpu.filter;
  co.output = output;
  if (reps > 0) co.repetitions = reps;
  co.models = models;
  co.batch = cuda_batch;
  co.seq = cuda_seq;
  co.dtype = dtype;
  return run_cuda_kernel_bench(co);
#else
  throw InputError("--device cuda: this myelin was built without the CUDA backend");
#endif
}

} // namespace myelin::launch
