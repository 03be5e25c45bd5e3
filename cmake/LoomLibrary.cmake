# loom_library(name folder DEPS ...): one static library from every .cpp under `folder`
# (except its cuda/ subfolder, built only with LOOM_CUDA). New files need no CMake edit.
# Headers are included as "folder/file.h" from the source root here, and from
# <prefix>/include/loom once installed (cmake/LoomInstall.cmake installs every library the
# global property LOOM_LIBRARIES lists, and the headers of LOOM_LIBRARY_FOLDERS).
function(loom_library name folder)
  cmake_parse_arguments(ARG "" "" "DEPS" ${ARGN})
  set_property(GLOBAL APPEND PROPERTY LOOM_LIBRARIES ${name})
  set_property(GLOBAL APPEND PROPERTY LOOM_LIBRARY_FOLDERS ${folder})
  set(include_dirs $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}>
                   $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}/loom>)
  file(GLOB_RECURSE sources CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/${folder}/*.cpp)
  list(FILTER sources EXCLUDE REGEX "/cuda/")
  if(LOOM_CUDA_ENABLED)
    file(GLOB_RECURSE cuda_sources CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/${folder}/cuda/*.cu
         ${PROJECT_SOURCE_DIR}/${folder}/cuda/*.cpp)
    list(APPEND sources ${cuda_sources})
  endif()
  if(NOT sources)  # a folder not written yet: a header-only placeholder keeps the graph intact
    add_library(${name} INTERFACE)
    target_include_directories(${name} INTERFACE ${include_dirs})
    target_link_libraries(${name} INTERFACE ${ARG_DEPS} loom_flags)
    return()
  endif()
  add_library(${name} STATIC ${sources})
  target_include_directories(${name} PUBLIC ${include_dirs})
  target_link_libraries(${name} PUBLIC ${ARG_DEPS} loom_flags PRIVATE loom_warnings)
  if(LOOM_CUDA_ENABLED)
    target_compile_definitions(${name} PUBLIC LOOM_WITH_CUDA=1)
  endif()
endfunction()

# loom_test_suite(folder lib...): one GoogleTest binary per tests/<folder>, linked against the
# libraries that folder tests (not the umbrella, so one layer's tests build without the layers
# below it), every test registered in CTest.
function(loom_test_suite folder)
  file(GLOB_RECURSE sources CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/${folder}/*.cpp)
  if(NOT sources)
    return()
  endif()
  set(target test_${folder})
  add_executable(${target} ${sources})
  target_link_libraries(${target} PRIVATE ${ARGN} GTest::gtest_main GTest::gmock loom_warnings)
  target_include_directories(${target} PRIVATE ${CMAKE_CURRENT_SOURCE_DIR})
  gtest_discover_tests(${target} DISCOVERY_TIMEOUT 60 PROPERTIES TIMEOUT 300
                       EXTRA_ARGS --gtest_brief=1)
endfunction()
