# Included into llama.cpp's CMake projects (CMAKE_PROJECT_INCLUDE, set in .cargo/config.toml).
#
# velollm builds llama.cpp with -march=native. On Intel CPUs with AMX (Sapphire Rapids and later) that compiles
# ggml's AMX matmul kernels, which die with SIGILL on the first prompt on the project's virtual machines, for
# every model tried, although AMX itself works there (a probe that configures tiles and computes with them in
# OpenMP threads runs fine). Until that is understood the AMX kernels are left out; AVX-512 and VNNI stay.
# NOTES.md has the details. Only x86-64 compilers that know the flags get them.
if(CMAKE_SYSTEM_PROCESSOR MATCHES "^(x86_64|AMD64|amd64)$")
    include(CheckCCompilerFlag)
    check_c_compiler_flag("-mno-amx-tile" VELOLLM_COMPILER_KNOWS_NO_AMX)
    if(VELOLLM_COMPILER_KNOWS_NO_AMX)
        add_compile_options(-mno-amx-tile -mno-amx-int8 -mno-amx-bf16)
    endif()
endif()
