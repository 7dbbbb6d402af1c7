# Balancer fuzz targets (included by tests/fuzz/CMakeLists.txt).
halb_fuzz(router SOURCES fuzz_router.cpp LIBS halb_balancer halb_config)
halb_fuzz(sticky_cookie SOURCES fuzz_sticky_cookie.cpp LIBS halb_balancer)
