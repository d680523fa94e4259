#include "runtime/train/run.h"

#include <cstdint>
#include <cstdio>
#include <iostream>

#include "runtime/train/trainer.h"
#include "runtime/util/error.h"
#ifdef MYELIN_HAVE_MPI
#include "runtime/comm/mpi_comm.h"
#endif
#ifdef MYELIN_HAVE_NCCL
#include "runtime/comm/nccl_comm.h"
#endif

namespace myelin {

int run_training(const TrainOptions& o) {
  const std::int64_t ranks = std::int64_t(o.dp) * o.pp;
#ifdef MYELIN_HAVE_MPI
  // Outside mpirun, bad options fail here, before MPI starts; under mpirun
  // every rank checks them below and only rank 0 reports.
  if (!MpiRuntime::launched_by_mpi()) validate_train_options(o);
  if (MpiRuntime::launched_by_mpi() || ranks > 1) {
    MpiRuntime mpi(nullptr, nullptr);
    try {
      validate_train_options(o);
      require(ranks == mpi.world_size(), "--dp/--pp",
              "dp x pp = " + std::to_string(ranks) + " but the job has " +
                  std::to_string(mpi.world_size()) + " ranks (mpirun -np)");
      Mesh mesh(mpi.world(), o.dp, o.pp);
      TrainOptions local = o;
      local.device_index = mpi.local_rank();
      std::unique_ptr<Mesh> device_mesh;
      if (o.device == "cuda") {
#ifdef MYELIN_HAVE_NCCL
        // Gradients and activations move between GPUs over NCCL, bootstrapped
        // through MPI; scalars and host copies keep using MPI.
        auto nccl = NcclComm::create(mesh.world(), -1);
        local.device_index = nccl->device();
        device_mesh = std::make_unique<Mesh>(std::move(nccl), o.dp, o.pp);
#else
        throw InputError("--device cuda under mpirun: this myelin was built without NCCL");
#endif
      }
      Trainer t(local, &mesh, device_mesh.get());
      t.run();
      mesh.world().barrier();
      return 0;
    } catch (const CommError& e) {
      // A peer died or hangs: say which, then take the whole job down so no
      // rank waits forever (the newest complete checkpoint stays intact).
      std::fprintf(stderr, "myelin train: rank %d: %s; aborting the job\n", mpi.world_rank(),
                   e.what());
      std::fflush(stderr);
      MPI_Abort(MPI_COMM_WORLD, 1);
      return 1;
    } catch (const std::exception& e) {
      const bool input = dynamic_cast<const InputError*>(&e) != nullptr;
      if (mpi.world_rank() == 0 || !input)
        std::fprintf(stderr, "myelin train: %s%s\n", input ? "" : "error: ", e.what());
      std::fflush(stderr);
      // Every rank validates the same input and fails the same way; a
      // runtime failure on one rank must not leave the others waiting.
      if (!input) MPI_Abort(MPI_COMM_WORLD, 1);
      return input ? 2 : 1;
    }
  }
#endif
  validate_train_options(o);
  if (ranks > 1)
    throw InputError("--dp/--pp: this myelin was built without MPI; multi-rank jobs need it");
  Trainer t(o);
  t.run();
  return 0;
}

} // namespace myelin
