#include <doctest/doctest.h>

#include <fcntl.h>

#include "core/check.h"

using dilatron::Error;
using dilatron::InputError;

TEST_CASE("a failed check names the expression, the place and the message") {
  int x = 3;
  try {
    DILATRON_CHECK(x == 4, "x was {}", x);
    FAIL("no throw");
  } catch (const Error& e) {
    std::string what = e.what();
    CHECK(what.find("x == 4") != std::string::npos);
    CHECK(what.find("check_test.cc") != std::string::npos);
    CHECK(what.find("x was 3") != std::string::npos);
  }
  CHECK_NOTHROW(DILATRON_CHECK(x == 3));
}

TEST_CASE("input errors are their own type and carry only the message") {
  try {
    DILATRON_CHECK_INPUT(false, "model.n_heads: must divide model.d_model");
    FAIL("no throw");
  } catch (const InputError& e) {
    CHECK(std::string(e.what()) == "model.n_heads: must divide model.d_model");
  }
}

TEST_CASE("syscall checks report errno") {
  CHECK_THROWS_WITH_AS(DILATRON_CHECK_SYSCALL(::open("/nonexistent/dir/file", O_RDONLY), "open"),
                       doctest::Contains("No such file"), Error);
}
