# Build-wide settings: language level, warnings, sanitizers, ccache, fuzzing.
set(CMAKE_CXX_STANDARD 20)
set(CMAKE_CXX_STANDARD_REQUIRED ON)
set(CMAKE_CXX_EXTENSIONS OFF)
set(CMAKE_EXPORT_COMPILE_COMMANDS ON)

if(NOT CMAKE_BUILD_TYPE AND NOT CMAKE_CONFIGURATION_TYPES)
  set(CMAKE_BUILD_TYPE Release CACHE STRING "Build type" FORCE)
endif()

option(HALB_BUILD_TESTS "Build the GoogleTest suites" ON)
option(HALB_BUILD_BENCH "Build the micro-benchmarks in bench/" ON)
option(HALB_SANITIZE "Build with AddressSanitizer and UndefinedBehaviorSanitizer" OFF)
option(HALB_FUZZ "Build libFuzzer targets (needs clang)" OFF)
option(HALB_WERROR "Treat warnings as errors" ON)

find_program(CCACHE_PROGRAM ccache)
if(CCACHE_PROGRAM)
  set(CMAKE_CXX_COMPILER_LAUNCHER ${CCACHE_PROGRAM})
endif()

add_compile_options(-Wall -Wextra)
if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU" AND CMAKE_CXX_COMPILER_VERSION VERSION_LESS 13)
  # GCC 12 reports impossible memcpy overlaps inside std::string operator+ at -O2/-O3
  # (GCC bug 105329); the warning is noise there, so it is off for that compiler only.
  add_compile_options(-Wno-restrict)
  # Likewise its -O3 data-flow for -Wmaybe-uninitialized misfires on static aggregates
  # holding std::vector and on coroutine frames (GCC bugs 105562, 107919). Uninitialised
  # reads stay covered by the sanitizer build and valgrind.
  add_compile_options($<$<NOT:$<CONFIG:Debug>>:-Wno-maybe-uninitialized>)
endif()
if(HALB_WERROR)
  add_compile_options(-Werror)
endif()
# Keep the build fast on small machines: no debug info in Release beyond line tables.
if(CMAKE_BUILD_TYPE STREQUAL "Release")
  add_compile_options(-g1)
endif()

if(HALB_SANITIZE)
  add_compile_options(-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined)
  add_link_options(-fsanitize=address,undefined)
endif()

if(HALB_FUZZ)
  if(NOT CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
    message(FATAL_ERROR "HALB_FUZZ needs clang (configure with CXX=clang++)")
  endif()
  add_compile_options(-fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer)
  add_link_options(-fsanitize=address,undefined)
endif()

# Used by every library: a target gets the repository root as its include path.
function(halb_library name)
  cmake_parse_arguments(ARG "" "" "SOURCES;PUBLIC_LIBS;PRIVATE_LIBS" ${ARGN})
  add_library(${name} STATIC ${ARG_SOURCES})
  target_include_directories(${name} PUBLIC ${HALB_ROOT})
  target_link_libraries(${name} PUBLIC ${ARG_PUBLIC_LIBS} PRIVATE ${ARG_PRIVATE_LIBS})
endfunction()
