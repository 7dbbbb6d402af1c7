# Installation layout and the Debian package (CPack DEB), for Debian 12 and its derivatives.
#
#   cmake -S . -B build/release -G Ninja -DCMAKE_BUILD_TYPE=Release
#   ninja -C build/release halb && (cd build/release && cpack -G DEB)    # or ./halb.sh package
#
# The package holds /usr/sbin/halb, the systemd unit, /etc/default/halb (a conffile), the
# sysctl.d file and the documentation; postinst creates the `halb` system user and /etc/halb.
# Depends is computed by dpkg-shlibdeps from the binary. docs/systemd.md explains the unit.

# Where the packaged files go. The unit and the /etc files are absolute paths, as Debian
# wants them, whatever CMAKE_INSTALL_PREFIX says (the binary and docs follow the prefix).
set(HALB_PACKAGE_PREFIX "/usr" CACHE PATH "Installation prefix inside the package")
set(HALB_SYSTEMD_UNIT_DIR "/lib/systemd/system" CACHE PATH "systemd system unit directory")
set(HALB_SYSCONF_DIR "/etc" CACHE PATH "Directory of /etc/halb and /etc/default/halb")
set(HALB_SERVICE_USER "halb" CACHE STRING "System user the service runs as")
set(HALB_PACKAGE_RELEASE "1" CACHE STRING "Debian revision of the package (the part after '-')")
set(HALB_PACKAGE_MAINTAINER "halb maintainers <halb@example.org>" CACHE STRING "Maintainer field")

# Values substituted into the unit and the maintainer scripts.
set(HALB_BIN "${HALB_PACKAGE_PREFIX}/sbin/halb")
set(HALB_CONFIG_DIR "${HALB_SYSCONF_DIR}/halb")
set(HALB_DEFAULT_FILE "${HALB_SYSCONF_DIR}/default/halb")
set(HALB_DOC_DIR "${HALB_PACKAGE_PREFIX}/share/doc/halb")
set(HALB_SYSCTL_DIR "${HALB_PACKAGE_PREFIX}/lib/sysctl.d")
set(HALB_SYSCTL_NAME "60-halb.conf")
set(HALB_USER "${HALB_SERVICE_USER}")

set(_pkg ${CMAKE_CURRENT_SOURCE_DIR}/packaging)
set(_gen ${CMAKE_CURRENT_BINARY_DIR}/packaging)
configure_file(${_pkg}/halb.service.in ${_gen}/halb.service @ONLY)
foreach(script postinst prerm postrm)
  # Maintainer scripts must be executable inside the control archive.
  configure_file(${_pkg}/debian/${script}.in ${_gen}/debian/${script} @ONLY
    FILE_PERMISSIONS OWNER_READ OWNER_WRITE OWNER_EXECUTE GROUP_READ GROUP_EXECUTE
                     WORLD_READ WORLD_EXECUTE)
endforeach()
# Every file the package puts under /etc is a conffile: dpkg keeps the administrator's
# version on upgrade (and asks, or follows --force-confold/confdef, when both changed).
file(WRITE ${_gen}/debian/conffiles "${HALB_DEFAULT_FILE}\n")

# The binary itself is installed by app/CMakeLists.txt (sbin, relative to the prefix).
install(FILES ${_gen}/halb.service DESTINATION ${HALB_SYSTEMD_UNIT_DIR})
install(FILES ${_pkg}/halb.default DESTINATION ${HALB_SYSCONF_DIR}/default RENAME halb)
install(FILES ${_pkg}/${HALB_SYSCTL_NAME} DESTINATION lib/sysctl.d)
install(FILES README.md docs/configuration.md docs/operations.md docs/architecture.md
              docs/systemd.md docs/ansible.md
        DESTINATION share/doc/halb)
install(FILES examples/pair.yaml DESTINATION share/doc/halb/examples)

set(CPACK_GENERATOR "DEB")
set(CPACK_PACKAGE_NAME "halb")
set(CPACK_PACKAGE_VENDOR "halb")
set(CPACK_PACKAGE_VERSION "${PROJECT_VERSION}")
set(CPACK_PACKAGE_CONTACT "${HALB_PACKAGE_MAINTAINER}")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "high-availability load-balancer pair (L4/L7 proxy, VRRPv3, state sync)")
string(CONCAT CPACK_PACKAGE_DESCRIPTION
  "Two nodes run the same L4 TCP and L7 HTTP/1.1 proxy engine; a VRRPv3 heartbeat gives\n"
  "the virtual IP to the master and a state-sync channel replicates sticky-session and\n"
  "connection tables, so the backup takes over without dropping users.")
set(CPACK_PACKAGING_INSTALL_PREFIX "${HALB_PACKAGE_PREFIX}")
set(CPACK_STRIP_FILES TRUE)
set(CPACK_DEBIAN_PACKAGE_RELEASE "${HALB_PACKAGE_RELEASE}")
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)  # halb_<version>-<release>_<arch>.deb
set(CPACK_DEBIAN_PACKAGE_SECTION "net")
set(CPACK_DEBIAN_PACKAGE_PRIORITY "optional")
set(CPACK_DEBIAN_PACKAGE_MAINTAINER "${HALB_PACKAGE_MAINTAINER}")
# Shared-library dependencies come from dpkg-shlibdeps; the scripts need adduser.
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_DEPENDS "adduser")
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
  "${_gen}/debian/conffiles;${_gen}/debian/postinst;${_gen}/debian/prerm;${_gen}/debian/postrm")
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION TRUE)
# Only the DEB generator is configured; the source-package generators are not used.
set(CPACK_SOURCE_GENERATOR "")
include(CPack)
