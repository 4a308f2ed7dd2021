"""cuda_library: .cu files beside their C++ in the same package, compiled by nvcc.

nvcc emits sm_90a and sm_80 machine code plus compute_90 PTX. The objects join a normal
cc_library, which also defines DILATRON_CUDA for every dependent, so C++ code can call the
kernels behind `#ifdef DILATRON_CUDA`. Without --config=cuda the .cu files are not compiled.
"""

load("@local_cuda//:cuda_home.bzl", "CUDA_HOME")

_GENCODE = [
    "-gencode=arch=compute_90a,code=sm_90a",
    "-gencode=arch=compute_80,code=sm_80",
    "-gencode=arch=compute_90,code=compute_90",
]

def _cuda_objects_impl(ctx):
    if CUDA_HOME == None:
        fail("cuda_library needs a CUDA toolkit: set CUDA_HOME or install one at /usr/local/cuda, then rerun scripts/setup")
    cc_infos = [d[CcInfo] for d in ctx.attr.deps if CcInfo in d]
    comp = [c.compilation_context for c in cc_infos]
    headers = depset(ctx.files.hdrs, transitive = [c.headers for c in comp])
    flags = ["-std=c++20", "-O3", "--expt-relaxed-constexpr", "-Xcompiler", "-fPIC", "-Werror=all-warnings", "-lineinfo"] + _GENCODE
    for c in comp:
        for d in c.defines.to_list():
            flags.append("-D" + d)
        for inc in c.includes.to_list() + c.system_includes.to_list() + c.quote_includes.to_list():
            flags.append("-I" + inc)
    flags += ["-I.", "-I" + ctx.bin_dir.path, "-I" + ctx.genfiles_dir.path, "-DDILATRON_CUDA"]
    outs = []
    for src in ctx.files.srcs:
        out = ctx.actions.declare_file("_cuda_objs/%s/%s.o" % (ctx.label.name, src.basename))
        ctx.actions.run(
            executable = CUDA_HOME + "/bin/nvcc",
            arguments = flags + ["-c", src.path, "-o", out.path],
            inputs = depset([src], transitive = [headers]),
            outputs = [out],
            mnemonic = "Nvcc",
            progress_message = "nvcc %s" % src.short_path,
            use_default_shell_env = True,
        )
        outs.append(out)
    return [DefaultInfo(files = depset(outs))]

_cuda_objects = rule(
    implementation = _cuda_objects_impl,
    attrs = {
        "srcs": attr.label_list(allow_files = [".cu"]),
        "hdrs": attr.label_list(allow_files = [".h", ".cuh"]),
        "deps": attr.label_list(providers = [CcInfo]),
    },
)

def cuda_library(name, srcs, hdrs = [], cc_srcs = [], deps = [], **kwargs):
    """A cc_library made of cc_srcs (always) and srcs (.cu, only with --config=cuda)."""
    _cuda_objects(
        name = name + "_cuda_objects",
        srcs = srcs,
        hdrs = hdrs,
        deps = deps + ["@local_cuda//:headers"],
        tags = ["manual"],
    )
    objects = [":" + name + "_cuda_objects"] if srcs else []
    native.cc_library(
        name = name,
        srcs = cc_srcs + select({
            "//third_party/cuda:enabled": objects,
            "//conditions:default": [],
        }),
        hdrs = hdrs,
        deps = deps + select({
            "//third_party/cuda:enabled": ["//third_party:cuda_runtime"],
            "//conditions:default": [],
        }),
        defines = select({
            "//third_party/cuda:enabled": ["DILATRON_CUDA"],
            "//conditions:default": [],
        }),
        **kwargs
    )
