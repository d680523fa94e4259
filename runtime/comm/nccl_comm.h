// NCCL implementation of Communicator (device memory). Built when CUDA and
// NCCL are found (MYELIN_HAVE_NCCL), with or without MPI.
//
// Bootstrap: NcclComm::create(bootstrap) is collective over a host
// communicator (an MpiComm, or anything else that can broadcast 128 bytes):
// rank 0 makes the ncclUniqueId and broadcasts it. The device is the
// process's local rank modulo the number of visible devices; the local rank
// comes from OMPI_COMM_WORLD_LOCAL_RANK, MPI_LOCALRANKID, SLURM_LOCALID or
// LOCAL_RANK, else from comparing host names over the bootstrap communicator.
//
// Streams: each communicator has its own non-blocking CUDA stream. An
// operation first waits (on the GPU, cudaStreamWaitEvent) for the work queued
// so far on the input stream (set_input_stream: the engine's stream in
// training, see Trainer; default: the legacy default stream, which covers
// cudaMemcpy and every blocking stream but not a non-blocking one), then runs
// on the communicator's stream; its handle's wait() returns when it has
// finished (an event on that stream). split() passes the input stream on.
//
// Timeouts and errors: the communicator is created non-blocking
// (config.blocking = 0). Waits poll cudaEventQuery and ncclCommGetAsyncError;
// at the deadline the communicator is aborted (ncclCommAbort, which also stops
// its kernels) and CommTimeout is thrown; every later call throws CommError.
// An NCCL call that returns ncclInProgress (connection setup) is completed
// before the call returns, within the timeout.
//
// NCCL has no tags: send/recv between two ranks match in issue order. A
// transfer to this rank itself needs both halves in one call: sendrecv does
// that; a lone send or recv to self throws std::invalid_argument. There is no
// NCCL barrier: barrier() is an all-reduce of one int.
#pragma once

#include <cuda_runtime.h>
#include <nccl.h>

#include <memory>
#include <string>

#include "runtime/comm/communicator.h"

namespace myelin {

// Throw CommError("<what>: <error string>") on failure.
void nccl_check(ncclResult_t r, const std::string& what);
void cuda_check(cudaError_t e, const std::string& what);

namespace detail {
struct NcclState;
}

class NcclComm final : public Communicator {
 public:
  // Collective over `bootstrap` (host memory). device < 0 picks one from the
  // local rank (see above). The timeout of `bootstrap` bounds the setup and is
  // the new communicator's timeout.
  static std::unique_ptr<NcclComm> create(Communicator& bootstrap, int device = -1);
  // For bootstraps that move the id some other way (the pool): every one of
  // `size` ranks calls this with the same id, which rank 0 made with
  // make_unique_id().
  static ncclUniqueId make_unique_id();
  static std::unique_ptr<NcclComm> create(const ncclUniqueId& id, int rank, int size, int device,
                                          double timeout_s, std::string name);
  // The local rank this process would use to pick its device (-1 if no
  // environment variable names it).
  static int local_rank_from_env();

  ~NcclComm() override;
  NcclComm(const NcclComm&) = delete;
  NcclComm& operator=(const NcclComm&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  MemorySpace memory() const override { return MemorySpace::kDevice; }
  int device() const { return device_; }
  cudaStream_t stream() const { return stream_; }
  ncclComm_t native() const;
  // Operations wait for the work queued on `s` (a cudaStream_t; nullptr = the
  // legacy default stream) before they were issued.
  void set_input_stream(void* s) override {
    input_stream_ = s != nullptr ? static_cast<cudaStream_t>(s) : cudaStreamLegacy;
  }
  cudaStream_t input_stream() const { return input_stream_; }
  // True after a timeout or an asynchronous NCCL error aborted the communicator.
  bool aborted() const;

  CommHandle all_reduce_async(const void* send, void* recv, std::size_t count, CommDType type,
                              ReduceOp op) override;
  CommHandle reduce_scatter_async(const void* send, void* recv, std::size_t recv_count,
                                  CommDType type, ReduceOp op) override;
  CommHandle all_gather_async(const void* send, void* recv, std::size_t send_count,
                              CommDType type) override;
  CommHandle broadcast_async(void* buf, std::size_t count, CommDType type, int root) override;
  CommHandle send_async(const void* buf, std::size_t count, CommDType type, int peer,
                        int tag = 0) override;
  CommHandle recv_async(void* buf, std::size_t count, CommDType type, int peer,
                        int tag = 0) override;
  CommHandle sendrecv_async(const void* send, std::size_t send_count, int dst, void* recv,
                            std::size_t recv_count, int src, CommDType type, int tag = 0) override;
  CommHandle barrier_async() override;
  std::unique_ptr<Communicator> split(int color, int key) override;

  void* alloc_buffer(std::size_t bytes) override;
  void free_buffer(void* p) noexcept override;
  void copy_from_host(void* dst, const void* host_src, std::size_t bytes) override;
  void copy_to_host(void* host_dst, const void* src, std::size_t bytes) override;

 private:
  NcclComm(ncclComm_t comm, int device, std::string name, double timeout_s);
  class Pending;
  template <typename Issue> CommHandle launch(std::unique_ptr<Pending> p, Issue&& issue);
  // std::invalid_argument for a lone send or recv to this rank (NCCL would
  // fail the whole communicator with ncclInvalidUsage).
  void refuse_self(const char* op, int peer) const;

  std::shared_ptr<detail::NcclState> state_;
  int rank_ = 0, size_ = 1, device_ = 0;
  cudaStream_t stream_ = nullptr;
  cudaStream_t input_stream_ = cudaStreamLegacy;
  cudaEvent_t input_ready_ = nullptr;
  int* scratch_ = nullptr; // one int on the device, for barrier()
};

} // namespace myelin
