// myelin train: options -> TrainOptions -> Trainer (or the distributed runner
// when launched under mpirun with --dp/--pp).
#include <omp.h>

#include <boost/program_options.hpp>
#include <fstream>
#include <iostream>

#include "launch/commands.h"
#include "launch/options_util.h"
#include "runtime/io/model_any.h"
#include "runtime/model/memory_plan.h"
#include "runtime/parallel/pipeline.h"
#include "runtime/train/options.h"
#include "runtime/train/run.h"
#include "runtime/util/error.h"

namespace po = boost::program_options;

namespace myelin::launch {

namespace {
// `--memory-plan`: the engine's memory (device memory on cuda) per pipeline
// stage, from the options alone.
int print_memory_plan(const TrainOptions& o) {
  validate_train_options(o, true);
  ModelConfig cfg = o.shape;
  if (!o.model_path.empty()) {
    cfg = load_any_model_config(o.model_path);
    validate_micro_batch(cfg, o.batch_size, o.seq_len, flag_names());
  }
  const auto stages = split_stages(cfg.num_layers, o.pp, o.pp_layers);
  const int slots = pipeline_slots(
      o.pp_schedule == "gpipe" ? PipeSchedule::kGPipe : PipeSchedule::k1F1B, o.pp, o.grad_accum);
  std::cout << "model " << cfg.describe() << " | " << ParamLayout(cfg).total / 1e6 << "M params | "
            << o.dtype << " | micro-batch " << o.batch_size << "x" << o.seq_len << " | recompute "
            << o.recompute << "\n";
  for (std::size_t i = 0; i < stages.size(); ++i) {
    const auto plan = plan_memory(cfg, stages[i], o.batch_size, o.seq_len, o.device, o.dtype,
                                  o.recompute, slots, o.zero == 1 ? o.dp : 1);
    if (stages.size() > 1)
      std::cout << "stage " << i << " (layers " << stages[i].layer_begin << ".."
                << stages[i].layer_end - 1 << "): ";
    std::cout << plan.describe() << "\n";
  }
  std::cout << "(per process; not counted: the CUDA context, about 0.5 GiB"
            << (o.zero == 1 && o.dp > 1 ? "; AdamW is the largest ZeRO-1 shard" : "") << ")\n";
  return 0;
}
} // namespace

po::options_description train_options_description(TrainOptions& o, std::string& preset,
                                                  std::string& family) {
  po::options_description model("Model (a checkpoint, or a shape and a seed)");
  model.add_options()(
      "model", po::value(&o.model_path),
      "start from this model: llm.c format (v3 fp32 or v5 bf16), or Hugging Face GPT-2 "
      "safetensors (a .safetensors file, an .index.json or a folder; config.json "
      "beside it)")(
      "preset", po::value(&preset),
      "a named shape, overriding the shape flags: GPT-2 124M, 350M, 774M, 1.5B (V 50257, maxT "
      "1024); Llama family llama-135M (SmolLM-135M's shape), llama-1B (Llama 3.2 1B's shape)")(
      "family", po::value(&family)->default_value("gpt2"),
      "gpt2 (LayerNorm, learned positions, GeLU, biases, tied head) or llama (RMSNorm, rotary "
      "positions, SwiGLU, grouped-query attention, no biases)")(
      "kv-heads", po::value(&o.shape.num_kv_heads)->default_value(o.shape.num_kv_heads),
      "llama: key/value heads, dividing --heads (0 = --heads)")(
      "intermediate-size",
      po::value(&o.shape.intermediate_size)->default_value(o.shape.intermediate_size),
      "llama: SwiGLU width (0 = 4 x channels)")(
      "untied-head", po::bool_switch(),
      "llama: a separate output head (lm_head) instead of reusing the embedding")(
      "rope-theta", po::value(&o.shape.rope.theta)->default_value(o.shape.rope.theta),
      "llama: rotary embedding base")("norm-eps",
                                      po::value(&o.shape.norm_eps)->default_value(o.shape.norm_eps),
                                      "llama: RMSNorm epsilon")(
      "layers", po::value(&o.shape.num_layers)->default_value(o.shape.num_layers),
      "transformer blocks")(
      "heads", po::value(&o.shape.num_heads)->default_value(o.shape.num_heads), "attention heads")(
      "channels", po::value(&o.shape.channels)->default_value(o.shape.channels),
      "model width")("vocab", po::value(&o.shape.vocab_size)->default_value(o.shape.vocab_size),
                     "vocabulary size (256 = byte tokenizer)")(
      "padded-vocab",
      po::value(&o.shape.padded_vocab_size)->default_value(o.shape.padded_vocab_size),
      "rows of the embedding table (>= vocab)")(
      "max-seq-len", po::value(&o.shape.max_seq_len)->default_value(o.shape.max_seq_len),
      "rows of the position embedding")("seed", unsigned_value(&o.seed)->default_value(o.seed),
                                        "seed for initialisation and shuffling");
  po::options_description data("Data");
  data.add_options()("train-data", po::value(&o.train_data),
                     "training shards (file or glob, llm.c format)")(
      "val-data", po::value(&o.val_data), "validation shards (file or glob)")(
      "shuffle", po::bool_switch(&o.shuffle), "permute shards and batches (seeded by --seed)")(
      "batch-size,b", po::value(&o.batch_size)->default_value(o.batch_size),
      "rows per micro-batch per rank")("seq-len,t", po::value(&o.seq_len)->default_value(o.seq_len),
                                       "tokens per row")(
      "grad-accum", po::value(&o.grad_accum)->default_value(o.grad_accum),
      "micro-batches per step")("micro-batches", po::value(&o.grad_accum),
                                "alias of --grad-accum (what a pipeline schedules)");
  po::options_description optim("Optimisation");
  optim.add_options()("steps", po::value(&o.steps)->default_value(o.steps),
                      "total optimizer steps of the run")(
      "lr", po::value(&o.lr)->default_value(o.lr, "3e-4"), "peak learning rate")(
      "warmup-steps", po::value(&o.warmup_steps)->default_value(o.warmup_steps),
      "linear warmup steps")("lr-schedule", po::value(&o.lr_schedule)->default_value(o.lr_schedule),
                             "constant | cosine")(
      "final-lr-frac", po::value(&o.final_lr_frac)->default_value(o.final_lr_frac, "0"),
      "cosine ends at lr x this")("weight-decay",
                                  po::value(&o.weight_decay)->default_value(o.weight_decay, "0"),
                                  "AdamW decoupled weight decay (matrices and embeddings)")(
      "beta1", po::value(&o.beta1)->default_value(o.beta1, "0.9"),
      "AdamW beta1")("beta2", po::value(&o.beta2)->default_value(o.beta2, "0.95"), "AdamW beta2")(
      "eps", po::value(&o.eps)->default_value(o.eps, "1e-8"),
      "AdamW epsilon")("grad-clip", po::value(&o.grad_clip)->default_value(o.grad_clip, "1"),
                       "clip the global gradient norm (0 = off)");
  po::options_description dev("Device and parallelism");
  dev.add_options()("device", po::value(&o.device)->default_value(o.device), "cpu | cuda")(
      "dtype", po::value(&o.dtype), "fp32 | bf16 (default: bf16 on cuda, fp32 on cpu)")(
      "threads", po::value(&o.threads)->default_value(o.threads), "CPU threads (0 = all cores)")(
      "recompute", po::value(&o.recompute)->default_value(o.recompute),
      "0 = store all activations; 1 = recompute GeLU, 2 = also LayerNorm in the backward")(
      "memory-plan", po::bool_switch(),
      "print the cuda engine's device memory for these options and exit (needs no GPU)")(
      "dp", po::value(&o.dp)->default_value(o.dp), "data-parallel ranks (under mpirun)")(
      "pp", po::value(&o.pp)->default_value(o.pp), "pipeline stages (under mpirun)")(
      "pp-schedule", po::value(&o.pp_schedule)->default_value(o.pp_schedule), "gpipe | 1f1b")(
      "pp-layers", po::value(&o.pp_layers), "layers per stage, e.g. 3,3,2 (default balanced)")(
      "zero", po::value(&o.zero)->default_value(o.zero),
      "1 = shard AdamW state across data-parallel ranks")(
      "comm-timeout", po::value(&o.comm_timeout_s)->default_value(o.comm_timeout_s, "300"),
      "seconds before a stuck collective stops the job");
  po::options_description out("Checkpoints and output");
  std::string save_dtype = "fp32";
  out.add_options()("checkpoint-dir", po::value(&o.checkpoint_dir), "folder for checkpoints")(
      "checkpoint-every", po::value(&o.checkpoint_every)->default_value(o.checkpoint_every),
      "steps between checkpoints (0 = none)")(
      "keep-checkpoints", po::value(&o.keep_checkpoints)->default_value(o.keep_checkpoints),
      "keep only the newest N (0 = all)")(
      "resume", po::bool_switch(&o.resume),
      "continue from the newest checkpoint in --checkpoint-dir")(
      "resume-from", po::value(&o.resume_from),
      "continue from this checkpoint folder (e.g. ckpt/step_00000200) instead of the newest")(
      "save", po::value(&o.save_path),
      "write the final model here (llm.c format; a .safetensors name writes "
      "safetensors and config.json beside it)")(
      "save-bf16", po::bool_switch(),
      "write --save as bf16 (llm.c version 5, or BF16 safetensors) instead of fp32")(
      "metrics-out", po::value(&o.metrics_out), "append one JSON object per step to this file")(
      "val-every", po::value(&o.val_every)->default_value(o.val_every),
      "validation loss every N steps (0 = off)")(
      "val-batches", po::value(&o.val_batches)->default_value(o.val_batches),
      "batches per validation")("sample-every",
                                po::value(&o.sample_every)->default_value(o.sample_every),
                                "print a text sample every N steps (byte-level models)")(
      "sample-len", po::value(&o.sample_len)->default_value(o.sample_len), "tokens per sample")(
      "sample-prompt", po::value(&o.sample_prompt), "text the sample continues")(
      "eval-task", po::value(&o.eval_task),
      "exact-match accuracy on held-out problems of a synthetic task (addition), at each "
      "validation and at the end")("eval-digits",
                                   po::value(&o.eval_digits)->default_value(o.eval_digits),
                                   "--eval-task addition: digits per operand (as the data's)")(
      "eval-examples", po::value(&o.eval_examples)->default_value(o.eval_examples),
      "--eval-task: held-out problems scored")(
      "log-every", po::value(&o.log_every)->default_value(o.log_every),
      "terminal line every N steps")("quiet", po::bool_switch(&o.quiet), "no terminal output");
  po::options_description all("myelin train");
  all.add(model).add(data).add(optim).add(dev).add(out);
  return all;
}

int train_main(const Args& args) {
  TrainOptions o;
  std::string preset, family;
  auto desc = train_options_description(o, preset, family);
  desc.add_options()("help,h", "show this help");
  // Hidden options, used by `myelin contribute --ranks N` for its mpirun
  // child (not shown in --help):
  //   --data-slice R/N       this process group is row slice R of N of each
  //                          global batch; its dp ranks split the slice further
  //   --data-start-batch K   start the loader at global batch K
  //   --run-steps H          stop after H steps (the LR schedule still spans --steps)
  //   --start-step S         count steps (the LR schedule) from S with fresh
  //                          AdamW moments (a pool round's start)
  //   --options-file F       more options, one "flag = value" per line
  //                          (runtime/train/options_file.h); the command
  //                          line wins where both give one
  std::string slice;
  po::options_description hidden;
  hidden.add_options()("options-file", po::value<std::string>(), "options, one per line")(
      "data-slice", po::value(&slice), "R/N: this job is data slice R of N")(
      "data-start-batch", po::value(&o.data_start_batch), "start at this global batch")(
      "run-steps", po::value(&o.run_steps), "stop after this many steps")(
      "start-step", po::value(&o.start_step), "count steps from here, fresh AdamW")(
      "restart-warmup", po::value(&o.restart_warmup), "ramp the lr over N steps after a restart");
  po::options_description all;
  all.add(desc).add(hidden);
  po::variables_map vm;
  po::store(po::command_line_parser(args).options(all).run(), vm);
  if (vm.count("options-file")) {
    std::ifstream f(vm["options-file"].as<std::string>());
    require(bool(f), "--options-file",
            "cannot read '" + vm["options-file"].as<std::string>() + "'");
    po::store(po::parse_config_file(f, all), vm);
  }
  if (vm.count("help")) {
    std::cout << "usage: myelin train [options]  (or: mpirun -np N myelin train --dp N ...)\n\n"
              << desc << "\n";
    return 0;
  }
  po::notify(vm);
  if (!o.resume_from.empty()) o.resume = true;
  if (!slice.empty()) {
    const auto slash = slice.find('/');
    try {
      std::size_t n1 = 0, n2 = 0;
      if (slash == std::string::npos) throw std::invalid_argument("no /");
      o.data_rank = std::stoi(slice.substr(0, slash), &n1);
      o.data_ranks = std::stoi(slice.substr(slash + 1), &n2);
      if (n1 != slash || n2 != slice.size() - slash - 1) throw std::invalid_argument("junk");
    } catch (const std::exception&) {
      throw InputError("--data-slice: expected RANK/RANKS, e.g. 1/4, got '" + slice + "'");
    }
  }
  if (vm.count("save-bf16") && vm["save-bf16"].as<bool>()) o.save_version = 5;
  if (vm.count("padded-vocab") && vm["padded-vocab"].defaulted() && !vm["vocab"].defaulted())
    o.shape.padded_vocab_size = default_padded_vocab(o.shape.vocab_size);
  o.shape.family = parse_family(family, "--family");
  if (vm["untied-head"].as<bool>()) o.shape.tied_head = false;
  if (!preset.empty() && !model_preset(preset, o.shape))
    throw InputError("--preset: expected one of " + std::string(kPresetNames) + ", got '" + preset +
                     "'");
  if (!vm.count("dtype")) o.dtype = o.device == "cuda" ? "bf16" : "fp32";
  if (vm["memory-plan"].as<bool>()) return print_memory_plan(o);
  return run_training(o);
}

} // namespace myelin::launch
