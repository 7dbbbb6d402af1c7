# Included by tests/fuzz/CMakeLists.txt (it globs *.cmake).
halb_fuzz(vrrp_packet SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/fuzz_vrrp_packet.cpp LIBS halb_vrrp_core)
