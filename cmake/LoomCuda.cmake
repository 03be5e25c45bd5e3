# LOOM_CUDA=AUTO|ON|OFF decides whether the CUDA backend is built.
#
# The backend is the sources under kernels/cuda/ (and the cuda/ folders of other layers),
# compiled only here. This version of loom has none yet (docs/design.md "CUDA"), so AUTO
# always gives a CPU-only loom that links, whether or not nvcc is installed, and ON says that
# there is nothing to build. Once kernels/cuda/ holds sources, AUTO builds them when nvcc is
# found and ON requires nvcc. Every CPU-only build answers a CUDA request with the phrase of
# core/cuda_status.h.
set(LOOM_CUDA_ENABLED OFF)
file(GLOB_RECURSE _loom_cuda_sources CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/kernels/cuda/*.cu
     ${PROJECT_SOURCE_DIR}/kernels/cuda/*.cpp)
if(NOT LOOM_CUDA MATCHES "^(AUTO|ON|OFF)$")
  message(FATAL_ERROR "LOOM_CUDA=${LOOM_CUDA} is not one of AUTO, ON, OFF")
endif()
if(LOOM_CUDA STREQUAL "ON" AND NOT _loom_cuda_sources)
  message(FATAL_ERROR "LOOM_CUDA=ON, but this version of loom has no CUDA backend yet "
                      "(kernels/cuda/ holds no sources); configure with -DLOOM_CUDA=AUTO or OFF "
                      "for the CPU build")
endif()
if(_loom_cuda_sources AND NOT LOOM_CUDA STREQUAL "OFF")
  if(NOT CMAKE_CUDA_COMPILER AND EXISTS /usr/local/cuda/bin/nvcc)
    set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
  endif()
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    set(LOOM_CUDA_ENABLED ON)
  elseif(LOOM_CUDA STREQUAL "ON")
    message(FATAL_ERROR "LOOM_CUDA=ON but no CUDA compiler was found; install the CUDA toolkit "
                        "or configure with -DLOOM_CUDA=AUTO|OFF")
  endif()
endif()
if(LOOM_CUDA_ENABLED)
  if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
    set(CMAKE_CUDA_ARCHITECTURES 80 90)
  endif()
  enable_language(CUDA)
  find_package(CUDAToolkit REQUIRED)
endif()
message(STATUS "loom: CUDA backend ${LOOM_CUDA_ENABLED} (LOOM_CUDA=${LOOM_CUDA})")
