"""mpi_test: one doctest binary run under mpirun at several rank counts."""

# Attributes that shape the binary; everything else in **kwargs goes to each sh_test.
_BINARY_ATTRS = ["copts", "defines", "local_defines", "linkopts", "includes", "data"]

def mpi_test(name, srcs, deps = [], ranks = [1, 2, 4], size = "medium", **kwargs):
    """Builds `{name}_bin` and one test `{name}_np{N}` per N in ranks, plus a test_suite `{name}`.

    The binary's main() is //tests:mpi_doctest_main (added here): it starts MPI, runs doctest on
    every rank and gives every rank the same exit status. Each test runs
    `tests/mpirun_test.sh N binary` (mpirun -np N, with a timeout so a hang fails).
    """
    binary_kwargs = {k: kwargs.pop(k) for k in _BINARY_ATTRS if k in kwargs}
    main = "//tests:mpi_doctest_main"
    binary = name + "_bin"
    native.cc_binary(
        name = binary,
        testonly = True,
        srcs = srcs,
        deps = deps + ([] if main in deps else [main]),
        tags = ["manual"],
        **binary_kwargs
    )
    tests = []
    for n in ranks:
        test = "{}_np{}".format(name, n)
        native.sh_test(
            name = test,
            size = size,
            srcs = ["//tests:mpirun_test.sh"],
            args = [str(n), "$(rootpath :{})".format(binary)],
            data = [":" + binary],
            **kwargs
        )
        tests.append(":" + test)
    native.test_suite(name = name, tests = tests)
