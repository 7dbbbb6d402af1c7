# Third-party dependencies, all from Debian packages (scripts/install-deps.sh).
find_package(PkgConfig REQUIRED)
find_package(Threads REQUIRED)
find_package(OpenSSL 3 REQUIRED)
find_package(Boost 1.81 REQUIRED)
pkg_check_modules(LIBUV REQUIRED IMPORTED_TARGET libuv)
pkg_check_modules(LIBNL REQUIRED IMPORTED_TARGET libnl-3.0 libnl-route-3.0)
pkg_check_modules(YAMLCPP REQUIRED IMPORTED_TARGET yaml-cpp)
# Route regexes: linear-time matching (std::regex is backtracking and recursive: a 50 KB path
# crashes it with a stack overflow, and it is 5-40x slower; see balancer/router.cpp).
pkg_check_modules(RE2 REQUIRED IMPORTED_TARGET re2)
pkg_check_modules(SYSTEMD IMPORTED_TARGET libsystemd)

# Boost.Asio is header-only; this interface target carries its settings so that only the
# data-plane sources that need it pay for its headers.
add_library(halb_asio INTERFACE)
target_include_directories(halb_asio SYSTEM INTERFACE ${Boost_INCLUDE_DIRS})
# The recycling allocator's per-thread cache (coroutine frames, handlers): Asio keeps 2 blocks
# per purpose by default, too few for a coroutine per connection with nested awaitables, so
# most frames went back to malloc. Must be the same in every translation unit using Asio.
target_compile_definitions(halb_asio INTERFACE
  BOOST_ASIO_RECYCLING_ALLOCATOR_CACHE_SIZE=16
  BOOST_ASIO_NO_DEPRECATED
  BOOST_ASIO_DISABLE_BOOST_COROUTINE
  BOOST_ASIO_NO_TS_EXECUTORS)
target_link_libraries(halb_asio INTERFACE Threads::Threads OpenSSL::SSL OpenSSL::Crypto)

if(HALB_BUILD_TESTS)
  find_package(GTest REQUIRED)
endif()
