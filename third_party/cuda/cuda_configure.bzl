"""Finds the CUDA toolkit ($CUDA_HOME, else /usr/local/cuda) and exposes it as @local_cuda.

Without a toolkit the repository still exists, with empty libraries, so that a CPU-only
build analyses; nothing links against them unless --config=cuda is set (see scripts/setup).
"""

_BUILD_WITH_CUDA = """
package(default_visibility = ["//visibility:public"])

cc_library(
    name = "headers",
    hdrs = glob(["include/**"]),
    includes = ["include"],
)

cc_library(
    name = "cudart",
    linkopts = ["-L{lib}", "-Wl,-rpath,{lib}", "-lcudart"],
    deps = [":headers"],
)

cc_library(
    name = "cublas",
    linkopts = ["-L{lib}", "-Wl,-rpath,{lib}", "-lcublasLt", "-lcublas"],
    deps = [":cudart"],
)

cc_library(
    name = "nccl",
    linkopts = ["-L{lib}", "-Wl,-rpath,{lib}", "-lnccl"],
    deps = [":cudart"],
)

filegroup(name = "nvcc", srcs = ["bin/nvcc"])
"""

_BUILD_WITHOUT_CUDA = """
package(default_visibility = ["//visibility:public"])

cc_library(name = "headers")
cc_library(name = "cudart")
cc_library(name = "cublas")
cc_library(name = "nccl")
filegroup(name = "nvcc", srcs = [])
"""

def _cuda_configure_impl(ctx):
    home = ctx.os.environ.get("CUDA_HOME", "/usr/local/cuda")
    root = ctx.path(home)
    if root.exists and root.get_child("bin").get_child("nvcc").exists:
        ctx.symlink(root.get_child("include"), "include")
        ctx.symlink(root.get_child("bin"), "bin")
        ctx.file("BUILD", _BUILD_WITH_CUDA.format(lib = str(root.realpath) + "/lib64"))
        ctx.file("cuda_home.bzl", "CUDA_HOME = %r\n" % str(root.realpath))
    else:
        ctx.file("BUILD", _BUILD_WITHOUT_CUDA)
        ctx.file("cuda_home.bzl", "CUDA_HOME = None\n")

cuda_configure = repository_rule(
    implementation = _cuda_configure_impl,
    environ = ["CUDA_HOME"],
    local = True,
)
