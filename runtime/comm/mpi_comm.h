// MPI implementation of Communicator (host memory), and the MPI runtime.
//
// The launcher creates one MpiRuntime at the start of main (it calls
// MPI_Init_thread and, at destruction, MPI_Finalize), then MpiRuntime::world()
// or MpiComm::world() for the world communicator. Every operation is issued
// non-blocking (MPI_Iallreduce, MPI_Isend, ...) and completed by polling
// MPI_Testall, so every wait has a deadline (see communicator.h). Every
// communicator made here has MPI_ERRORS_RETURN: an MPI error becomes a
// CommError carrying MPI_Error_string instead of aborting the job.
//
// Waiting polls MPI_Testall continuously; see set_comm_spin_seconds for when
// it yields the core (MpiRuntime picks from ranks per node vs cores).
//
// Threading: MPI_THREAD_FUNNELED is enough and is what MpiRuntime asks for by
// default: all MPI calls (issuing, test(), wait()) come from the thread that
// created the runtime. Overlap with computation comes from non-blocking
// operations, not from threads; since MPI progresses only inside MPI calls,
// code that overlaps a long operation should call CommHandle::test() now and
// then (e.g. between layers of the backward pass).
//
// bfloat16 travels as 16-bit integers; its sum, max and min are MPI_Ops made
// here (accumulating in float) and freed at MPI_Finalize. kAvg is a sum
// followed by a local division by size().
//
// reduce_scatter is a ring of point-to-point messages (n - 1 steps, the
// reduction done on the host as each chunk arrives), because OpenMPI's
// reduce_scatter_block is a reduce followed by a scatter and several times
// slower than an all-reduce; the other collectives are MPI's own.
//
// Element counts are size_t. all_reduce, broadcast, send and recv split
// counts above 2^30 into several MPI calls; reduce_scatter and all_gather
// take at most INT_MAX elements per rank.
#pragma once

// Only MPI's C interface is used; its deprecated C++ bindings warn with -Wextra.
#ifndef OMPI_SKIP_MPICXX
#define OMPI_SKIP_MPICXX 1
#endif
#ifndef MPICH_SKIP_MPICXX
#define MPICH_SKIP_MPICXX 1
#endif
#include <mpi.h>

#include <memory>
#include <string>
#include <vector>

#include "runtime/comm/communicator.h"

namespace myelin {

class MpiComm;
class MpiScratch;

// Throws CommError("<what>: <MPI_Error_string> (MPI error class N)") unless
// rc == MPI_SUCCESS.
void mpi_check(int rc, const std::string& what);
std::string mpi_error_string(int rc);

// MPI_Init_thread / MPI_Finalize as an object. Only one may exist at a time.
// If MPI is already initialized (by someone else) it neither initializes nor
// finalizes.
class MpiRuntime {
 public:
  // required: MPI_THREAD_FUNNELED (default), MPI_THREAD_SERIALIZED or
  // MPI_THREAD_MULTIPLE. Throws CommError if MPI provides less.
  MpiRuntime(int* argc, char*** argv, int required = MPI_THREAD_FUNNELED);
  ~MpiRuntime();
  MpiRuntime(const MpiRuntime&) = delete;
  MpiRuntime& operator=(const MpiRuntime&) = delete;

  int world_rank() const { return world_rank_; }
  int world_size() const { return world_size_; }
  // Rank and count of the processes of this job on this node
  // (MPI_Comm_split_type with MPI_COMM_TYPE_SHARED).
  int local_rank() const { return local_rank_; }
  int local_size() const { return local_size_; }
  int thread_level() const { return provided_; }
  bool initialized_here() const { return owns_; }

  // A new communicator over all ranks (a duplicate of MPI_COMM_WORLD).
  std::unique_ptr<MpiComm> world() const;

  // True if this process looks started by mpirun / srun (OMPI_COMM_WORLD_SIZE,
  // PMI_SIZE, PMIX_RANK or SLURM_NTASKS > 1 in the environment).
  static bool launched_by_mpi();

 private:
  bool owns_ = false;
  int provided_ = 0;
  int world_rank_ = 0, world_size_ = 1, local_rank_ = 0, local_size_ = 1;
};

class MpiComm final : public Communicator {
 public:
  // A duplicate of MPI_COMM_WORLD named "mpi:world". MPI must be initialized.
  static std::unique_ptr<MpiComm> world();

  // Takes ownership of `comm` (MPI_Comm_free at destruction, unless MPI is
  // finalized by then) and sets MPI_ERRORS_RETURN on it.
  MpiComm(MPI_Comm comm, std::string name);
  ~MpiComm() override;
  MpiComm(const MpiComm&) = delete;
  MpiComm& operator=(const MpiComm&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  MemorySpace memory() const override { return MemorySpace::kHost; }
  MPI_Comm native() const { return comm_; }
  // The rank in MPI_COMM_WORLD of rank r of this communicator.
  int world_rank_of(int r) const;

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

 private:
  std::string peer_label(int r) const;         // "1" or "1 (world rank 5)"
  static constexpr int kRingTagBase = 1 << 20; // above user tags (<= kMaxTag)
  int ring_tags_ = 0;                          // tags for ring reduce-scatters
  unsigned ring_seq_ = 0;
  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1;
  std::vector<int> world_ranks_;
  std::shared_ptr<MpiScratch> scratch_; // temporaries kept between operations
};

} // namespace myelin
