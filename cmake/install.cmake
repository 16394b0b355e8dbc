# `cmake --install`: the header, liblacuna.so and liblacuna.a, the lacuna
# tool, a pkg-config file and a CMake package (find_package(lacuna) gives
# lacuna::lacuna, the shared library).
include(CMakePackageConfigHelpers)

install(FILES ${PROJECT_SOURCE_DIR}/include/lacuna.h DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(TARGETS lacuna_shared EXPORT lacunaTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} NAMELINK_COMPONENT Development
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(TARGETS lacuna_static ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(TARGETS lacuna RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})

# The .pc file finds the prefix from its own place, so the tree can be moved
# (and `cmake --install --prefix` need not match the configured prefix).
file(RELATIVE_PATH LACUNA_PC_TO_PREFIX "/${CMAKE_INSTALL_LIBDIR}/pkgconfig" "/")
configure_file(${CMAKE_CURRENT_LIST_DIR}/lacuna.pc.in ${PROJECT_BINARY_DIR}/lacuna.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/lacuna.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)

set(LACUNA_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/lacuna)
install(EXPORT lacunaTargets NAMESPACE lacuna:: DESTINATION ${LACUNA_CMAKE_DIR})
configure_package_config_file(${CMAKE_CURRENT_LIST_DIR}/lacunaConfig.cmake.in ${PROJECT_BINARY_DIR}/lacunaConfig.cmake
  INSTALL_DESTINATION ${LACUNA_CMAKE_DIR})
# Before 1.0 a minor version may change the interface.
write_basic_package_version_file(${PROJECT_BINARY_DIR}/lacunaConfigVersion.cmake COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/lacunaConfig.cmake ${PROJECT_BINARY_DIR}/lacunaConfigVersion.cmake DESTINATION ${LACUNA_CMAKE_DIR})
