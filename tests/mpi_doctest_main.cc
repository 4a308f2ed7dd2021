// main() for multi-rank doctest binaries (see mpi_test.bzl). Every rank runs the same test
// cases in the same order; rank 0 prints doctest's report, the other ranks print theirs only
// if they failed. The failure count is summed over ranks so every rank exits with the same
// status. A test case left early (an unexpected exception, a crash, a failed REQUIRE) may have left the
// other ranks waiting in a collective, so it aborts the whole job at once instead of hanging.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>
#include <mpi.h>

#include <cstdio>
#include <exception>
#include <iostream>
#include <sstream>
#include <string_view>

#include "comm/mpi_check.h"
#include "comm/mpi_runtime.h"

namespace {

int g_rank = 0;
std::ostringstream g_quiet_output;  // ranks other than 0 report into this

// The line mpirun_test.sh looks for to name the failing ranks.
void report_failure(const char* how) {
  if (g_rank != 0) std::cout << g_quiet_output.str();
  std::cout << "FAILED on rank " << g_rank << ": " << how << "\n" << std::flush;
}

struct AbortOnEarlyExit : doctest::IReporter {
  explicit AbortOnEarlyExit(const doctest::ContextOptions&) {}

  void log_assert(const doctest::AssertData& data) override {
    if (data.m_failed && (data.m_at & doctest::assertType::is_require)) require_failed_ = true;
  }

  // mpirun sends SIGTERM to the other ranks once one aborts: that is not a failure of theirs.
  void test_case_exception(const doctest::TestCaseException& e) override {
    if (e.is_crash && std::string_view(e.error_string.c_str()).starts_with("SIGTERM")) terminated_ = true;
  }

  void test_case_end(const doctest::CurrentTestCaseStats& stats) override {
    const int left_early = doctest::TestCaseFailureReason::Exception | doctest::TestCaseFailureReason::Crash;
    if (terminated_ || ((stats.failure_flags & left_early) == 0 && !require_failed_)) return;
    report_failure("a test case ended early (exception, crash or REQUIRE); aborting every rank so none waits");
    dilatron::MpiRuntime::abort(1);
  }

  void report_query(const doctest::QueryData&) override {}
  void test_run_start() override {}
  void test_run_end(const doctest::TestRunStats&) override {}
  void test_case_start(const doctest::TestCaseData&) override {}
  void test_case_reenter(const doctest::TestCaseData&) override {}
  void subcase_start(const doctest::SubcaseSignature&) override {}
  void subcase_end() override {}
  void log_message(const doctest::MessageData&) override {}
  void test_case_skipped(const doctest::TestCaseData&) override {}

 private:
  bool require_failed_ = false, terminated_ = false;
};

REGISTER_LISTENER("abort_on_early_exit", 1, AbortOnEarlyExit);

}  // namespace

int main(int argc, char** argv) {
  try {
    dilatron::MpiRuntime mpi;
    DILATRON_MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &g_rank));
    doctest::Context context(argc, argv);
    if (g_rank != 0) context.setCout(&g_quiet_output);
    int local_failed = context.run() != 0 ? 1 : 0;
    if (context.shouldExit()) return local_failed;
    if (local_failed) report_failure("see the failed checks above");
    int ranks_failed = 0;
    DILATRON_MPI_CHECK(MPI_Allreduce(&local_failed, &ranks_failed, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD));
    if (g_rank == 0 && ranks_failed > 0) std::cout << ranks_failed << " rank(s) failed\n" << std::flush;
    return ranks_failed > 0 ? 1 : 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "rank %d: %s\n", g_rank, e.what());
    return 1;
  }
}
