# `cmake --install` for projects that use loom without its sources: the headers under
# <prefix>/include/loom (the layout "loom.h" and "fabric/fabric.h" are included with), the
# static libraries, loomrun, and the CMake package `loom`:
#
#   find_package(loom CONFIG REQUIRED)
#   target_link_libraries(app PRIVATE loom::loom)
#
# Each library is exported as loom::<folder> (loom::tensor, loom::fabric, ...) and loom::loom is
# all of them. They are static, so the package's loomConfig.cmake finds the libraries they link
# publicly (OpenBLAS, Eigen, Gloo, nlohmann_json, Threads) again with find_dependency; oneDNN is
# referenced by the absolute path this build found it at. CI installs a build and builds
# examples/use_loom against it (tools/test.sh).
include(CMakePackageConfigHelpers)

set(LOOM_INSTALL_CMAKEDIR ${CMAKE_INSTALL_LIBDIR}/cmake/loom)
get_property(loom_libraries GLOBAL PROPERTY LOOM_LIBRARIES)
get_property(loom_folders GLOBAL PROPERTY LOOM_LIBRARY_FOLDERS)

# The umbrella target is loom::loom, each folder's library loom::<folder>.
set_target_properties(loom_all PROPERTIES EXPORT_NAME loom)
foreach(lib ${loom_libraries} loom_flags loom_warnings ${LOOM_ONEDNN_TARGET})
  string(REGEX REPLACE "^loom_" "" export_name ${lib})
  set_target_properties(${lib} PROPERTIES EXPORT_NAME ${export_name})
endforeach()

install(TARGETS ${loom_libraries} loom_all loom_flags loom_warnings ${LOOM_ONEDNN_TARGET}
        EXPORT loomTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(TARGETS loomrun EXPORT loomTargets RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})

install(FILES ${PROJECT_SOURCE_DIR}/loom.h DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/loom)
foreach(folder ${loom_folders})
  install(DIRECTORY ${PROJECT_SOURCE_DIR}/${folder} DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/loom
          FILES_MATCHING PATTERN "*.h")
endforeach()

install(EXPORT loomTargets NAMESPACE loom:: DESTINATION ${LOOM_INSTALL_CMAKEDIR})
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/loomConfig.cmake.in
                              ${PROJECT_BINARY_DIR}/loomConfig.cmake
                              INSTALL_DESTINATION ${LOOM_INSTALL_CMAKEDIR})
# 0.x: a minor version may change the API, so only the same minor version is compatible.
write_basic_package_version_file(${PROJECT_BINARY_DIR}/loomConfigVersion.cmake
                                 COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/loomConfig.cmake ${PROJECT_BINARY_DIR}/loomConfigVersion.cmake
        DESTINATION ${LOOM_INSTALL_CMAKEDIR})
